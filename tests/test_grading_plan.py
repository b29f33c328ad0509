"""The engine's plan -> run -> record (issue 24, issue 30): what needs grading is decided
before anything expensive starts, so that a re-run with no change starts no Dask cluster and
no kernel and computes neither the inputs nor the reference; the plan says why each
submission is graded; `Limits` travels to the runners as the dataclass. On the toy assignment
(benchmarks/hostile/toy.py). Needs bubblewrap."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
from dataclasses import replace

import nbformat
from grading_helpers import LIMITS, needs_bwrap, toy

from gmmcourse.grading import engine, runners
from gmmcourse.grading.gradebook import open_gradebook
from gmmcourse.grading.sandbox import Limits

pytestmark = needs_bwrap


def _grade(course, registry=None, **kw):
    kw.setdefault("serial", True)
    kw.setdefault("warm_cache", False)
    return engine.autograde(["toy"], course, registry=registry or toy.ASSIGNMENTS, limits=LIMITS, progress=False,
                            echo=lambda s: None, **kw)


def _counted(calls: list[str]) -> dict:
    """The toy registry with its inputs and reference counting their calls."""

    def inputs():
        calls.append("inputs")
        return toy._inputs()

    def reference():
        calls.append("reference")
        return toy._reference()

    return {"toy": replace(toy.TOY, inputs=inputs, reference=reference)}


def _spy(monkeypatch, started: list[str]) -> None:
    """Everything expensive a run can start, recorded (and refused) instead."""

    def refuse(name):
        def f(*a, **k):
            started.append(name)
            raise AssertionError(f"{name} started")
        return f

    monkeypatch.setattr(engine, "local_cluster", refuse("local Dask cluster"))
    monkeypatch.setattr(engine, "remote_client", refuse("remote Dask client"))
    monkeypatch.setattr(engine, "run_submission", refuse("a kernel (warm-up)"))
    monkeypatch.setattr(engine, "warm_jax_cache", refuse("the JAX cache warm-up"))
    monkeypatch.setattr(runners, "grade_task", refuse("a kernel"))


def test_a_no_change_rerun_starts_nothing(tmp_path, monkeypatch):
    """Every submission graded and unchanged: the re-run (with Dask workers asked for) skips
    them all without starting a cluster, a kernel or the warm-up, and without computing the
    inputs or the reference (the course's cache holds this version's)."""
    course = toy.write_course(tmp_path, ["solution", "half", "invalid_json"])
    calls: list[str] = []
    reg = _counted(calls)
    first = _grade(course, registry=reg)
    assert len(first.graded) == 3
    assert calls, "the first run computed the inputs and reference"
    calls.clear()
    started: list[str] = []
    _spy(monkeypatch, started)
    again = _grade(course, registry=reg, serial=False, workers=2, warm_cache=True)
    assert again.graded == [] and len(again.skipped) == 3
    assert started == [] and calls == []
    assert again.csv is not None and again.csv.is_file()


def _why(p: engine.Plan) -> dict[str, str]:
    return {t.job.student: t.why for _, t in p.todo()}


def test_the_plan_says_why_and_computes_nothing(tmp_path, monkeypatch):
    """new (never graded), changed (a resubmission), forced (--force), resumed (an earlier run
    left it without a grade) and skipped (graded, unchanged); planning runs nothing."""
    course = toy.write_course(tmp_path, ["solution", "half", "blank"])
    calls: list[str] = []
    reg = _counted(calls)
    _grade(course, registry=reg)
    nbformat.write(toy.notebook(), course / "submitted" / "half" / "toy" / "toy.ipynb")  # resubmitted
    d = course / "submitted" / "newbie" / "toy"
    d.mkdir(parents=True)
    nbformat.write(toy.notebook(), d / "toy.ipynb")
    con = sqlite3.connect(course / "gradebook.db")
    con.execute("update gmm_autograde set status = 'error' where student = 'blank'")
    con.commit()
    con.close()
    calls.clear()
    started: list[str] = []
    _spy(monkeypatch, started)
    gb = open_gradebook(course)
    try:
        p = engine.plan(gb, reg, ["toy"], course, tmp_path / "solutions", None, LIMITS)
        assert _why(p) == {"half": "changed", "newbie": "new", "blank": "resumed"}
        assert p.skipped == [("solution", "toy")] and p.total == 3
        forced = engine.plan(gb, reg, ["toy"], course, tmp_path / "solutions", None, LIMITS, force=True)
        assert _why(forced) == {"half": "changed", "newbie": "new", "blank": "resumed", "solution": "forced"}
        assert forced.skipped == []
    finally:
        gb.close()
    assert started == [] and calls == []


def test_limits_travel_to_the_runner_as_the_dataclass(tmp_path, monkeypatch):
    """Each task carries the run's `Limits` itself (pickled as the dataclass by Dask), not a
    dict: what the worker applies is what the grader was given."""
    course = toy.write_course(tmp_path, ["solution"])
    seen = []

    def fake_serial(tasks, done):
        for t in tasks:
            seen.append(t.args[3])
            done(t, None, "not run (test)")

    monkeypatch.setattr(engine, "run_serial", fake_serial)
    s = _grade(course)
    assert s.problems  # nothing recorded: the fake runner ran nothing
    assert len(seen) == 1 and type(seen[0]) is Limits and seen[0] == LIMITS
    assert pickle.loads(pickle.dumps(seen[0])) == LIMITS


def test_the_grader_skips_the_unused_iri_checker():
    """The CLI and its local workers start without jsonschema's IRI format checker (its 38
    grammars compiled at import were most of a no-change re-run); notebooks still validate."""
    code = ("import sys\nfrom gmmcourse.grading.runners import skip_unused_iri_checker\n"
            "skip_unused_iri_checker()\nimport nbformat, nbgrader.api\n"
            "nbformat.validate(nbformat.v4.new_notebook())\n"
            "print(sys.modules.get('rfc3987_syntax'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"
