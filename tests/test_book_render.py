"""Every formula on the built pages is rendered: no `$` and no raw LaTeX command (`\\frac`,
`\\mid`, `\\widehat`, any backslash followed by letters) is left in a page's text outside the
maths that MathJax typesets; and no cell output shows students JAX's array repr
(`Array([400., 400.], dtype=float32, weak_type=True)`).

MyST turns `$...$` and `$$...$$` into maths containers (`span.math` / `div.math`, their
content delimited by `\\(...\\)` / `\\[...\\]`); anything it failed to parse stays as literal
text: a `$$` block inside a list item read as `$` + inline maths + `$`, a glued Markdown string
shown as its source, a BibTeX title printed verbatim. The checker parses each page with an HTML
parser, drops scripts, styles, code, preformatted blocks and the maths containers, and looks
at what is left. Run after `make book` (marker `book`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"

pytestmark = pytest.mark.book

# text MathJax typesets: inline \( ... \) and display \[ ... \] (Sphinx writes these delimiters)
MATHJAX_DELIMITED = re.compile(r"\\\((.*?)\\\)|\\\[(.*?)\\\]", re.S)
# what must not be left in the text: a dollar sign, or a backslash followed by letters
LEFTOVER = re.compile(r"\$|\\[A-Za-z]+")
DROPPED_TAGS = ("script", "style", "code", "pre", "head", "noscript", "template", "math")


def leftover_tex(html: str) -> list[str]:
    """The unrendered maths in a page: each `$` or `\\command` in its text outside rendered
    maths, with 40 characters of context either side."""
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(DROPPED_TAGS):
        tag.decompose()
    for tag in soup.select(".math, mjx-container"):
        tag.decompose()
    text = MATHJAX_DELIMITED.sub(" ", soup.get_text(" "))
    return [" ".join(text[max(m.start() - 40, 0):m.end() + 40].split()) for m in LEFTOVER.finditer(text)]


def _pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML} is missing: build the book first (`make book`)")
    return sorted(p for p in HTML.rglob("*.html")
                  if not {"_static", "_sources", "_downloads", "_images"} & set(p.relative_to(HTML).parts))


# ------------------------------------------------------------------ the checker, on planted HTML

RENDERED = [
    '<p>Inline <span class="math notranslate nohighlight">\\(\\frac{a}{b} \\mid c\\)</span> maths.</p>',
    '<div class="math notranslate nohighlight">\\[\\sum_k \\pi_k\\]</div>',
    "<p>Code <code class=\"docutils literal\"><span class=\"pre\">$HOME\\n</span></code></p>",
    '<pre>print("$10")  # \\alpha</pre>',
    "<script>var s = '$\\\\frac';</script><style>a::after{content:'$'}</style>",
    "<p>Delimited text \\(x \\mid y\\) and \\[\\widehat{R}\\] typeset by MathJax.</p>",
]
# copied from the pages as they were built before the fix (issue 26)
BROKEN = [
    # a $$ block inside a list item: `$` + inline maths + `$`
    '<li><p>counts,\n$<span class="math notranslate nohighlight">\\(\\pi \\mid z\\)</span>$\ndrawn</p></li>',
    # a glued Markdown string shown as its source
    "<p>lower by a factor of about $10^{305}$. The chance</p>",
    # a BibTeX title
    "<p>Rank-normalization, folding, and localization: an improved $\\widehat R$ for assessing</p>",
    # raw LaTeX without any dollar sign
    "<p>the weights \\frac{n_k}{N} and z \\mid x</p>",
]


@pytest.mark.parametrize("html", RENDERED)
def test_checker_accepts_rendered_maths_and_code(html):
    assert leftover_tex(html) == []


@pytest.mark.parametrize("html", BROKEN)
def test_checker_flags_unrendered_maths(html):
    assert leftover_tex(html)


# ------------------------------------------------------------------ the built book


def test_every_formula_on_the_built_pages_is_rendered():
    problems = {str(p.relative_to(HTML)): found for p in _pages() if (found := leftover_tex(p.read_text()))}
    assert not problems, "unrendered maths ($ or a LaTeX command in the page text):\n" + "\n".join(
        f"  {page}: {snippet!r}" for page, found in problems.items() for snippet in found)


# JAX's repr of an array, e.g. Array([400., 400.], dtype=float32, weak_type=True)
JAX_REPR = re.compile(r"Array\(\[?[^()]*dtype=")


def test_checker_flags_jax_array_reprs():
    assert JAX_REPR.search("GMMPrior(mean_loc=Array([400., 400.], dtype=float32, weak_type=True), mean_scale=50.0)")
    assert not JAX_REPR.search("{'mean_loc': [400.0, 400.0], 'mean_scale': 50.0}")


def test_no_jax_array_repr_on_the_pages():
    shown = {str(p.relative_to(HTML)): m.group(0) for p in _pages()
             if (m := JAX_REPR.search(BeautifulSoup(p.read_text(), "html.parser").get_text(" ")))}
    assert not shown, f"JAX array reprs shown to students (print plain numbers instead): {shown}"


# ------------------------------------------------------------------ the book's own tools stay hidden
# Code on a page must run when a reader copies it outside the book: the glue import and calls
# live in cells tagged `remove-cell`, and the plain notebooks of `make site` carry none either
# (scripts/build_site.py strips them).

GLUE_CODE = re.compile(r"\bmyst_nb\b|\bglue(?:_all)?\(|\bgmmcourse\.book\b")  # myst_nb.glue, gmmcourse.book.glue_all


def book_tools_shown(html: str) -> list[str]:
    """Each code block of a page that shows the book's glue, and any `myst_nb` in its text."""
    soup = BeautifulSoup(html, "html.parser")
    found = [line.strip()[:80] for pre in soup.select("pre") for line in pre.get_text().splitlines()
             if GLUE_CODE.search(line)]
    for tag in soup(("script", "style", "head", "pre")):
        tag.decompose()
    if re.search(r"\bmyst_nb\b", soup.get_text(" ")):
        found.append("the page's text names myst_nb")
    return found


