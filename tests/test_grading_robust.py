"""One submission never stops the class, a crashed check is never a score, and a change to
anything a verdict rests on regrades (issues 23 and 25, the engine's side). Needs bubblewrap."""

from __future__ import annotations

import csv
import importlib
import json
import pickle
import sys
from dataclasses import replace

import nbformat
import pytest
from grading_helpers import _grade, dump, needs_bwrap, scores, toy

from gmmcourse.grading import engine, verdicts
from gmmcourse.grading.spec import Assignment, Verdict

pytestmark = needs_bwrap


def _csv_students(course) -> list[str]:
    return sorted(r["student_id"] for r in csv.DictReader(open(course / "grades.csv")))


def test_lone_surrogates_do_not_stop_the_class(tmp_path):
    """A lone surrogate in a markdown cell and in the metadata (valid JSON, unwritable as
    UTF-8) beside an honest notebook: the honest one is graded and the CSV written; the
    hostile one is graded or reported, never a stop of the run."""
    course = toy.write_course(tmp_path, ["solution"])
    nb = toy.notebook()
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("odd \ud800 text"))
    nb.metadata["odd"] = "\ud800"
    d = course / "submitted" / "surrogate" / "toy"
    d.mkdir(parents=True)
    (d / "toy.ipynb").write_text(json.dumps(nb))  # ASCII JSON: "\ud800" escaped
    s = _grade(course)
    got = scores(course)
    assert got["solution"] == 5.0
    assert "solution" in _csv_students(course)
    status = {g[0]: g[3] for g in s.graded}
    assert status["surrogate"] == "ok" or ("surrogate", "toy") in s.problems, (status, s.problems)


def test_a_submission_whose_files_cannot_be_built_is_its_own_problem(tmp_path, monkeypatch):
    """Any exception while building one submission's feedback or autograded notebook is that
    submission's reported problem (nothing recorded for it); the others are graded and the
    class's CSVs are written."""
    import gmmcourse.grading.feedback as fb

    course = toy.write_course(tmp_path, ["solution", "half", "blank"])
    real = fb.autograded_notebook

    def broken_for_half(executed, source_nb, parts):
        if any("raise NotImplementedError" in c.source for c in executed.cells) and \
                any("return sum(xs)" in c.source for c in executed.cells):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real(executed, source_nb, parts)

    monkeypatch.setattr(fb, "autograded_notebook", broken_for_half)
    s = _grade(course)
    assert scores(course) == {"solution": 5.0, "blank": 0.0}
    assert _csv_students(course) == ["blank", "solution"]
    assert {g[0]: g[3] for g in s.graded}["half"] == "error"
    assert "could not be built" in s.problems[("half", "toy")]
    assert not (course / "feedback" / "half").exists()
    monkeypatch.setattr(fb, "autograded_notebook", real)
    _grade(course)  # retried on the next run
    assert scores(course) == {"solution": 5.0, "half": 2.0, "blank": 0.0}


def test_a_crashed_check_is_an_internal_error_not_a_score(tmp_path):
    """Part.check raising (a defect of the grader) records nothing: no row, no CSV line, the
    run reports it (exit 1 in the CLI) and the next run retries; it is never 0 points."""
    def crashing(answer, ref):
        raise ZeroDivisionError("a bug in the check")

    broken = replace(toy.TOY, parts=(replace(toy.TOY.parts[0], check=crashing), toy.TOY.parts[1]))
    course = toy.write_course(tmp_path, ["solution"])
    s = engine.autograde(["toy"], course, registry={"toy": broken}, limits=toy_limits(), progress=False,
                         warm_cache=False, echo=lambda s: None, serial=True)
    assert s.graded == [("solution", "toy", 0.0, "error")]
    assert "internal error" in s.problems[("solution", "toy")] and "ZeroDivisionError" in s.problems[("solution", "toy")]
    assert dump(course)["markers"] == [] and _csv_students(course) == []
    _grade(course)  # fixed: graded
    assert scores(course) == {"solution": 5.0}


def toy_limits():
    from grading_helpers import LIMITS

    return LIMITS


