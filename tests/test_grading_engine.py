"""Tests of the autograding engine (gmmcourse.grading) on a toy assignment.

The toy assignment and the hostile corpus live in benchmarks/hostile/toy.py (plain Python, no
JAX). Needs bubblewrap (``apt-get install -y bubblewrap``).
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from dataclasses import replace

import nbformat
import pytest
from grading_helpers import (
    FAST,
    HERE,
    LIMITS,
    _check_outputs,
    _env,
    _grade,
    dump,
    needs_bwrap,
    run_toy,
    scores,
    toy,
    toy_score,
)

from gmmcourse.grading.engine import GradingError, autograde
from gmmcourse.grading.sandbox import Limits

pytestmark = needs_bwrap


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
    # no offender here: limits far above the honest notebook (its cells are not what is tested)
    autograde(["categorization"], course, source_root=source_root, serial=True, progress=False,
              echo=lambda s: None, warm_cache=False, limits=Limits(cell_timeout=600, notebook_timeout=1200))
    got = scores(course)
    assert got["blank"] == 0.0
    assert got["teacher"] == pytest.approx(sum(p.points for p in a.parts)), got
    fb = (course / "feedback" / "teacher" / "categorization" / "categorization.html").read_text()
    assert "_gx_" not in fb and "inputs[" not in fb


# --------------------------------------------------------------------------- sandbox escapes
# Each case below got through before the sandbox was hardened (see docs/grading.md, threat model).

ESCAPES = ["solution", "proc_environ", "disk_fill", "forge_hook", "forge_thread", "shadow_exec",
           "shadowed_builtins_honest", "active_content", "big_outputs", "half"]
ESCAPE_LIMITS = Limits(cell_timeout=20, notebook_timeout=120, export_timeout=30, memory_bytes=768 << 20, max_pids=32,
                       scratch_bytes=64 << 20, tmp_bytes=32 << 20)


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
    course = toy.write_course(tmp_path, ESCAPES)
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=ESCAPE_LIMITS, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    got = scores(course)
    want = toy.expected(ESCAPES)
    assert got == pytest.approx(want), {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    # nothing of the grader's environment in anything written for students or instructors
    for f in list((course / "feedback").rglob("*")) + list((course / "autograded").rglob("*")):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert toy.SECRET_VALUE not in text, f
    # active content is inert in the autograded notebook, and the harmless part of it is kept
    ag = nbformat.read(course / "autograded" / "active_content" / "toy" / "toy.ipynb", 4)
    html = [o["data"]["text/html"] for c in ag.cells if c.cell_type == "code" for o in c.outputs
            if "text/html" in o.get("data", {})]
    assert any("<b>hi</b>" in "".join(h) for h in html), html
    rendered = json.dumps([c.outputs for c in ag.cells if c.cell_type == "code"])  # code sources are shown as text
    rendered += json.dumps([c.source for c in ag.cells if c.cell_type != "code"])
    for bad in ("<script", "<img", "application/javascript", "image/svg+xml"):
        assert bad not in rendered, bad  # (escaped text such as &lt;img ...&gt; is inert)
    # no link or source that runs script; the words of a defused markdown link may stay as
    # plain text inside the sanitised HTML block (tests/test_html_safety.py clicks every link
    # in formgrader's own page in Chromium)
    assert not re.search(r"""(?:href|src|action)\s*=\s*[\\"']*\s*javascript""", rendered, re.I), rendered
    # output floods of every kind stay within the budget
    big = course / "autograded" / "big_outputs" / "toy" / "toy.ipynb"
    assert big.stat().st_size < 3 << 20
    assert "widgets" not in nbformat.read(big, 4).metadata


def test_keyrings_are_closed(tmp_path):
    """A student can neither read root's keys nor plant one for the next student. Needs a
    kernel with keyrings (every Linux the grader supports); fails with one line otherwise."""
    assert _root_key(toy.SECRET_KEY_DESC, add=b"root-only") >= 0, (
        "this kernel has no keyrings (keyctl add_key failed): the keyring escape cannot be tested here")
    _unlink_key("left-by-a-student")  # a key planted by an earlier, unprotected grader run
    course = toy.write_course(tmp_path, ["keyring", "solution"])
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=ESCAPE_LIMITS, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    assert scores(course) == toy.expected(["keyring", "solution"])
    assert _root_key("left-by-a-student") < 0
    assert _root_key(toy.SECRET_KEY_DESC) >= 0


def test_cpu_quota_caps_setsid_burners():
    """Three setsid() burners get at most the submission's CPU quota (0.25 core here)."""
    # the probe sleeps 3 s (wall clock, whatever the load) in a 120 s cell limit
    res = run_toy(toy.notebook(toy.CPU_BURNER), Limits(cell_timeout=120, notebook_timeout=300, cpus=0.25))
    assert toy_score(res) == 5.0, res["answers"]


