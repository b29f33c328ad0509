"""Tests of the autograding engine (gmmcourse.grading) on a toy assignment.

The toy assignment and the hostile corpus live in tests/hostile/toy.py (plain Python, no
JAX). Needs bubblewrap (``apt-get install -y bubblewrap``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
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

LIMITS = Limits(cell_timeout=3, notebook_timeout=60, export_timeout=10, memory_bytes=512 << 20, max_pids=32,
                scratch_bytes=64 << 20, tmp_bytes=32 << 20)
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
    from gmmcourse.grading.assignments import ASSIGNMENTS

    repo = HERE.parent
    a = ASSIGNMENTS["categorization"]
    release = repo / "exercises" / "categorization" / a.notebook
    source_root = repo / "solutions"
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


# --------------------------------------------------------------------------- sandbox escapes
# Each case below got through before the sandbox was hardened (see docs/grading.md, threat model).

ESCAPES = ["solution", "proc_environ", "keyring", "disk_fill", "forge_hook", "forge_thread", "shadow_exec",
           "shadowed_builtins_honest", "active_content", "big_outputs", "half"]


def _keyctl():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
    return libc, nr


def _root_key(desc: str, add: bytes | None = None) -> int:
    """Search (or add) a key in this process's user keyring; -1 if absent."""
    import ctypes

    libc, nr = _keyctl()
    if add is not None:
        return libc.syscall(nr[0], b"user", desc.encode(), add, len(add), ctypes.c_long(-4))
    return libc.syscall(nr[1], 10, ctypes.c_long(-4), b"user", desc.encode(), 0)


def _unlink_key(desc: str) -> None:
    import ctypes

    libc, nr = _keyctl()
    while (key := _root_key(desc)) >= 0:
        if libc.syscall(nr[1], 9, ctypes.c_long(key), ctypes.c_long(-4)) < 0:  # KEYCTL_UNLINK
            break


def test_sandbox_escapes_are_closed(tmp_path, monkeypatch):
    """Environment, keyrings, disk, forged exports, shadowed names, active content and output
    floods: each hostile notebook earns exactly what its honest parts deserve, nothing leaks
    into feedback or autograded notebooks, and honest students in the same batch keep full marks."""
    monkeypatch.setenv(toy.SECRET_ENV, toy.SECRET_VALUE)
    if _root_key(toy.SECRET_KEY_DESC, add=b"root-only") < 0:
        pytest.skip("this kernel has no keyrings")
    _unlink_key("left-by-a-student")  # a key planted by an earlier, unprotected grader run
    course = toy.write_course(tmp_path, ESCAPES)
    limits = Limits(cell_timeout=3, notebook_timeout=60, export_timeout=10, memory_bytes=768 << 20, max_pids=32,
                    scratch_bytes=64 << 20, tmp_bytes=32 << 20)
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=limits, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    got = scores(course)
    want = toy.expected(ESCAPES)
    assert got == pytest.approx(want), {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    # nothing of the grader's environment in anything written for students or instructors
    for f in list((course / "feedback").rglob("*")) + list((course / "autograded").rglob("*")):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert toy.SECRET_VALUE not in text, f
    # no key planted for the next student, root's key untouched
    assert _root_key("left-by-a-student") < 0
    assert _root_key(toy.SECRET_KEY_DESC) >= 0
    # active content is inert in the autograded notebook
    ag = nbformat.read(course / "autograded" / "active_content" / "toy" / "toy.ipynb", 4)
    rendered = json.dumps([c.outputs for c in ag.cells if c.cell_type == "code"])  # code sources are shown as text
    rendered += json.dumps([c.source for c in ag.cells if c.cell_type != "code"])
    assert "<b>hi</b>" in rendered or "hi" in rendered
    for bad in ("<script", "<img", "application/javascript", "javascript:", "image/svg+xml"):
        assert bad not in rendered, bad  # (escaped text such as &lt;img ...&gt; is inert)
    # output floods of every kind stay within the budget
    big = course / "autograded" / "big_outputs" / "toy" / "toy.ipynb"
    assert big.stat().st_size < 3 << 20
    assert "widgets" not in nbformat.read(big, 4).metadata


def test_exactly_one_export_output_is_accepted():
    from types import SimpleNamespace

    from gmmcourse.grading.executor import _read_export

    n = "ab" * 16
    ok = _read_export(SimpleNamespace(export_count=1, export_payloads=[n + ":OK:[1]"]), n, LIMITS)
    assert ok == {"ok": True, "json": "[1]"}
    two = _read_export(SimpleNamespace(export_count=2, export_payloads=[n + ":OK:[1]", n + ":OK:[2]"]), n, LIMITS)
    assert not two["ok"] and "more than one answer" in two["error"]
    stale = _read_export(SimpleNamespace(export_count=1, export_payloads=["cd" * 16 + ":OK:[1]"]), n, LIMITS)
    assert not stale["ok"]
    err = _read_export(SimpleNamespace(export_count=1, export_payloads=[n + ":ERR:KeyError: \x1b[31m" + "A=b " * 200]), n, LIMITS)
    assert not err["ok"] and len(err["error"]) <= 160 and "\x1b" not in err["error"]


def _run(nb, limits, **cfg):
    from gmmcourse.grading.executor import run_submission

    return run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                          json.dumps(toy._inputs()), limits, cfg or None)