def test_checker_flags_glue_on_a_page():
    shown = ('<div class="cell_input"><pre><span class="kn">from</span> <span class="nn">myst_nb</span> '
             '<span class="kn">import</span> glue\nglue(<span class="s2">"n"</span>, n)</pre></div>')
    assert book_tools_shown(shown)
    assert book_tools_shown('<pre>x = 1\nglue("n", x, display=False)</pre>')
    assert book_tools_shown('<pre>glue_all({"n": x})</pre>')
    assert book_tools_shown("<p>the myst_nb module</p>")
    assert book_tools_shown('<pre>n = len(data)</pre><p>We glued <span>12</span> values.</p>') == []


def test_no_page_shows_the_books_glue():
    problems = {str(p.relative_to(HTML)): found for p in _pages() if (found := book_tools_shown(p.read_text()))}
    assert not problems, ("pages showing the book's glue (put `from myst_nb import glue` and the glue calls in a "
                          "cell tagged remove-cell):\n" + "\n".join(f"  {page}: {f}" for page, fs in problems.items()
                                                                  for f in fs))


def test_no_plain_notebook_calls_the_books_glue():
    """The chapters as `make site` publishes them (converted from the executed notebooks)."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import build_site as bs

    executed = ROOT / "_build" / "jupyter_execute"
    conv = bs.ChapterConverter(ROOT, "https://course.example.org")
    problems = []
    for page in bs.chapter_pages(ROOT):
        try:
            nb = conv.notebook(bs.executed_notebook(page, ROOT, executed), ROOT / f"{page}.md",
                               executed / f"{page}.glue.json")
        except FileNotFoundError as e:
            problems.append(f"{page}: {e}")
            continue
        problems += [f"{page}: {c.source[:80]!r}" for c in nb.cells
                     if c.cell_type == "code" and GLUE_CODE.search(c.source)]
    assert not problems, "plain notebooks calling the book's glue:\n" + "\n".join(problems)


def test_no_page_offers_the_md_source_for_download():
    """The download menu offers the notebook on every chapter page, never the .md (see
    tests/test_download_menu.py for the tiny book that checks the mechanism)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_download_menu import download_menu

    offered = {}
    for p in _pages():
        menu = download_menu(p.read_text())
        if [t for t, h in menu if t == ".md" or (h or "").endswith(".md")]:
            offered[str(p.relative_to(HTML))] = menu
    assert not offered, f"pages whose download menu offers the .md source: {offered}"
    assert not list((HTML / "_sources").rglob("*.md")), "the .md sources are published (html_copy_source)"
    intro = download_menu((HTML / "chapters" / "intro.html").read_text())
    assert ".ipynb" in [t for t, _ in intro], intro
