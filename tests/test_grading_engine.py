"""Tests of the autograding engine (gmmcourse.grading) on a toy assignment.

The toy assignment and the hostile corpus live in tests/hostile/toy.py (plain Python, no
JAX). Needs bubblewrap (``apt-get install -y bubblewrap``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "hostile"))

import toy  # noqa: E402

from gmmcourse.grading.engine import GradingError, autograde  # noqa: E402
from gmmcourse.grading.sandbox import Limits  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

LIMITS = Limits(cell_timeout=3, notebook_timeout=60, export_timeout=10, memory_bytes=512 << 20, max_pids=32)
FAST = ["solution", "blank", "half", "os_exit", "forged_export", "eq_always_true", "invalid_json", "wrong_name", "read_secrets"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE / "hostile"), env.get("PYTHONPATH", "")])
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


# --------------------------------------------------------------------------- bad inputs (fast)


def test_unknown_assignment_cli(tmp_path):
    course = toy.write_course(tmp_path, ["solution"])
    r = subprocess.run(
        [sys.executable, "-m", "gmmcourse.grading", "autograde", "nope", "--course", str(course), "--registry", "toy:ASSIGNMENTS"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert r.returncode == 2
    assert "unknown assignment 'nope'" in r.stderr and "toy" in r.stderr and "Traceback" not in r.stderr


def test_missing_dirs(tmp_path):
    (tmp_path / "grading").mkdir()
    with pytest.raises(GradingError, match="no submissions directory"):
        _grade(tmp_path / "grading")
    course = toy.write_course(tmp_path, ["solution"])
    with pytest.raises(GradingError, match="student 'ghost'"):
        _grade(course, students=["ghost"])
    with pytest.raises(GradingError, match="does not exist"):
        _grade(tmp_path / "nowhere")


def test_symlinked_submission_is_rejected(tmp_path):
    course = toy.write_course(tmp_path, ["invalid_json"])
    victim = course / "submitted" / "victim" / "toy"
    victim.mkdir(parents=True)
    nbformat.write(toy.notebook(), victim / "toy.ipynb")
    thief = course / "submitted" / "thief" / "toy"
    thief.mkdir(parents=True)
    (thief / "toy.ipynb").symlink_to(victim / "toy.ipynb")
    _grade(course, students=["thief", "invalid_json"])
    d = dump(course)
    reasons = {m[0]: (m[3], m[4]) for m in d["markers"]}
    assert reasons["thief"][0] == "invalid" and "symbolic link" in reasons["thief"][1]
    assert scores(course) == {"thief": 0.0, "invalid_json": 0.0}
    assert "symbolic link" in (course / "feedback" / "thief" / "toy" / "toy.html").read_text()


# --------------------------------------------------------------------------- grading


def test_small_batch_scores_feedback_and_rerun(tmp_path):
    course = toy.write_course(tmp_path, FAST)
    s = _grade(course)
    want = toy.expected(FAST)
    got = scores(course)
    assert got == pytest.approx(want), (got, want)
    d = dump(course)
    assert d["submissions"] == len(FAST)
    assert {m[0]: m[3] for m in d["markers"]}["invalid_json"] == "invalid"
    reasons = {m[0]: m[4] for m in d["markers"]}
    assert "not valid JSON" in reasons["invalid_json"] and "expected 'toy.ipynb'" in reasons["wrong_name"]
    assert not (course / "PWNED").exists()
    _check_outputs(course, FAST)
    # autograded notebook: metadata from the SOURCE, student outputs kept
    ag = nbformat.read(course / "autograded" / "solution" / "toy" / "toy.ipynb", 4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in ag.cells]
    assert {"answer_mean", "test_mean", "answer_counts", "test_counts", "explain"} <= set(ids)
    assert all(c.metadata["nbgrader"].get("points", 0) < 10 for c in ag.cells if "nbgrader" in c.metadata)
    assert len(s.graded) == len(FAST)
    # idempotent re-run: nothing regraded, same gradebook
    s2 = _grade(course)
    assert s2.graded == [] and len(s2.skipped) == len(FAST)
    assert dump(course) == d
    # a changed submission is regraded (no duplicate rows)
    nbformat.write(toy.notebook(toy.MEAN_BLANK), course / "submitted" / "solution" / "toy" / "toy.ipynb")
    s3 = _grade(course)
    assert [g[0] for g in s3.graded] == ["solution"]
    assert scores(course)["solution"] == 3.0 and dump(course)["submissions"] == len(FAST)


@pytest.mark.slow
def test_hostile_corpus_parallel_equals_serial(tmp_path):
    names = list(toy.expected())
    par = toy.write_course(tmp_path / "par", names)
    ser = toy.write_course(tmp_path / "ser", names)
    _grade(par, serial=False, workers=2)
    got = scores(par)
    assert got == pytest.approx(toy.expected()), {k: (got.get(k), v) for k, v in toy.expected().items() if got.get(k) != v}
    _check_outputs(par, names)
    for c in (par, ser):
        assert not (c / "PWNED").exists()
    ag = (par / "autograded" / "huge_output" / "toy" / "toy.ipynb").stat().st_size
    assert ag < 3 << 20
    _grade(ser, serial=True)
    a, b = dump(par), dump(ser)
    strip = lambda d: {**d, "markers": [m[:2] + m[3:] for m in d["markers"]]}  # noqa: E731 (paths differ)
    assert strip(a) == strip(b)


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    names = ["solution", "blank", "half", "os_exit", "sys_exit", "nan_answer", "prefilled_answer", "deleted_tests"]
    course = toy.write_course(tmp_path, names)
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--serial", "--no-progress", "--no-warm", "--cell-timeout", "3"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = course / "gradebook.db"
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            con = sqlite3.connect(db)
            n = con.execute("select count(*) from gmm_autograde").fetchone()[0]
            con.close()
        except sqlite3.Error:
            continue
        if n >= 2:
            break
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert 2 <= n < len(names)
    mid = dump(course)
    assert mid["submissions"] == len(mid["markers"])  # every row complete (one transaction each)
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(mid['markers'])} unchanged" in r.stderr
    d = dump(course)
    assert d["submissions"] == len(names) and len(d["grades"]) == 3 * len(names)
    assert scores(course) == pytest.approx(toy.expected(names))


TEACHER = {
    "categorize_solution": (
        "def categorize(x, weights, means, sds):\n"
        "    lj = np.log(np.asarray(weights, float)) + norm.logpdf(np.asarray(x, float)[:, None], means, sds)\n"
        "    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))\n"
    ),
    "q1_solution": "p_tonkatsu_425 = float(categorize(np.array([425.0]), WEIGHTS, MEANS, SDS)[0, 0])\n",
    "q2_solution": (
        "_lj = np.log([0.7, 0.3]) + norm.logpdf(425.0, [500.0, 350.0], [2.0, 4.0])\n"
        "log_odds_425_unequal = float(_lj[0] - _lj[1])\n"
    ),
    "q3_solution": (
        "log_pred_425 = float(logsumexp(np.log(WEIGHTS) + norm.logpdf(425.0, MEANS, SDS)))\n"
        "log_pred_500 = float(logsumexp(np.log(WEIGHTS) + norm.logpdf(500.0, MEANS, SDS)))\n"
    ),
}


@pytest.mark.slow
def test_real_assignment_categorization(tmp_path):
    """Integration with the real ASSIGNMENTS: the released categorization notebook, blank
    (0 points) and with correct answers filled in (full marks), graded against the real checks."""
    try:
        from gmmcourse.grading.assignments import ASSIGNMENTS
    except Exception:
        pytest.skip("gmmcourse.grading.assignments has not landed")
    repo = HERE.parent
    a = ASSIGNMENTS["categorization"]
    release = repo / "exercises" / "categorization" / a.notebook
    if not release.is_file():
        pytest.skip("no released categorization notebook")
    solutions = repo / "solutions"
    source_root = solutions if (solutions / "categorization" / a.notebook).is_file() else repo / "exercises"
    course = tmp_path / "grading"
    blank = nbformat.read(release, 4)
    filled = nbformat.read(release, 4)
    for c in filled.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if gid in TEACHER:
            c.source = TEACHER[gid]
    for who, nb in (("blank", blank), ("teacher", filled)):
        d = course / "submitted" / who / "categorization"
        d.mkdir(parents=True)
        nbformat.write(nb, d / a.notebook)
    autograde(["categorization"], course, source_root=source_root, serial=True, progress=False,
              echo=lambda s: None, warm_cache=False, limits=Limits(cell_timeout=120, notebook_timeout=600))
    got = scores(course)
    assert got["blank"] == 0.0
    assert got["teacher"] == pytest.approx(sum(p.points for p in a.parts)), got
    fb = (course / "feedback" / "teacher" / "categorization" / "categorization.html").read_text()
    assert "_gx_" not in fb and "inputs[" not in fb