def _score(res) -> float:
    from gmmcourse.grading.engine import check_part

    ref = toy._reference()
    return sum(check_part(p, res["answers"].get(p.grade_id), ref)[0] for p in toy.TOY.parts)


def test_cpu_quota_caps_setsid_burners():
    """Three setsid() burners get at most the submission's CPU quota (0.25 core here)."""
    res = _run(toy.notebook(toy.CPU_BURNER), Limits(cell_timeout=20, notebook_timeout=60, cpus=0.25))
    assert _score(res) == 5.0, res["answers"]


def test_assignment_can_hide_the_course_package():
    nb = toy.notebook(toy.HIDDEN_PACKAGE)
    assert _score(_run(nb, LIMITS)) == 3.0  # visible: mean is off by one
    assert _score(_run(nb, LIMITS, hide=["gmmcourse"])) == 5.0


def test_notebook_limit_after_answers_keeps_the_kernel():
    """The notebook time limit strikes after every answer exists: the kernel is interrupted,
    not restarted empty, and every part is graded."""
    nb = toy.notebook(extra_after=[toy.SLOW_TAIL] * 6)
    res = _run(nb, Limits(cell_timeout=3, notebook_timeout=8, export_timeout=10))
    assert any("notebook time limit" in e for e in res["events"]), res["events"]
    assert _score(res) == 5.0, res["answers"]


def test_one_wall_clock_budget_per_submission():
    """Exports that hang cannot hold a worker beyond notebook + grace time."""
    hang = "def mean(xs):\n    while True:\n        pass\n"
    nb = toy.notebook(hang, "def counts(words):\n    import time\n    time.sleep(1000)\n")
    limits = Limits(cell_timeout=3, notebook_timeout=20, export_timeout=20, grace_timeout=5)
    res = _run(nb, limits)
    assert _score(res) == 0.0
    assert res["duration"] < 20 + 5 + 15, res["duration"]  # before: >= 2 exports x 20 s + restarts


def test_kernel_start_failure_is_retried_not_scored(tmp_path, monkeypatch):
    import gmmcourse.grading.executor as ex

    course = toy.write_course(tmp_path, ["solution", "blank"])
    real = ex.kernel_command
    monkeypatch.setattr(ex, "kernel_command", lambda *a, **k: ["/bin/false"])
    s = _grade(course)
    assert sorted(g[3] for g in s.graded) == ["error", "error"]
    d = dump(course)
    assert d["markers"] == [] and d["submissions"] == 0  # no zero was recorded
    assert not (course / "feedback").exists() or not list((course / "feedback").rglob("*.html"))
    assert "solution" not in (course / "grades.csv").read_text()
    monkeypatch.setattr(ex, "kernel_command", real)
    _grade(course)
    assert scores(course) == {"solution": 5.0, "blank": 0.0}


