"""`gmmcourse.book.glue_all` (one glue call per chapter cell) and the site's copy without it.

* `glue_all` hands each value to myst-nb's `glue` under its name, in order, with `display`.
* The site's plain notebooks (scripts/coursesite) drop the book's glue in both forms: a
  ``glue_all({...})`` literal, and a dict filled in a loop then handed to ``glue_all(name)``;
  on every chapter of the book, what is left calls no glue and imports neither myst_nb nor
  gmmcourse.book (a student's copy runs without the book's tools).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import myst_nb
import nbformat
import pytest
from myst_nb.core.read import read_myst_markdown_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from coursesite import convert  # noqa: E402

from gmmcourse.book import glue_all  # noqa: E402


def test_glue_all_glues_each_value_in_order(monkeypatch):
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))
    glue_all({"a_n": 3, "a_mean": 1.5, "a_md": "**x**"})
    glue_all({"b": 2}, display=True)
    assert calls == [("a_n", 3, False), ("a_mean", 1.5, False), ("a_md", "**x**", False), ("b", 2, True)]


def test_the_site_strips_both_forms_of_glue_all():
    literal = ("from gmmcourse.book import glue_all\nimport numpy as np\nm = np.mean([1, 2])\n"
               "glue_all({\n    'a': m,\n    # a comment inside\n    'b': float(\n        m\n    ),\n})")
    assert convert.strip_glue(literal) == "import numpy as np\nm = np.mean([1, 2])"
    filled = ("glued = {}\nfor p in (1, 2):\n    glued[f'a_{p}'] = p\nr = 2\nfor p in (1, 2):\n    q = p\n"
              "    glued[f'b_{p}'] = q\nglued['c'] = (\n    r\n)\nglue_all(glued)")
    assert convert.strip_glue(filled) == "for p in (1, 2):\n    pass\nr = 2\nfor p in (1, 2):\n    q = p"
    # a dict that is not handed to glue_all stays, and a leftover call is flagged
    assert convert.strip_glue("d = {}\nd['a'] = 1\nprint(d)") == "d = {}\nd['a'] = 1\nprint(d)"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("f = glue_all")]
    assert convert.residual_myst(nb) == ["cell 0: calls the book's glue"]


CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_glue_survives_in_a_chapters_plain_notebook(chapter):
    nb = read_myst_markdown_notebook(chapter.read_text())
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        src = convert.strip_glue(cell.source, f"{chapter.name}, code cell {i}")
        tree = convert._parse_code(src)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        left = (names & {"glue", "glue_all"}) | {m for m in modules if m and m.split(".")[0] == "myst_nb"}
        left |= modules & {"gmmcourse.book"}
        assert not left, (f"{chapter.name}, code cell {i}: the site's copy still uses {sorted(left)} after "
                          "coursesite.convert.strip_glue: glue only with plain glue_all(...) statements")