def test_assignment_can_hide_the_course_package():
    nb = toy.notebook(toy.HIDDEN_PACKAGE)
    assert toy_score(run_toy(nb, LIMITS)) == 3.0  # visible: mean is off by one
    assert toy_score(run_toy(nb, LIMITS, hide=["gmmcourse"])) == 5.0


def test_notebook_limit_after_answers_keeps_the_kernel():
    """The notebook time limit strikes after every answer exists: the kernel is interrupted,
    not restarted empty, and every part is graded. The honest cells take milliseconds, the
    tail never ends: the 30 s notebook limit strikes in the tail at any load."""
    nb = toy.notebook(extra_after=["import time\ntime.sleep(100_000)"])
    res = run_toy(nb, Limits(cell_timeout=100_000, notebook_timeout=30, export_timeout=30, wait_factor=1))
    assert any("notebook time limit" in e for e in res["events"]), res["events"]
    assert toy_score(res) == 5.0, res["answers"]


def test_one_wall_clock_budget_per_submission():
    """Exports that hang cannot hold a worker beyond notebook + grace time: the first hanging
    export is cut at the end of the budget, and the second is not even started (without one
    budget each would get its own export_timeout)."""
    hang = "def mean(xs):\n    while True:\n        pass\n"
    nb = toy.notebook(hang, "def counts(words):\n    import time\n    time.sleep(1000)\n")
    # the cells only define the functions (ms); the budget left after them (20 + 15 s) is
    # below the first export's own limit (40 s), so the budget is what cuts the looping export,
    # and nothing is left for the second (whose sleep would outlast any limit)
    limits = Limits(cell_timeout=60, notebook_timeout=20, export_timeout=40, grace_timeout=15, wait_factor=1)
    res = run_toy(nb, limits)
    assert toy_score(res) == 0.0
    assert "time limit" in res["answers"]["test_mean"]["error"], res["answers"]
    assert "time budget was used up" in res["answers"]["test_counts"]["error"], res["answers"]


def test_kernel_start_failure_is_retried_not_scored(tmp_path, monkeypatch):
    import gmmcourse.grading.kernels as ex

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
    from gmmcourse.grading.html_safety import UnsafeName

    gb = open_gradebook(tmp_path)
    try:
        gb.update_or_create_assignment("toy")
        # the gradebook refuses names with markup or formula syntax outright (html_safety) ...
        with pytest.raises(UnsafeName):
            gb.update_or_create_student("s0", first_name="=cmd|' /C calc'!A0")
        # ... and what it accepts is still written inert: a leading + - @ is neutralised, commas quoted
        gb.update_or_create_student("s1", first_name="@SUM(A1:A9)", last_name="Doe, Jane")
        export_csv(gb, tmp_path / "grades.csv")
    finally:
        gb.close()
    rows = list(csv.reader((tmp_path / "grades.csv").open(newline="")))
    assert len(rows) == 2 and len(rows[1]) == len(rows[0])
    assert rows[1][5] == "'@SUM(A1:A9)" and rows[1][4] == "Doe, Jane"


def test_notebooks_state_the_sandbox_and_its_limits():
    """Every source and release notebook says what the grading sandbox offers and its limits,
    in the words generated from `Limits` and the assignment (``sync_grading_environment``)."""
    from gmmcourse.grading.assignments import ASSIGNMENTS
    from gmmcourse.grading.release import grading_environment

    repo = HERE.parent
    lim = Limits()
    for a in ASSIGNMENTS.values():
        text = grading_environment(a)
        assert f"{lim.cell_timeout:.0f} s of CPU time per cell" in text and f"{lim.notebook_timeout:.0f} s for the whole" in text
        assert ("`gmmcourse` is not available" in text) == ("gmmcourse" in a.sandbox_hide)
        for root in ("solutions", "exercises"):
            nb = nbformat.read(repo / root / a.id / a.notebook, 4)
            assert [c.source for c in nb.cells if c.cell_type == "markdown"].count(text) == 1, (root, a.id)


def test_serial_grading_is_single_threaded_under_a_one_core_quota(tmp_path, monkeypatch):
    """--serial gives each kernel the same one-thread environment as parallel grading when
    its CPU quota is one core: more threads under that quota are only throttled (3x slower)."""
    import gmmcourse.grading.executor as executor

    seen = []

    def fake_run(nb_text, exports, inputs_json, limits, cfg):
        seen.append((limits.cpus, cfg["single_thread"]))  # the Limits dataclass itself
        raise RuntimeError("not run in this test")

    monkeypatch.setattr(executor, "run_submission", fake_run)
    for cpus, want in ((1.0, True), (2.0, False)):
        course = toy.write_course(tmp_path / f"c{cpus:g}", ["solution"])
        seen.clear()
        autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=replace(LIMITS, cpus=cpus), progress=False,
                  warm_cache=False, echo=lambda s: None, serial=True)
        assert seen == [(cpus, want)]
    assert not dump(course)["markers"]  # the fake failure is not a grade
