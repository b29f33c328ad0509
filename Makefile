# gmm-course: every command is defined here once.
#   make book    build the book (creating .venv on first use) and print where to open it
#   make test    run every test, the book build with warnings as errors included
#   make bench   run the benchmarks, writing benchmarks/results/*.json
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
SYS_STAMP   := $(VENV)/.system-deps
NPM_STAMP   := node_modules/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
PYTEST_ARGS ?=

.PHONY: help venv system-deps book book-clean site open test test-fast lint bench release autograde lock clean server server-stop

help:
	@echo "make book      build the book into _build/html (first run creates .venv)"
	@echo "make site      build the book and the publishable course bundle _build/site (notebooks, student wheel)"
	@echo "make test      lint, then every test (book build with -W, browser, grading, statistics)"
	@echo "make lint      ruff: unused or undefined names, syntax errors (part of make test)"
	@echo "make bench     run the benchmarks -> benchmarks/results/*.json"
	@echo "make release   regenerate exercises/ from solutions/ with nbgrader"
	@echo "make autograde grade grading/submitted/ (sandboxed) -> gradebook, grades.csv, feedback"
	@echo "make lock      re-resolve requirements.lock from pyproject.toml"
	@echo "make server    start the course server (JupyterHub + nbgrader exchange) on this machine; make server-stop"

# The virtual environment, from a Python >= 3.12, with the locked dependencies.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || "$$(scripts/find_python.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "uv==0.13.9"
	$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@# byte-compiled once here: Python never writes .pyc where PYTHONDONTWRITEBYTECODE is set
	@# (as on our machines), and then every process (kernels, grading sandboxes) recompiled
	@# its imports from source, about 3 s each
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@
venv: $(STAMP)

# Debian packages the tests need: bubblewrap (grading sandbox), chromium (browser tests).
$(SYS_STAMP): | $(STAMP)
	@if ! command -v bwrap >/dev/null || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap chromium >/dev/null; fi; fi
	@touch $@
system-deps: $(SYS_STAMP)

# Node packages (package.json / package-lock.json): the course server's configurable-http-proxy,
# and MathJax, which the book serves itself (scripts/vendor_mathjax.sh).
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

book: $(STAMP) $(NPM_STAMP)
	scripts/build_book.sh
	@echo "Book built: open file://$(CURDIR)/_build/html/index.html"
	@command -v xdg-open >/dev/null && [ -n "$${DISPLAY:-}" ] && xdg-open _build/html/index.html || true

book-clean: $(STAMP) $(NPM_STAMP)
	scripts/build_book.sh --clean

# The publishable bundle: the book + plain chapter notebooks + releases + student wheel (see scripts/build_site.py).
site: $(STAMP) $(NPM_STAMP)
	scripts/build_book.sh
	$(PY) scripts/build_site.py

test: lint $(STAMP) $(SYS_STAMP) $(NPM_STAMP)
	scripts/run_tests.sh $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-fast: $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(STAMP) $(SYS_STAMP) $(NPM_STAMP)
	$(PY) benchmarks/run.py

release: $(STAMP)
	$(PY) scripts/generate_release.py

autograde: $(STAMP) $(SYS_STAMP)
	$(PY) -m gmmcourse.grading autograde

# The course server (docs/course-server.md): JupyterHub on this machine; server/course runs the rest.
server: $(STAMP) $(SYS_STAMP) $(NPM_STAMP)
	server/course start

server-stop:
	server/course stop

lock: $(STAMP)
	$(VENV)/bin/uv pip compile -q pyproject.toml --extra book --extra grading --extra dev --extra server --extra compare --python-version 3.12 -o requirements.lock

clean:
	rm -rf _build test-artifacts .pytest_cache
