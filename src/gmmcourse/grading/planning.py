"""The plan step of a grading run: which submissions of which assignments to grade, and why
(new, changed, forced or resumed), decided from the gradebook before anything expensive
starts (no sandbox, no Dask; the inputs and reference come from the course's cache where it
holds them, `reference.Hidden`). `engine.autograde` runs the plan (`engine.run`) and records
each result (`recording`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .intake import Job, discover
from .reference import Hidden
from .sandbox import Limits
from .spec import Assignment, GradingError
from .verdicts import fingerprint

__all__ = ["Todo", "AssignmentPlan", "Plan", "plan"]


@dataclass
class Todo:
    """A submission to grade, and why: ``new`` (never graded), ``changed`` (its notebook or
    what decides its verdicts changed), ``forced`` (``--force``) or ``resumed`` (an earlier
    run did not finish it)."""

    job: Job
    why: str


@dataclass
class AssignmentPlan:
    """One assignment of a run: its trusted source, maximum score, hidden inputs and
    reference (`Hidden`: values on first use) and the submissions to grade."""

    assignment: Assignment
    source_nb: Any
    source_text: str
    max_score: float
    hidden: Hidden
    todo: list[Todo] = field(default_factory=list)


@dataclass
class Plan:
    """What a run grades (per assignment) and what it skips (unchanged, already graded)."""

    assignments: list[AssignmentPlan] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (student, assignment)

    def todo(self) -> Iterator[tuple[AssignmentPlan, Todo]]:
        return ((ap, t) for ap in self.assignments for t in ap.todo)

    @property
    def total(self) -> int:
        return sum(len(ap.todo) for ap in self.assignments)


def plan(gb, reg: dict[str, Assignment], ids: list[str], course: Path, source_root: Path,
         students: list[str] | None, limits: Limits, force: bool = False) -> Plan:
    """Decide what to grade, and why; nothing expensive runs here: no sandbox, no Dask, and
    the inputs and reference come from the course's cache where it holds this version's."""
    from .gradebook import graded_hash, sync_assignment

    out = Plan()
    for aid in ids:
        a = reg[aid]
        source_nb, source_text = _load_source(source_root, a)
        _validate_parts(a, source_nb)
        max_score = sync_assignment(gb, a.id, a.notebook, source_nb)
        hidden = Hidden(a, course)
        fp = fingerprint(a, source_nb, hidden.reference_key, hidden.inputs_key)
        ap = AssignmentPlan(a, source_nb, source_text, max_score, hidden)
        for j in discover(course, a, fp, students, limits):
            prev = graded_hash(gb, j.student, a.id)
            done = prev is not None and prev[1] in ("ok", "invalid")
            if prev is None:
                ap.todo.append(Todo(j, "new"))
            elif prev[0] != j.sha256:
                ap.todo.append(Todo(j, "changed"))
            elif not done:
                ap.todo.append(Todo(j, "resumed"))
            elif force:
                ap.todo.append(Todo(j, "forced"))
            else:
                out.skipped.append((j.student, a.id))
        out.assignments.append(ap)
    return out


def _load_source(source_root: Path, a: Assignment):
    import nbformat

    p = source_root / a.id / a.notebook
    if not p.is_file():
        raise GradingError(f"source notebook for {a.id!r} not found: {p}")
    text = p.read_text()
    return nbformat.reads(text, as_version=4), text


def _validate_parts(a: Assignment, source_nb) -> None:
    cells = {}
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader") or {}
        if md.get("grade_id"):
            cells[md["grade_id"]] = md
    for p in a.parts:
        md = cells.get(p.grade_id)
        if md is None or not md.get("grade"):
            raise GradingError(f"assignment {a.id!r}: part {p.grade_id!r} is not a grade cell of the source notebook")
        if float(md.get("points", 0) or 0) != float(p.points):
            raise GradingError(
                f"assignment {a.id!r}: part {p.grade_id!r} has {p.points} points, the source cell {md.get('points')}"
            )