def test_worker_failures_come_back_as_plain_data(monkeypatch):
    """Whatever a sandboxed run raises on a worker (here an exception that cannot be pickled)
    comes back as a picklable reason, never as an exception Dask would have to pickle."""
    import threading

    import gmmcourse.grading.executor as executor
    from gmmcourse.grading.runners import grade_task

    class Unpicklable(RuntimeError):
        def __init__(self):
            super().__init__("deep trouble")
            self.lock = threading.Lock()

    with pytest.raises(Exception):  # noqa: B017 (any pickling failure)
        pickle.dumps(Unpicklable())

    def fail(*a, **k):
        raise Unpicklable()

    monkeypatch.setattr(executor, "run_submission", fail)
    res = grade_task("{}", [], "{}", {}, {})
    assert res == {"infra_error": "Unpicklable: deep trouble"}
    assert pickle.loads(pickle.dumps(res)) == res


# --------------------------------------------------------------------------- what decides a verdict


HELPERS = "TOL = {tol}\n\ndef close(a, b):\n    return abs(a - b) <= TOL\n"
ASSIGNMENT = '''
from gmmcourse.grading.spec import Assignment, Part, Verdict
import toy
from . import helpers


def check_mean(answer, ref):
    ok = isinstance(answer, list) and len(answer) == len(ref["mean"]) and all(
        isinstance(a, (int, float)) and helpers.close(a, b) for a, b in zip(answer, ref["mean"]))
    return Verdict(1.0 if ok else 0.0, "mean")


TOY = Assignment(id="toy", notebook="toy.ipynb",
                 parts=(Part("test_mean", 2, toy.TOY.parts[0].export, check_mean, "mean"), toy.TOY.parts[1]),
                 reference=toy._reference, inputs=toy._inputs)
ASSIGNMENTS = {"toy": TOY}
'''


def _load_course_package(root, tol: str) -> dict[str, Assignment]:
    pkg = root / "fpcourse"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text(HELPERS.format(tol=tol))
    (pkg / "asg.py").write_text(ASSIGNMENT)
    for m in ("fpcourse.asg", "fpcourse.helpers", "fpcourse"):
        sys.modules.pop(m, None)
    importlib.invalidate_caches()
    return importlib.import_module("fpcourse.asg").ASSIGNMENTS


def test_a_changed_shared_helper_regrades(tmp_path, monkeypatch):
    """The fingerprint covers the modules a check rests on, not only the check's own source:
    a tolerance changed in a shared helper module regrades the class, an unrelated rerun
    does not."""
    monkeypatch.syspath_prepend(str(tmp_path))
    course = toy.write_course(tmp_path, ["solution", "half"])

    def run(reg):
        return engine.autograde(["toy"], course, registry=reg, limits=toy_limits(), progress=False,
                                warm_cache=False, echo=lambda s: None, serial=True)

    reg = _load_course_package(tmp_path, "1e-9")
    assert "fpcourse.helpers" in verdicts.verdict_modules(reg["toy"])
    assert len(run(reg).graded) == 2
    assert run(_load_course_package(tmp_path, "1e-9")).graded == []  # nothing changed
    s = run(_load_course_package(tmp_path, "1e-6"))  # only the helper's tolerance changed
    assert sorted(g[0] for g in s.graded) == ["half", "solution"]
    for m in ("fpcourse.asg", "fpcourse.helpers", "fpcourse"):
        sys.modules.pop(m, None)


def test_the_fingerprint_covers_the_shared_grading_modules(monkeypatch):
    """checks.py, spec.py and kernel_side.py (validation, named tolerances, export helpers)
    are part of every assignment's fingerprint."""
    src = toy.notebook()
    base = verdicts.fingerprint(toy.TOY, src, "ref")
    assert set(verdicts.VERDICT_MODULES) <= set(verdicts.verdict_modules(toy.TOY))
    real = verdicts.module_source
    for name in verdicts.VERDICT_MODULES:
        monkeypatch.setattr(verdicts, "module_source",
                            lambda n, name=name: real(n) + (b"\nEXACT_RTOL = 2e-4\n" if n == name else b""))
        assert verdicts.fingerprint(toy.TOY, src, "ref") != base, name
    monkeypatch.setattr(verdicts, "module_source", real)
    assert verdicts.fingerprint(toy.TOY, src, "ref") == base
    assert Verdict  # (imported for the package's check signature)
