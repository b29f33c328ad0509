"""The set-up cell every student notebook starts with, and the "before you run" note above it.

The cell's code is a real Python file, ``scripts/setup_cell.py`` (the tests run it as it is),
read here as text; its first lines hold the settings (`_SETTINGS`) that `setup_cell` fills in
per notebook. `needed_modules` lists what a notebook imports, which the cell checks.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat

from gmmcourse.course import SETUP_TAG

# The set-up cell is a real Python file (scripts/setup_cell.py, which the tests run as it is);
# its first lines hold these settings, filled in per notebook.
SETUP_SOURCE = Path(__file__).resolve().parents[1] / "setup_cell.py"
_SETTINGS = ("COURSE_SITE", "COURSE_VERSION", "NEEDED", "EXTRAS", "BUNDLE")

BEFORE_YOU_RUN = """\
**Before you run this notebook.** It needs Python 3.12 or newer (Colab has it). Run the
first code cell once: it checks your Python, installs the course package `gmmcourse` if it is
missing or out of date (from the course site, saying what it installs and which JAX, CPU or
GPU, it chose) and otherwise does nothing. Its comments say how to change its choices."""


def needed_modules(nb: nbformat.NotebookNode) -> list[str]:
    """Top-level modules the notebook's code imports, other than the standard library's and IPython."""
    import ast

    names = set()
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        code = "\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in ("__future__", "IPython"))


def setup_cell(url: str, bundle_relpath: str, version: str, needed: list[str] = ("gmmcourse",),
               extras: list[str] = ()) -> nbformat.NotebookNode:
    """The first code cell of every student notebook: `scripts/setup_cell.py` with its settings.

    Args:
        url: the course site's address (`site_url`; '' when unpublished).
        bundle_relpath: the site's ``student/`` folder relative to the notebook's folder in the bundle.
        version: the student package version the notebook was built with (`student_version`).
        needed: the modules the notebook imports (`needed_modules`): where they all import and
            the course package is current, the cell only says so.
        extras: the wheel's extras it installs (`student_extras_for(needed)`), e.g. ``["compare"]``.
    """
    values = {"COURSE_SITE": url, "COURSE_VERSION": version, "NEEDED": list(needed), "EXTRAS": list(extras),
              "BUNDLE": bundle_relpath}
    text = SETUP_SOURCE.read_text()
    for name in _SETTINGS:
        text, n = re.subn(rf"^{name} = [^#\n]*?(\s*#)", lambda m, name=name: f"{name} = {values[name]!r}{m.group(1)}",
                          text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{SETUP_SOURCE.name} has no '{name} = ...  # ...' line")
    cell = nbformat.v4.new_code_cell(text.rstrip("\n"))
    cell.metadata["tags"] = [SETUP_TAG]
    return cell


def with_setup_cell(nb: nbformat.NotebookNode, cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` with the "before you run" note and the set-up cell first (both tagged `SETUP_TAG`:
    the grader's sandbox runs neither)."""
    nb = copy.deepcopy(nb)
    note = nbformat.v4.new_markdown_cell(BEFORE_YOU_RUN)
    note.metadata["tags"] = [SETUP_TAG]
    nb.cells[:0] = [note, copy.deepcopy(cell)]
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):  # unique, stable cell ids
        for i, c in enumerate(nb.cells):
            c["id"] = c.get("id") or f"cell-{i}"
        nb.cells[0]["id"] = f"{SETUP_TAG}-note"
        nb.cells[1]["id"] = SETUP_TAG
    else:  # nbformat 4.4 (nbgrader's releases) has no cell ids
        for c in nb.cells:
            c.pop("id", None)
    return nb
