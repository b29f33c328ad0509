"""The download menu of a chapter page offers the notebook (.ipynb), never the MyST source (.md).

A tiny book (one notebook page, one plain page) is built with the course's own `_config.yml`
and `chapters/_ext` in a temporary folder, and its HTML is read: the menu has the `.ipynb`
entry, whose file exists, and no `.md` entry; no `.md` source is published at all. (The whole
book's pages: tests/test_book_render.py.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]

PAGE = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

```{code-cell} ipython3
print(1 + 1)
```
"""


def download_menu(html: str) -> list[str]:
    """The links of a page's download menu, as the reader sees them: `[(text, href)]`."""
    soup = BeautifulSoup(html, "html.parser")
    menu = soup.select_one(".dropdown-download-buttons")
    if menu is None:
        return []
    return [(a.get_text(" ", strip=True), a.get("href")) for a in menu.select("a")]


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    book = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = {"execute_notebooks": "force", "timeout": 120}
    config.pop("bibtex_bibfiles", None)  # no citations here
    config["sphinx"]["config"].pop("bibtex_reference_style", None)
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapters/intro\nchapters:\n  - file: chapters/plain\n")
    shutil.copytree(ROOT / "chapters" / "_ext", book / "chapters" / "_ext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (book / "chapters" / "_static").mkdir()
    shutil.copy2(ROOT / "chapters" / "_static" / "favicon.svg", book / "chapters" / "_static")
    shutil.copytree(ROOT / "chapters" / "_extra", book / "chapters" / "_extra")
    (book / "chapters" / "intro.md").write_text(PAGE)
    (book / "chapters" / "plain.md").write_text("# A page without code\n\nText.\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    if not jb.exists():
        pytest.fail(f"{jb} is missing: run `make venv`")
    res = subprocess.run([str(jb), "build", str(book), "--quiet"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return book / "_build" / "html"


def test_the_menu_offers_the_notebook_not_the_source(tiny_book):
    menu = download_menu((tiny_book / "chapters" / "intro.html").read_text())
    texts = [t for t, _ in menu]
    assert ".ipynb" in texts, menu
    assert not [t for t, h in menu if t == ".md" or (h or "").endswith(".md")], menu
    href = dict(menu)[".ipynb"]
    assert (tiny_book / "chapters" / href).resolve() == (tiny_book / "_sources" / "chapters" / "intro.ipynb").resolve()
    assert (tiny_book / "_sources" / "chapters" / "intro.ipynb").is_file()


def test_no_markdown_source_is_published(tiny_book):
    for page in ("intro", "plain"):
        menu = download_menu((tiny_book / "chapters" / f"{page}.html").read_text())
        assert not [t for t, h in menu if (h or "").endswith(".md")], (page, menu)
    assert not list(tiny_book.rglob("*.md")), list(tiny_book.rglob("*.md"))


def test_the_reader_sees_the_md_entry_of_an_unfixed_menu():
    """The checker itself: the theme's menu as it was (an .md entry) is seen."""
    html = ('<div class="dropdown dropdown-download-buttons"><ul class="dropdown-menu">'
            '<li><a href="../_sources/chapters/intro.md" class="btn">.md</a></li>'
            '<li><button onclick="window.print()">.pdf</button></li></ul></div>')
    assert download_menu(html) == [(".md", "../_sources/chapters/intro.md")]
