#!/usr/bin/env bash
# Build the Jupyter Book into _build/html (called by `make book`).
#
#   scripts/build_book.sh            # incremental: jupyter-cache re-executes changed pages only
#   scripts/build_book.sh --clean    # remove _build (and the execution cache) first
#
# Warnings are errors (-W), references are checked (-n), and a failing cell fails the build
# (execute.raise_on_error in _config.yml). On failure, the execution reports are kept in
# _build/html/reports/ (upload them as CI artifacts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${VENV:-$ROOT/.venv}"
# The notebook kernel (kernelspec "python3") starts `python` from PATH: make it the venv's.
export PATH="$VENV/bin:$PATH"
# Persistent XLA compilation cache shared by builds, tests and benchmarks.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$ROOT/.jax_cache}"
# The device is never hard-coded: JAX picks the accelerator if there is one.
unset JAX_PLATFORMS || true
export PYDEVD_DISABLE_FILE_VALIDATION=1
# The kernels must use matplotlib's inline backend (figures become page images): never
# inherit a non-interactive MPLBACKEND such as Agg from the caller.
unset MPLBACKEND || true

# MathJax is served from the site (offline maths), copied from the npm lock's package.
"$ROOT/scripts/vendor_mathjax.sh"

if [[ "${1:-}" == "--clean" ]]; then
    rm -rf "$ROOT/_build"
fi

# jupyter-cache keys pages on their own code only: when the package the chapters import
# changes, every cached execution is stale, so drop the execution cache.
pkg_hash=$(cd "$ROOT" && find src/gmmcourse -name '*.py' -not -path '*/grading/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
stamp="$ROOT/_build/.package-hash"
if [[ -f "$stamp" && "$(cat "$stamp")" != "$pkg_hash" ]]; then
    echo "gmmcourse changed since the last build: re-executing every page"
    rm -rf "$ROOT/_build/.jupyter_cache" "$ROOT/_build/.doctrees"
fi

start=$(date +%s)
status=0
"$VENV/bin/jupyter-book" build "$ROOT" --builder html -W -n --keep-going || status=$?
echo "jupyter-book build finished in $(( $(date +%s) - start )) s (exit $status)"
[[ $status -eq 0 ]] && mkdir -p "$ROOT/_build" && echo "$pkg_hash" > "$stamp"
if [[ $status -ne 0 && -d "$ROOT/_build/html/reports" ]]; then
    echo "Execution reports (failing cells):"
    for f in "$ROOT"/_build/html/reports/*.err.log "$ROOT"/_build/html/reports/*.log; do
        [[ -f "$f" ]] && { echo "== $f"; tail -n 40 "$f"; }
    done
fi
exit $status
