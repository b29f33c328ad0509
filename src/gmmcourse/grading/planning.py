"""The plan step of a grading run: which submissions of which assignments to grade, and why
(new, changed, forced or resumed), decided from the gradebook before anything expensive
starts (no sandbox, no Dask; the inputs and reference come from the course's cache where it
holds them, `reference.Hidden`). `engine.autograde` runs the plan (`engine.run`) and records
each result (`recording`).

Planning does not import nbgrader (SQLAlchemy and ~2 s of imports): the gradebook's
``gmm_autograde`` rows are read with ``sqlite3`` (`graded`), and the nbgrader structure is
synced (`sync`) only on a run that opens the gradebook. `settled_key` says when a run with
nothing to grade need not open it at all: the gradebook, the CSVs, the source notebooks and
the grader's code are as the last complete run left them."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .intake import Job, discover
from .reference import Hidden
from .sandbox import Limits
from .spec import Assignment, GradingError, RecordingError
from .verdicts import fingerprint

__all__ = ["Todo", "AssignmentPlan", "Plan", "plan", "graded", "sync", "settled_key"]


@dataclass
class Todo:
    """A submission to grade, and why: ``new`` (never graded), ``changed`` (its notebook or
    what decides its verdicts changed), ``forced`` (``--force``) or ``resumed`` (an earlier
    run did not finish it)."""

    job: Job
    why: str


@dataclass
class AssignmentPlan:
    """One assignment of a run: its trusted source, maximum score (set by `sync`), hidden
    inputs and reference (`Hidden`: values on first use) and the submissions to grade."""

    assignment: Assignment
    source_nb: Any
    source_text: str
    max_score: float | None
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
    the inputs and reference come from the course's cache where it holds this version's.
    ``gb``: the open gradebook, synced with the source notebooks (`sync`); None: not opened
    (``max_score`` unset until `sync`)."""
    marks = graded(course)
    out = Plan()
    for aid in ids:
        a = reg[aid]
        source_nb, source_text = _load_source(source_root, a)
        _validate_parts(a, source_nb)
        hidden = Hidden(a, course)
        fp = fingerprint(a, source_nb, hidden.reference_key, hidden.inputs_key)
        ap = AssignmentPlan(a, source_nb, source_text, None, hidden)
        done = {st: sha for (st, asg), (sha, status) in marks.items()
                if asg == a.id and status in ("ok", "invalid")}
        for j in discover(course, a, fp, students, limits, known=None if force else done):
            prev = marks.get((j.student, a.id))
            if prev is None:
                ap.todo.append(Todo(j, "new"))
            elif prev[0] != j.sha256:
                ap.todo.append(Todo(j, "changed"))
            elif j.student not in done:
                ap.todo.append(Todo(j, "resumed"))
            elif force:
                ap.todo.append(Todo(j, "forced"))
            else:
                out.skipped.append((j.student, a.id))
        out.assignments.append(ap)
    if gb is not None:
        sync(gb, out)
    return out


def graded(course: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(student, assignment) -> (content hash, status) of every grade recorded in the course's
    gradebook (its ``gmm_autograde`` table, read-only); empty where there is none yet."""
    db = Path(course) / "gradebook.db"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(db))}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("select student, assignment, sha256, status from gmm_autograde").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise RecordingError(f"cannot read the gradebook {db}: {e}") from None
    except sqlite3.Error as e:
        raise RecordingError(f"cannot read the gradebook {db}: {e}") from None
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def sync(gb, p: Plan) -> None:
    """The gradebook's assignments, notebooks and cells from the source notebooks (nbgrader's
    structure, what formgrader shows); each assignment's ``max_score`` from them."""
    from .gradebook import sync_assignment

    for ap in p.assignments:
        a = ap.assignment
        ap.max_score = sync_assignment(gb, a.id, a.notebook, ap.source_nb)


# what a complete run leaves that a later run with nothing to grade would only rewrite the same
SETTLED_FILES = ("gradebook.db", "gradebook.db-journal", "gradebook.db-wal", "grades.csv", "grades-canvas.csv",
                 "grades-moodle.csv")


def settled_key(course: Path, p: Plan) -> str | None:
    """What a complete run's sync and CSV exports were computed from: the source notebooks'
    full text (a typo fix included: `sync` copies the cells), the grader's code, and the
    gradebook and CSV files as they were (inode, size, times, SQLite's header with its change
    counter; a write by formgrader, a roster import, a deleted CSV all change it). Equal keys: opening the gradebook would change
    nothing. None where a file cannot be examined (never settled)."""
    h = hashlib.sha256()
    for ap in p.assignments:
        h.update(f"{ap.assignment.id}\0{hashlib.sha256(ap.source_text.encode()).hexdigest()}\0".encode())
    here = Path(__file__).resolve().parent
    for f in sorted(here.rglob("*.py")):
        h.update(f"{f.relative_to(here)}\0".encode() + hashlib.sha256(f.read_bytes()).digest())
    for name in SETTLED_FILES:
        try:
            with open(Path(course) / name, "rb") as f:  # SQLite's header counts the commits
                st = os.fstat(f.fileno())
                h.update(json.dumps([name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]).encode() + f.read(100))
        except FileNotFoundError:
            h.update(json.dumps([name, None]).encode())
        except OSError:
            return None  # cannot tell: not settled
    return h.hexdigest()


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
