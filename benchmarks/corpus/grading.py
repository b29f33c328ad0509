"""Grading a submission in-process: the solution notebooks' cells as a namespace of student
variables, each part's export code run on it and its trusted check applied, and a corpus case
(`Case`) with the verdicts it must get.

Shared by the tests (tests/test_exercises.py, tests/test_grading_fairness.py) and the
benchmarks (benchmarks/false_fail.py, benchmarks/probe_rates.py); the per-assignment corpora
are `corpus.categorization`, `corpus.coffee_blends` and `corpus.uncertainty`. Importable as
`corpus` with `benchmarks/` on `sys.path` (tests/conftest.py and every benchmark put it there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import nbformat

from gmmcourse.grading.assignments import ASSIGNMENTS, REPO_ROOT
from gmmcourse.grading.local import export_answer

__all__ = ["SOL", "solution_notebook", "cells_source", "namespace", "visible_test", "score", "Case", "grade",
           "verdict_ok"]

SOL = REPO_ROOT / "solutions"
"""The instructor's solution notebooks, ``solutions/<aid>/<aid>.ipynb``."""


def solution_notebook(aid: str):
    return nbformat.read(str(SOL / aid / f"{aid}.ipynb"), as_version=4)


def cells_source(aid: str, ids) -> str:
    """The code of the solution's cells with these grade_ids, solution markers removed."""
    src = []
    for c in solution_notebook(aid).cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if c.cell_type == "code" and gid in ids:
            src.append(re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", "", c.source, flags=re.M))
    return "\n\n".join(src)


def namespace(aid: str, ids) -> dict:
    """The variables a student has after running the solution's cells `ids` (a fresh dict)."""
    ns: dict = {}
    exec(compile(cells_source(aid, ids), f"<{aid}>", "exec"), ns)
    return ns


def visible_test(aid: str, gid: str) -> str:
    """The test cell `gid` as the student sees it (hidden tests removed)."""
    cell = next(c for c in solution_notebook(aid).cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
    return re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S)


def score(aid: str, gid: str, ns: dict):
    """The verdict of part `gid` on the namespace `ns`: its export code run in-process on `ns`,
    then its trusted check against the assignment's reference."""
    a = ASSIGNMENTS[aid]
    part = next(p for p in a.parts if p.grade_id == gid)
    return part.check(export_answer(aid, gid, ns), a.reference())


@dataclass
class Case:
    """One submission of the corpus and the verdicts it must get."""

    name: str
    aid: str
    ns: dict
    parts: tuple
    lost: frozenset = field(default_factory=frozenset)
    """parts this submission must lose entirely (the others must get full marks)"""
    expect: dict = field(default_factory=dict)
    """parts with a stated partial score instead (e.g. EM means right, sds wrong: half), or a
    tuple of the scores allowed (Dirichlet(n_k) weights are sometimes caught by the draws too)"""
    says: dict = field(default_factory=dict)
    """words the message of a part that lost points must contain (it names what is wrong)"""

    @property
    def correct(self) -> bool:
        return not self.lost


def grade(case: Case) -> dict:
    """grade_id -> verdict, for every part the case is graded on."""
    return {gid: score(case.aid, gid, case.ns) for gid in case.parts}


def verdict_ok(case: Case, verdicts: dict) -> list:
    """Parts graded wrongly (empty when all is right): a correct part below full marks, a
    broken part with any points, or a message that does not name the mistake."""
    def allowed(gid):  # a tuple: the mistake may also show in the draws' half, at some seeds
        w = case.expect.get(gid, 0.0 if gid in case.lost else 1.0)
        return w if isinstance(w, tuple) else (w,)

    wrong = [(gid, v.fraction, v.message) for gid, v in verdicts.items() if v.fraction not in allowed(gid)]
    return wrong + [(gid, v.fraction, v.message, "should name: " + case.says[gid]) for gid, v in verdicts.items()
                    if gid in case.says and case.says[gid] not in v.message]
