"""Tests of the built Jupyter Book (run after `make book` has produced `_build/html`).

* Leak tests: no solution code, hidden test or grading internals anywhere in the site
  (HTML pages, sources, downloads such as `_downloads/**/*.ipynb`), with a self-test that the
  scanner does flag planted leaks.
* Browser tests (`@pytest.mark.browser`): every page in a real Chromium through Playwright: no
  console errors, MathJax typesets the math, every image loads, every same-site link resolves,
  every exercise download is a notebook; a screenshot of each page goes to
  `test-artifacts/screenshots/<page>.png`.
"""

from __future__ import annotations

import functools
import http.server
import json
import keyword
import re
import socketserver
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSIGNMENTS = ("categorization", "coffee_blends", "uncertainty")

# Strings that must never reach the site: nbgrader's solution and hidden-test markers and the
# trusted grading code that hidden tests call.
MARKERS = (
    "### BEGIN SOLUTION",
    "### END SOLUTION",
    "### BEGIN HIDDEN TESTS",
    "### END HIDDEN TESTS",
    "BEGIN HIDDEN",
    "gmmcourse.grading",
    "run_check(",
)
TEXT_SUFFIXES = {".html", ".htm", ".ipynb", ".md", ".txt", ".py", ".js", ".json", ".css", ".xml", ".svg", ".tex"}
# third-party assets that cannot contain course material (and are large)
SKIP_DIRS = {"mathjax"}

pytestmark = pytest.mark.book  # make test runs these after the book build

needs_build = pytest.mark.skipif(
    not (HTML / "index.html").exists(),
    reason=f"{HTML} is missing: build the book first (`make book`)",
)


# --------------------------------------------------------------------------------------------
# Leak scanner
# --------------------------------------------------------------------------------------------


def _solution_blocks(nb: dict) -> list[str]:
    """Text between BEGIN/END SOLUTION and BEGIN/END HIDDEN TESTS markers in every cell."""
    blocks = []
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", []))
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            for m in re.finditer(re.escape(begin) + r"(.*?)" + re.escape(end), src, flags=re.S):
                blocks.append(m.group(1))
    return blocks


def _release_text(assignment: str) -> str:
    path = EXERCISES / assignment / f"{assignment}.ipynb"
    if not path.exists():
        return ""
    nb = json.loads(path.read_text())
    return "\n".join("".join(c.get("source", [])) for c in nb.get("cells", []))


def _book_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "chapters").glob("*.md")))


def _package_sources() -> str:
    """The public package code (the book shows it on purpose, e.g. the GenJAX models)."""
    pkg = ROOT / "src" / "gmmcourse"
    return "\n".join(p.read_text() for p in sorted(pkg.glob("*.py")))


def _norm_lines(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines()}


def _public_lines(text: str) -> set[str]:
    """`_norm_lines` plus each line's code without its trailing comment (``code  # note`` makes
    ``code`` public too: a given line with a comment is no leak of the same line in a solution)."""
    lines = _norm_lines(text)
    return lines | {re.sub(r"\s+#[^'\"]*$", "", line) for line in lines}


_IDENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\b")


def solution_fingerprints(solutions_dir: Path = SOLUTIONS) -> tuple[set[str], set[str]]:
    """Distinctive lines and identifiers of the solution/hidden-test code.

    A solution line or name counts unless a released notebook, the book's own sources or the
    public package source also contain it (those are public by design).

    Returns:
        (lines, identifiers): whitespace-normalised code lines (at least 25 characters) and
        defined or assigned names (with an underscore, at least 6 characters) from solution
        blocks.
    """
    lines: set[str] = set()
    idents: set[str] = set()
    public = (_book_sources() if (ROOT / "chapters").exists() else "") + "\n" + (
        _package_sources() if (ROOT / "src").exists() else "")
    # every released notebook is public by design; lines shared between a solution and another
    # assignment's release are checked separately (test_no_solution_given_away_in_another_release)
    releases = "\n".join(_release_text(d.name) for d in sorted(solutions_dir.glob("*")) if d.is_dir())
    allowed_lines = _public_lines(public) | _public_lines(releases)
    allowed_text = public + "\n" + releases
    for nb_path in sorted(solutions_dir.glob("*/*.ipynb")):
        for block in _solution_blocks(json.loads(nb_path.read_text())):
            for raw in block.splitlines():
                line = " ".join(raw.split())
                if len(line) >= 25 and not line.startswith("#") and line not in allowed_lines:
                    lines.add(line)
                m = re.match(r"\s*(?:def|class)\s+([A-Za-z_]\w*)|\s*([A-Za-z_]\w*)\s*=[^=]", raw)
                name = m and (m.group(1) or m.group(2))
                if (name and len(name) >= 6 and "_" in name.strip("_") + ("_" if name.startswith("_") else "")
                        and not keyword.iskeyword(name)
                        and not re.search(rf"\b{re.escape(name)}\b", allowed_text)):
                    idents.add(name)
    return lines, idents


