"""The instructor workflow end to end, on the real assignments, through the CLI.

A class of four: one submits the instructor's solutions, one the blank release, one the
`categorization` solutions followed by a hostile cell (it replaces ``isinstance`` for every
later cell), one the blank `categorization` release followed by a cell that sets every answer
to objects equal to anything. One `python -m gmmcourse.grading autograde` command must fill
nbgrader's gradebook, write grades.csv with every student and the exact scores (the hostile
cells neither remove honest points nor add any), write feedback that never shows a hidden
test, and be idempotent on a second run.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gmmcourse.grading.assignments import ASSIGNMENTS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")]

HOSTILE_CELL = """
class _Always:
    def __eq__(self, other): return True
    def __array__(self, *a, **k): raise TypeError("not an array")
import builtins
builtins.isinstance = lambda *a: True
"""
ALWAYS_EQUAL_ANSWERS = """
import numpy as np
class _Always(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return False
    def __gt__(self, other): return False
    def __abs__(self): return _Always(0.0)
    def __sub__(self, other): return _Always(0.0)
    __rsub__ = __sub__
    def __array__(self, *a, **k): raise TypeError("not an array")
def categorize(x, weights, means, sds):
    return _Always(0.0)
p_tonkatsu_425 = log_odds_425_unequal = log_pred_425 = log_pred_500 = _Always(0.0)
"""


def _hidden_lines() -> set[str]:
    """Every non-trivial line of every hidden-test block in the instructor sources."""
    lines = set()
    for a in ASSIGNMENTS:
        nb = nbformat.read(ROOT / "solutions" / a / f"{a}.ipynb", as_version=4)
        for cell in nb.cells:
            src, inside = cell.source.splitlines(), False
            for line in src:
                if "### BEGIN HIDDEN TESTS" in line:
                    inside = True
                elif "### END HIDDEN TESTS" in line:
                    inside = False
                elif inside and len(line.strip()) > 12:
                    lines.add(line.strip())
    return lines


def _autograde(course: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gmmcourse.grading", "autograde", "--course", str(course),
         "--source", str(ROOT / "solutions"), "--no-progress", "--workers", "2"],
        capture_output=True, text=True, timeout=1500,
    )


def test_class_autograde_gradebook_csv_feedback_idempotent(tmp_path):
    course = tmp_path / "course"
    for a in ASSIGNMENTS:
        for student, src in (("ada", ROOT / "solutions"), ("bo", ROOT / "exercises")):
            d = course / "submitted" / student / a
            d.mkdir(parents=True)
            shutil.copy(src / a / f"{a}.ipynb", d / f"{a}.ipynb")
    # cy: the solutions plus a hostile cell at the end that tries to make every check pass
    nb = nbformat.read(ROOT / "solutions" / "categorization" / "categorization.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(HOSTILE_CELL))
    d = course / "submitted" / "cy" / "categorization"
    d.mkdir(parents=True)
    nbformat.write(nb, d / "categorization.ipynb")
    # dy: the blank release plus a cell whose answers claim to equal anything
    nb = nbformat.read(ROOT / "exercises" / "categorization" / "categorization.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(ALWAYS_EQUAL_ANSWERS))
    d = course / "submitted" / "dy" / "categorization"
    d.mkdir(parents=True)
    nbformat.write(nb, d / "categorization.ipynb")

    first = _autograde(course)
    assert first.returncode == 0, first.stdout + first.stderr

    auto_max = {a: sum(p.points for p in spec.parts) for a, spec in ASSIGNMENTS.items()}
    with open(course / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    got = {(r["student_id"], r["assignment"]): float(r["raw_score"]) for r in rows}
    for a in ASSIGNMENTS:
        assert got[("ada", a)] == pytest.approx(auto_max[a]), f"solution of {a} lost points"
        assert got[("bo", a)] == 0.0, f"blank release of {a} earned points"
    # the hostile cell runs after the honest answers: it removes no honest point
    assert got[("cy", "categorization")] == pytest.approx(auto_max["categorization"])
    # answers equal to anything earn nothing
    assert got[("dy", "categorization")] == 0.0
    assert set(got) == {(s, a) for s in ("ada", "bo", "cy", "dy") for a in ASSIGNMENTS}
    for s in ("cy", "dy"):  # nothing submitted: nbgrader's 0
        assert all(got[(s, a)] == 0.0 for a in ASSIGNMENTS if a != "categorization")

    hidden = _hidden_lines()
    assert hidden, "the sources have hidden tests"
    for html in (course / "feedback").rglob("*.html"):
        text = html.read_text()
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{html} shows hidden tests: {leaked[:3]}"
        assert "BEGIN HIDDEN TESTS" not in text

    second = _autograde(course)
    assert second.returncode == 0, second.stderr
    assert f"skipped {2 * len(ASSIGNMENTS) + 2} unchanged" in second.stdout + second.stderr  # ada, bo: each; cy, dy: one
    with open(course / "grades.csv") as f:
        assert sorted(map(json.dumps, csv.DictReader(f))) == sorted(map(json.dumps, rows))
