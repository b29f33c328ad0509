"""The publishable course bundle (``make site``, `build_site`), assembled from the built book.

It writes one folder that can be published as it is (e.g. pushed to the ``gh-pages`` branch
of the course's public repository, see ``repository:`` in ``_config.yml``)::

    index.html, chapters/, _static/, ...        the HTML book (_build/html)
    notebooks/chapters/<chapter>.ipynb          every chapter as a plain notebook: glued values,
                                                included code, references and citations inlined,
                                                no MyST syntax, no glue calls, no outputs, links
                                                to other chapters and the exercises on the site's
                                                address (`site_url`), a set-up cell first
    notebooks/exercises/<id>/<id>.ipynb         the student releases of exercises/, set-up cell first
    student/gmmcourse-<version>-py3-none-any.whl  the student package: gmmcourse without
                                                gmmcourse.grading and the benchmark baseline
    student/requirements-student.txt            its pinned dependencies, taken from requirements.lock
    student/requirements-core.txt               the pins the course's numbers depend on (jax, jaxlib, genjax)
    student/latest.json                         the newest student package's version and wheel name
    binder/runtime.txt, binder/requirements.txt  the Binder environment (Python 3.12 + those pins)
    .nojekyll                                   GitHub Pages: serve _static/ and _sources/ as they are

Nothing else from the instructor side goes in (tests/test_site.py lists the bundle and scans
every file, the wheel's included, for solutions, hidden tests and grading code).

Every notebook starts with a "before you run" note and the set-up cell (`setup_cell`, from
``scripts/setup_cell.py``): it checks the Python version, and where ``gmmcourse`` is missing or
older than the site's it installs the wheel (from this copy of the site when the notebook sits
in one, else from the site's address, `site_url`), saying what and how; elsewhere it only says
that all is ready.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import yaml

from .config import ROOT, SITE, load_config, site_url
from .convert import ChapterConverter, ConversionError, residual_myst
from .setupcell import needed_modules, setup_cell, with_setup_cell
from .wheel import student_extras_for, student_requirements, student_version, write_student_folder


def chapter_pages(root: Path = ROOT) -> list[str]:
    """Docnames of the book's pages in table-of-contents order (``chapters/intro``, ...)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(items):
        for it in items or []:
            if "file" in it:
                pages.append(it["file"])
            walk(it.get("sections"))
            walk(it.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p.removesuffix(".md") for p in pages]


def executed_notebook(page: str, root: Path = ROOT, executed: Path | None = None) -> nbformat.NotebookNode:
    """The page as myst-nb executed it; a page without code cells (no kernel) from its source."""
    path = (executed or root / "_build" / "jupyter_execute") / f"{page}.ipynb"
    if path.exists():
        return nbformat.read(str(path), as_version=4)
    text = (root / f"{page}.md").read_text()
    if re.search(r"^```\{code-cell\}", text, re.M):
        raise FileNotFoundError(f"{path} is missing: build the book first (scripts/build_book.sh)")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(part.strip("\n")) for part in re.split(r"^\+\+\+.*$", text, flags=re.M)
                if part.strip()]
    return nb


def published_chapter(page: str, url: str, root: Path = ROOT, executed: Path | None = None,
                      conv: ChapterConverter | None = None) -> nbformat.NotebookNode:
    """Chapter `page` (``chapters/intro``) as the site publishes it at ``notebooks/<page>.ipynb``:
    the plain notebook, its set-up cell first (installing from `url`, or from the ``student/``
    folder of the copy of the site it sits in)."""
    executed = executed or root / "_build" / "jupyter_execute"
    conv = conv or ChapterConverter(root, url)
    nb = conv.notebook(executed_notebook(page, root, executed), root / f"{page}.md", executed / f"{page}.glue.json")
    bad = residual_myst(nb)
    if bad:
        raise ConversionError(f"{page}: MyST left in the plain notebook: {bad[:5]}")
    depth = len(Path(page).parts)  # notebooks/chapters/x.ipynb -> ../../student
    needed = needed_modules(nb)
    extras = student_extras_for(needed, root, where=f"{page}.md")
    return with_setup_cell(nb, setup_cell(url, "../" * depth + "student", student_version(root), needed, extras))


def build_site(out: Path = SITE, root: Path = ROOT, html: Path | None = None, executed: Path | None = None,
               url: str | None = None) -> Path:
    """Assemble the bundle into `out` (replaced). Returns `out`.

    Args:
        url: the course site's address for the set-up cell (default: `site_url` of _config.yml).
    """
    html = html or root / "_build" / "html"
    executed = executed or root / "_build" / "jupyter_execute"
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"{html} has no built book: run scripts/build_book.sh first")
    config = load_config(root)
    url = site_url(config) if url is None else url
    version = student_version(root)
    if out.exists():
        shutil.rmtree(out)
    # 1. the HTML book, without build leftovers
    shutil.copytree(html, out, ignore=shutil.ignore_patterns(".buildinfo", "reports", ".doctrees", "*.pickle"))
    (out / ".nojekyll").write_text("")
    # 2. the student package and its pins
    write_student_folder(out / "student", root)
    (out / "binder").mkdir()
    (out / "binder" / "runtime.txt").write_text("python-3.12\n")
    (out / "binder" / "requirements.txt").write_text(student_requirements(root))
    # 3. the chapters as plain notebooks
    conv = ChapterConverter(root, url)
    for page in chapter_pages(root):
        nb = published_chapter(page, url, root, executed, conv)
        target = out / "notebooks" / f"{page}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        # the book's own "download .ipynb" (written when launch buttons are on) is this notebook too
        sources_copy = out / "_sources" / f"{page}.ipynb"
        if sources_copy.exists():
            nbformat.write(nb, str(sources_copy))
    # 4. the student releases, set-up cell first; the book's download copies too
    for rel in sorted((root / "exercises").glob("*/*.ipynb")):
        aid = rel.parent.name
        if rel.stem != aid:
            continue
        release = nbformat.read(str(rel), as_version=4)
        needed = needed_modules(release)
        extras = student_extras_for(needed, root, where=str(rel.relative_to(root)))
        nb = with_setup_cell(release, setup_cell(url, "../../../student", version, needed, extras))
        target = out / "notebooks" / "exercises" / aid / rel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        for dl in (out / "_downloads").rglob(rel.name):
            nbformat.write(with_setup_cell(release, setup_cell(url, "../../student", version, needed, extras)), str(dl))
    return out