def scan_for_leaks(site: Path, lines: set[str] = frozenset(), idents: set[str] = frozenset(),
                   markers: tuple[str, ...] = MARKERS) -> list[str]:
    """Every (file, leaked string) found under `site`; an empty list means no leak."""
    found = []
    ident_re = re.compile(r"\b(" + "|".join(map(re.escape, sorted(idents))) + r")\b") if idents else None
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        if SKIP_DIRS & set(path.relative_to(site).parts):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".ipynb":  # scan notebooks by their cell sources too (JSON-escaped otherwise)
            try:
                nb = json.loads(text)
                text += "\n" + "\n".join("".join(c.get("source", [])) for c in nb.get("cells", []))
            except json.JSONDecodeError:
                pass
        import html as _html

        plain = _html.unescape(re.sub(r"<[^>]+>", "", text)) if path.suffix in (".html", ".htm") else text
        normalised = " ".join(plain.split())
        rel = str(path.relative_to(site))
        for marker in markers:
            if marker in text or marker in plain:
                found.append(f"{rel}: marker {marker!r}")
        for line in lines:
            if line in normalised:
                found.append(f"{rel}: solution line {line!r}")
        if ident_re is not None:
            for m in set(ident_re.findall(plain)):
                found.append(f"{rel}: solution-only identifier {m!r}")
    return found


def test_scanner_flags_planted_leaks(tmp_path):
    """The scanner must be able to fail: plant each kind of leak and check it is reported."""
    site = tmp_path / "html"
    (site / "_downloads" / "abc").mkdir(parents=True)
    (site / "clean.html").write_text("<p>nothing to see</p>")
    assert scan_for_leaks(site) == []
    (site / "page.html").write_text("<pre>### BEGIN SOLUTION\nx = 1\n### END SOLUTION</pre>")
    nb = {"cells": [{"cell_type": "code", "source": ["### BEGIN HIDDEN TESTS\n", "assert True\n"]}],
          "nbformat": 4, "nbformat_minor": 5, "metadata": {}}
    (site / "_downloads" / "abc" / "ex.ipynb").write_text(json.dumps(nb))
    (site / "other.html").write_text("<span>secret_helper_fn</span>(1) <span>= compute_the_whole_answer(x, y, z)</span>")
    found = scan_for_leaks(site, lines={"= compute_the_whole_answer(x, y, z)"}, idents={"secret_helper_fn"})
    assert any("page.html" in f and "BEGIN SOLUTION" in f for f in found)
    assert any("ex.ipynb" in f and "BEGIN HIDDEN TESTS" in f for f in found)
    assert any("other.html" in f and "secret_helper_fn" in f for f in found)
    assert any("other.html" in f and "compute_the_whole_answer" in f for f in found)
    assert not any("clean.html" in f for f in found)


def test_fingerprints_from_a_planted_solution(tmp_path):
    """Fingerprints come from solution blocks only, never from the released notebook's code."""
    sol = tmp_path / "demo" / "demo.ipynb"
    sol.parent.mkdir()
    cell = ("def answer(x):\n    ### BEGIN SOLUTION\n    hidden_intermediate = x * 2 + 40000\n"
            "    return hidden_intermediate\n    ### END SOLUTION\n")
    sol.write_text(json.dumps({"cells": [{"cell_type": "code", "source": [cell]}]}))
    lines, idents = solution_fingerprints(tmp_path)
    assert "hidden_intermediate" in idents
    assert "hidden_intermediate = x * 2 + 40000" in lines


@needs_build
def test_no_solution_or_hidden_test_in_site():
    """No file of the built site (pages, sources, downloads) leaks solutions or hidden tests."""
    lines, idents = solution_fingerprints() if SOLUTIONS.exists() else (set(), set())
    found = scan_for_leaks(HTML, lines, idents)
    assert not found, "leaks in the built book:\n" + "\n".join(found[:50])


def test_no_solution_given_away_in_another_release():
    """No assignment's release hands out another graded assignment's solution.

    A block of 3 or more distinct solution lines of assignment A (at least 25 characters each)
    inside the student notebook of assignment B means B's students receive A's answers.
    """
    if not SOLUTIONS.exists():
        pytest.skip("solutions/ is missing")
    problems = []
    for sol in sorted(SOLUTIONS.glob("*/*.ipynb")):
        a = sol.parent.name
        sol_lines = {" ".join(line.split()) for block in _solution_blocks(json.loads(sol.read_text()))
                     for line in block.splitlines()}
        sol_lines = {line for line in sol_lines if len(line) >= 25 and not line.startswith("#")}
        for b in ASSIGNMENTS:
            if b == a:
                continue
            shared = sorted(sol_lines & _norm_lines(_release_text(b)))
            if len(shared) >= 3:
                problems.append(f"{len(shared)} solution lines of {a!r} are in the release of {b!r}, e.g. {shared[:3]}")
    assert not problems, "\n".join(problems)