def test_bad_files_and_names_are_invalid_rows(tmp_path):
    """A sparse 30 GiB notebook, a symlinked timestamp.txt, a folder named like the notebook,
    a non-UTF-8 student folder, two spellings of one name and a CSV-forging id each become
    that submission's invalid row; the batch goes on."""
    course = toy.write_course(tmp_path, ["solution"])
    sub = course / "submitted"
    (sub / "sparse" / "toy").mkdir(parents=True)
    with open(sub / "sparse" / "toy" / "toy.ipynb", "wb") as f:
        f.truncate(30 << 30)
    (sub / "tsthief" / "toy").mkdir(parents=True)
    nbformat.write(toy.notebook(), sub / "tsthief" / "toy" / "toy.ipynb")
    (course / "gradebook-secret.txt").write_text("SECRET-GRADEBOOK-BYTES")
    (sub / "tsthief" / "toy" / "timestamp.txt").symlink_to(course / "gradebook-secret.txt")
    (sub / "folder" / "toy" / "toy.ipynb").mkdir(parents=True)
    bad = os.fsdecode(b"caf\xe9")
    (sub / bad / "toy").mkdir(parents=True)
    nbformat.write(toy.notebook(), sub / bad / "toy" / "toy.ipynb")
    for name in ("Zo\u00eb", "Zoe\u0308"):  # NFC and NFD spellings of one name
        (sub / name / "toy").mkdir(parents=True)
        nbformat.write(toy.notebook(), sub / name / "toy" / "toy.ipynb")
    (sub / "x,9999,=cmd" / "toy").mkdir(parents=True)
    nbformat.write(toy.notebook(), sub / "x,9999,=cmd" / "toy" / "toy.ipynb")
    _grade(course)
    marks = {m[0]: (m[3], m[4]) for m in dump(course)["markers"]}
    assert marks["solution"][0] == "ok" and marks["tsthief"][0] == "ok"
    assert marks["sparse"][0] == "invalid" and "too large" in marks["sparse"][1]
    assert marks["folder"][0] == "invalid" and "not a regular file" in marks["folder"][1]
    invalid = [v for k, v in marks.items() if k.startswith("invalid-id-")]
    assert len(invalid) == 2, marks
    assert len(invalid) == 2 and any("UTF-8" in v[1] for v in invalid) and any("letters" in v[1] for v in invalid)
    assert marks["Zo\u00eb"][0] == "invalid" and "same student id" in marks["Zo\u00eb"][1]
    assert "SECRET-GRADEBOOK-BYTES" not in (course / "autograded" / "tsthief" / "toy" / "timestamp.txt").read_text() \
        if (course / "autograded" / "tsthief" / "toy" / "timestamp.txt").exists() else True
    import csv

    rows = list(csv.reader((course / "grades.csv").open()))
    assert all(len(r) == len(rows[0]) for r in rows) and len(rows) == 1 + len(marks)
    assert scores(course)["solution"] == 5.0


