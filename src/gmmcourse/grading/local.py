"""Run a part's export and trusted check in the current kernel (instructor-side `nbgrader validate`).

The hidden test cells of ``solutions/<id>/<id>.ipynb`` call `run_check`; the production grader
never does (it runs `Part.export` in the sandbox and `Part.check` outside).
"""

from __future__ import annotations

import json

__all__ = ["run_check", "export_answer"]


def export_answer(assignment_id: str, grade_id: str, namespace: dict):
    """Execute the part's export code in a copy of `namespace`; return the JSON round-tripped answer."""
    from gmmcourse.grading.assignments import ASSIGNMENTS

    assignment = ASSIGNMENTS[assignment_id]
    part = next(p for p in assignment.parts if p.grade_id == grade_id)
    ns = dict(namespace)
    ns["inputs"] = json.loads(json.dumps(assignment.inputs()))
    exec(compile(part.code, f"<export {assignment_id}/{grade_id}>", "exec"), ns)
    return json.loads(json.dumps(ns["answer"], allow_nan=False))


def run_check(assignment_id: str, grade_id: str, namespace: dict):
    """Assert that the part earns full marks for the answers in `namespace`; return the Verdict."""
    from gmmcourse.grading.assignments import ASSIGNMENTS

    assignment = ASSIGNMENTS[assignment_id]
    part = next(p for p in assignment.parts if p.grade_id == grade_id)
    verdict = part.check(export_answer(assignment_id, grade_id, namespace), assignment.reference())
    assert verdict.fraction == 1.0, f"{grade_id}: {verdict.fraction:.2f} of the points. {verdict.message}"
    return verdict