@needs_build
def test_exercise_notebooks_are_offered_for_download():
    """Each assignment's student notebook is in the site's downloads and is a valid notebook."""
    for assignment in ASSIGNMENTS:
        hits = list((HTML / "_downloads").rglob(f"{assignment}.ipynb"))
        assert hits, f"{assignment}.ipynb is not among the site's downloads"
        for hit in hits:
            nb = json.loads(hit.read_text())
            assert nb.get("nbformat") == 4


# --------------------------------------------------------------------------------------------
# Real browser
# --------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def site_url():
    if not (HTML / "index.html").exists():
        pytest.skip(f"{HTML} is missing: build the book first (`make book`)")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    socketserver.TCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _pages() -> list[str]:
    if not HTML.exists():
        return []
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts and "reports" not in p.parts)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _has_math(page: Path) -> bool:
    text = page.read_text()
    return 'class="math' in text or "\\(" in text or "\\[" in text


@pytest.mark.browser
@needs_build
@pytest.mark.parametrize("page", _pages() or ["index.html"])
def test_page_in_browser(page, site_url, browser):
    """The page renders cleanly: no console errors, math typeset, images loaded, links resolve."""
    errors: list[str] = []
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    failed_requests: list[str] = []
    pg.on("requestfailed", lambda req: failed_requests.append(req.url) if req.url.startswith(site_url) else None)
    pg.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    url = f"{site_url}/{page}"
    response = pg.goto(url, wait_until="load")
    assert response is not None and response.status == 200, f"{url}: HTTP {response and response.status}"
    pg.wait_for_load_state("networkidle")

    # MathJax typesets every page that has math
    if _has_math(HTML / page):
        pg.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        pg.evaluate("() => MathJax.startup.promise")
        n_math = pg.eval_on_selector_all("mjx-container", "els => els.length")
        assert n_math > 0, f"{page}: page has math but MathJax rendered none"
        n_errors = pg.eval_on_selector_all("mjx-merror", "els => els.length")
        assert n_errors == 0, f"{page}: {n_errors} MathJax errors"

    # every image loaded
    broken = pg.eval_on_selector_all(
        "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"{page}: images not loaded: {broken}"

    # every same-site link resolves
    hrefs = pg.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
    internal = sorted({h.split("#")[0] for h in hrefs if h.startswith(site_url)})
    bad = [h for h in internal if _status(h) != 200]
    assert not bad, f"{page}: broken internal links: {bad}"

    # every exercise download is a notebook
    for h in internal:
        if h.endswith(".ipynb") and "/_downloads/" in h:
            with urllib.request.urlopen(h, timeout=10) as resp:
                nb = json.loads(resp.read().decode())
            assert nb.get("nbformat") == 4 and "cells" in nb, f"{h} is not a notebook"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = page.removesuffix(".html").replace("/", "__")
    pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    ctx.close()
    assert not failed_requests, f"{page}: failed requests: {failed_requests}"
    assert not errors, f"{page}: " + "\n".join(errors)


@pytest.mark.browser
@needs_build
def test_exercise_pages_link_every_notebook(site_url):
    """The practice page offers a download of each assignment's student notebook."""
    html = (HTML / "chapters" / "practice.html").read_text()
    for assignment in ASSIGNMENTS:
        links = re.findall(rf'href="([^"]*_downloads/[^"]*/{assignment}\.ipynb)"', html)
        assert links, f"no download link for {assignment}.ipynb on the practice page"
        target = urllib.parse.urljoin(f"{site_url}/chapters/practice.html", links[0])
        with urllib.request.urlopen(target, timeout=10) as resp:
            nb = json.loads(resp.read().decode())
        assert nb.get("nbformat") == 4


@needs_build
@pytest.mark.parametrize("chapter", sorted(p.stem for p in (ROOT / "chapters").glob("*.md")))
def test_every_figure_is_on_the_page(chapter):
    """Each `plt.show()` in a chapter's code cells puts a rendered figure (an <img> in the
    cell's output) on the built page: a non-interactive matplotlib backend leaking into
    the kernels would silently drop every figure."""
    source = (ROOT / "chapters" / f"{chapter}.md").read_text()
    expected = source.count("plt.show()")
    page = HTML / "chapters" / f"{chapter}.html"
    if not page.exists():
        pytest.skip(f"{chapter} is not in the table of contents")
    outputs = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>\s*</div>', page.read_text(), flags=re.S)
    images = sum(len(re.findall(r"<img ", out)) for out in outputs)
    assert images >= expected, f"{chapter}: {expected} figures in the source, {images} on the page"