def test_csv_quotes_and_neutralises(tmp_path):
    import csv

    from gmmcourse.grading.gradebook import csv_text, export_csv, open_gradebook

    assert csv_text("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_text("ann") == "ann" and csv_text("@x")[0] == "'"
    gb = open_gradebook(tmp_path)
    try:
        gb.update_or_create_assignment("toy")
        gb.update_or_create_student("s1", first_name="=cmd|' /C calc'!A0", last_name="Doe,\nJane")
        export_csv(gb, tmp_path / "grades.csv")
    finally:
        gb.close()
    rows = list(csv.reader((tmp_path / "grades.csv").open(newline="")))
    assert len(rows) == 2 and len(rows[1]) == len(rows[0])
    assert rows[1][5].startswith("'=") and rows[1][4] == "Doe,\nJane"


def test_notebooks_state_the_sandbox_and_its_limits():
    """Every source and release notebook says what the grading sandbox offers and its limits,
    in the words generated from `Limits` and the assignment (``sync_grading_environment``)."""
    from gmmcourse.grading.assignments import ASSIGNMENTS
    from gmmcourse.grading.release import grading_environment

    repo = HERE.parent
    lim = Limits()
    for a in ASSIGNMENTS.values():
        text = grading_environment(a)
        assert f"{lim.cell_timeout:.0f} s per cell" in text and f"{lim.notebook_timeout:.0f} s for the whole" in text
        assert ("`gmmcourse` is not available" in text) == ("gmmcourse" in a.sandbox_hide)
        for root in ("solutions", "exercises"):
            nb = nbformat.read(repo / root / a.id / a.notebook, 4)
            assert [c.source for c in nb.cells if c.cell_type == "markdown"].count(text) == 1, (root, a.id)


# --------------------------------------------------------------------------- a whole term


def _manual(course: Path, student: str, grade_id: str = "explain"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        g = gb.find_grade(grade_id, "toy", "toy", student)
        c = gb.find_comment(grade_id, "toy", "toy", student)
        return g.manual_score, g.needs_manual_grade, c.manual_comment


def _grade_by_hand(course: Path, student: str, score: float, comment: str, grade_id: str = "explain"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        g = gb.find_grade(grade_id, "toy", "toy", student)
        g.manual_score = score
        g.needs_manual_grade = False
        gb.find_comment(grade_id, "toy", "toy", student).manual_comment = comment
        gb.db.commit()


def test_manual_grades_survive_regrades_resubmissions_and_source_edits(tmp_path):
    course = toy.write_course(tmp_path, ["solution", "half"])
    _grade(course)
    assert _manual(course, "solution")[1] is True  # waits for the instructor
    _grade_by_hand(course, "solution", 1.0, "Nice explanation.")
    _grade_by_hand(course, "half", 0.5, "Half right.")
    # --force regrades everything: the instructor's grades and comments stay
    _grade(course, force=True)
    assert _manual(course, "solution") == (1.0, False, "Nice explanation.")
    total = {m[0]: m[5] for m in dump(course)["markers"]}
    assert total["solution"] == 6.0  # 5 auto + 1 by hand
    # a typo fixed in the source notebook's text regrades nobody
    src = tmp_path / "solutions" / "toy" / "toy.ipynb"
    nb = nbformat.read(src, 4)
    nb.cells[0].source += "\nTypo fixed."
    nbformat.write(nb, src)
    s = _grade(course)
    assert s.graded == [] and len(s.skipped) == 2
    # a resubmission that changes code but not the written answer keeps the manual grade
    sub = course / "submitted" / "half" / "toy" / "toy.ipynb"
    nbformat.write(toy.notebook(), sub)
    _grade(course)
    assert _manual(course, "half") == (0.5, False, "Half right.")
    assert scores(course)["half"] == 5.5
    # a changed written answer keeps the old grade visible, flagged for regrading
    nb = toy.notebook()
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "explain":
            c.source = "A new, longer explanation."
    nbformat.write(nb, sub)
    _grade(course)
    assert _manual(course, "half") == (0.5, True, "Half right.")


def test_second_grader_on_the_same_course_exits(tmp_path):
    import fcntl

    course = toy.write_course(tmp_path, ["solution"])
    with open(course / ".autograde.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242")
        f.flush()
        with pytest.raises(GradingError, match="another autograde is already grading"):
            _grade(course)
    _grade(course)  # released: grades normally
    assert scores(course) == {"solution": 5.0}


def test_recording_failure_stops_cleanly(tmp_path, monkeypatch):
    """A full disk while recording: one clear error, nothing half-written, no temporary files,
    no feedback without a gradebook row; the next run resumes."""
    import errno

    import gmmcourse.grading.feedback as fbm
    from gmmcourse.grading.engine import RecordingError

    course = toy.write_course(tmp_path, ["solution", "half", "blank"])
    real = fbm.stage_file
    calls = {"n": 0}

    def full_disk(path, text):
        calls["n"] += 1
        if calls["n"] > 3:  # the first submission's three files fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(fbm, "stage_file", full_disk)
    with pytest.raises(RecordingError, match="No space left"):
        _grade(course)
    recorded = [m[0] for m in dump(course)["markers"]]
    assert len(recorded) == 1
    assert not list(course.rglob("*.tmp"))
    fb_students = {p.parts[-3] for p in (course / "feedback").rglob("*.html")}
    assert fb_students == set(recorded)
    monkeypatch.setattr(fbm, "stage_file", real)
    _grade(course)
    assert scores(course) == {"solution": 5.0, "half": 2.0, "blank": 0.0}


def test_scheduler_without_workers_times_out(tmp_path):
    from distributed import LocalCluster

    course = toy.write_course(tmp_path, ["solution"])
    with LocalCluster(n_workers=0, dashboard_address=":0", processes=False) as cluster:
        t = time.monotonic()
        with pytest.raises(GradingError, match="no Dask worker joined"):
            _grade(course, serial=False, scheduler=cluster.scheduler_address, worker_wait=3)
        assert time.monotonic() - t < 30
    assert dump(course)["markers"] == []


def test_loose_notebook_is_reported(tmp_path):
    course = toy.write_course(tmp_path, ["solution"])
    (course / "submitted" / "solution" / "toy.ipynb").write_text("{}")
    said = []
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=LIMITS, progress=False, warm_cache=False,
              echo=said.append, serial=True)
    assert any("submitted/solution/toy.ipynb" in s and "is ignored" in s for s in said)


@pytest.mark.slow
def test_ctrl_c_stops_quickly_and_leaves_nothing(tmp_path):
    names = ["infinite_loop", "memory_bomb_list", "solution", "half"]
    course = toy.write_course(tmp_path, names)
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm", "--cell-timeout", "30"]
    def scratch():
        return {d for d in Path("/tmp").glob("gmg-*-*") if d.is_dir()}

    def cgroups():
        return {d for c in ("memory", "pids", "cpu") for d in Path(f"/sys/fs/cgroup/{c}").glob("gmmgrade-*")}

    before_s, before_c = scratch(), cgroups()
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not [d for d in scratch() - before_s if (d / "k1.json").exists()]:
        time.sleep(0.2)
    time.sleep(2)
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    stopped = time.monotonic() - t
    assert stopped < 15, stopped
    assert p.returncode == 130, err
    time.sleep(1)
    new = scratch() - before_s
    assert not new, new
    assert not cgroups() - before_c
    kernels = subprocess.run(["pgrep", "-af", "ipykernel_launcher -f /tmp/gmg-"], capture_output=True, text=True).stdout
    assert not [k for k in kernels.splitlines() if not any(str(d) in k for d in before_s)], kernels


@pytest.mark.slow
def test_scheduler_death_records_no_zeros(tmp_path):
    """Issue 14, defect 2: the Dask scheduler dies mid-run. What was graded stays; the rest is
    'not graded' (no gradebook row, no CSV row, no feedback), and the next run grades it."""
    import socket

    import dask

    course = toy.write_course(tmp_path, [])
    for i in range(4):
        d = course / "submitted" / f"s{i}" / "toy"
        d.mkdir(parents=True)
        nbformat.write(toy.notebook(extra_before=["import time; time.sleep(3)"]), d / "toy.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask_bin = Path(sys.executable).parent / "dask"
    quiet = dict(env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sched = subprocess.Popen([str(dask_bin), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-address", ":0"], **quiet)
    worker = subprocess.Popen([str(dask_bin), "worker", address, "--nthreads", "1", "--no-nanny"], **quiet)

    def kill_after_first_grade():
        end = time.monotonic() + 240
        while time.monotonic() < end and not list(course.glob("feedback/*/toy/toy.html")):
            time.sleep(0.1)
        sched.kill()

    killer = threading.Thread(target=kill_after_first_grade, daemon=True)
    killer.start()
    limits = Limits(cell_timeout=20, notebook_timeout=60, export_timeout=10, memory_bytes=512 << 20)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
            s = autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=limits, progress=False,
                          warm_cache=False, echo=lambda s: None, scheduler=address, worker_wait=60)
    finally:
        sched.kill()
        worker.kill()
        sched.wait()
        worker.wait()
    status = {g[0]: g[3] for g in s.graded}
    ok = sorted(k for k, v in status.items() if v == "ok")
    assert ok and "error" in status.values(), status
    assert sorted(scores(course)) == ok  # only what was graded is in the gradebook
    rows = list(csv.DictReader(open(course / "grades.csv")))
    assert sorted(r["student_id"] for r in rows) == ok and all(float(r["raw_score"]) == 5.0 for r in rows)
    assert sorted(p.parent.parent.name for p in course.glob("feedback/*/toy/toy.html")) == ok
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=limits, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    assert scores(course) == {f"s{i}": 5.0 for i in range(4)}


def test_feedback_shows_the_instructors_grades(tmp_path):
    """`feedback` adds formgrader's grades and comments to the students' pages, without
    regrading; running it again replaces (not repeats) that section; the CLI says so."""
    course = toy.write_course(tmp_path, ["solution", "half"])
    _grade(course)
    page = course / "feedback" / "solution" / "toy" / "toy.html"
    before = page.read_text()
    _grade_by_hand(course, "solution", 1.0, "Nice <b>explanation</b>.")
    r = subprocess.run([sys.executable, "-m", "gmmcourse.grading", "feedback", "toy", "--course", str(course),
                        "--registry", "toy:ASSIGNMENTS"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "updated 2 feedback page(s)" in r.stderr
    text = page.read_text()
    assert text.startswith(before[: before.index("</body>")])  # the autograder's part is unchanged
    assert "Graded by an instructor" in text and "Nice &lt;b&gt;explanation&lt;/b&gt;." in text
    assert "Total score: 6 / 6" in text and "SECRET-HIDDEN-TEST" not in text
    half = (course / "feedback" / "half" / "toy" / "toy.html").read_text()
    assert "not graded yet / 1" in half
    _grade_by_hand(course, "solution", 0.5, "Shorter next time.")
    from gmmcourse.grading.engine import update_feedback

    assert update_feedback(["toy"], course, registry=toy.ASSIGNMENTS) == 2
    text = page.read_text()
    assert text.count("Graded by an instructor") == 1 and "Shorter next time." in text and "Nice" not in text
    assert "Total score: 5.5 / 6" in text
    assert scores(course) == {"solution": 5.0, "half": 2.0}  # nothing was regraded
