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
