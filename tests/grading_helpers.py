"""Shared helpers of the grading-engine tests: the toy course, its limits, and readers of the
gradebook a course ends with."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks" / "hostile"))

import toy  # noqa: E402

from gmmcourse.grading.engine import autograde  # noqa: E402
from gmmcourse.grading.sandbox import Limits  # noqa: E402

# The grading tests run real sandboxes: without bubblewrap they fail with one line, never
# skip (the `_bwrap` fixture of tests/conftest.py).
needs_bwrap = pytest.mark.usefixtures("_bwrap")

# Honest toy cells and exports take milliseconds (well under 1 s at three times the suite's
# load): the limits are 20x that and more; offenders (infinite loops, bombs) run forever.
# Limits count CPU seconds (gmmcourse.grading.clock); offenders that only wait (sleep, spam
# with pauses) are cut by the wall-clock bound, here 1.5 x the limit (4 x by default) to keep
# the suite short.
LIMITS = Limits(cell_timeout=20, notebook_timeout=120, export_timeout=30, memory_bytes=512 << 20, max_pids=32,
                scratch_bytes=64 << 20, tmp_bytes=32 << 20, wait_factor=1.5)
FAST = ["solution", "blank", "half", "os_exit", "forged_export", "eq_always_true", "invalid_json", "wrong_name", "read_secrets"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "benchmarks" / "hostile"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _grade(course: Path, **kw):
    kw.setdefault("serial", True)
    return autograde(
        ["toy"], course, registry=toy.ASSIGNMENTS, limits=LIMITS, progress=False, warm_cache=False,
        echo=lambda s: None, **kw,
    )


def dump(course: Path) -> dict:
    """The gradebook's grades (not timestamps), for comparisons."""
    con = sqlite3.connect(course / "gradebook.db")
    try:
        rows = con.execute(
            """select student.id, assignment.name, base_cell.name, grade.auto_score, grade.needs_manual_grade
               from grade join submitted_notebook on grade.notebook_id = submitted_notebook.id
               join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id
               join student on submitted_assignment.student_id = student.id
               join assignment on submitted_assignment.assignment_id = assignment.id
               join base_cell on grade.cell_id = base_cell.id order by 1, 2, 3"""
        ).fetchall()
        marks = con.execute("select student, assignment, sha256, status, reason, score from gmm_autograde order by 1, 2").fetchall()
        nsub = con.execute("select count(*) from submitted_assignment").fetchone()[0]
    finally:
        con.close()
    return {"grades": rows, "markers": marks, "submissions": nsub}


def scores(course: Path) -> dict[str, float]:
    return {m[0]: round(m[5], 6) for m in dump(course)["markers"]}


def _check_outputs(course: Path, names):
    for name in names:
        fb = (course / "feedback" / name / "toy" / "toy.html").read_text()
        assert "SECRET-HIDDEN-TEST" not in fb and "answer = [mean" not in fb and "inputs[" not in fb
        assert "Autograded score" in fb
    csv = (course / "grades.csv").read_text().splitlines()
    assert csv[0] == "assignment,duedate,timestamp,student_id,last_name,first_name,email,raw_score,late_submission_penalty,score,max_score"
    assert len(csv) == 1 + len(names)


def run_toy(nb, limits: Limits = LIMITS, **cfg) -> dict:
    """One toy submission through `run_submission` in this process (`cfg`: SandboxConfig fields)."""
    import json

    import nbformat

    from gmmcourse.grading.executor import run_submission

    return run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                          json.dumps(toy._inputs()), limits, cfg or None)


def toy_score(res) -> float:
    """The toy assignment's autograded points for a `run_toy` result."""
    from gmmcourse.grading.verdicts import check_part

    ref = toy._reference()
    return sum(check_part(p, res["answers"].get(p.grade_id), ref)[0] for p in toy.TOY.parts)
