"""Gradebook writes (nbgrader's own ``nbgrader.api.Gradebook``), from the parent only.

Each submission is recorded in ONE transaction: the nbgrader rows (student, submission,
notebook, grades, comments) and a row of our own ``gmm_autograde`` table (content hash,
status, reason) that makes a killed-and-restarted run resume without duplicates.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from pathlib import Path
from typing import Any

from nbgrader import api as nbapi
from nbgrader.api import Gradebook
from sqlalchemy import Column, DateTime, Float, MetaData, String, Table, Text, select

from .files import atomic_write

__all__ = ["instructor_view", "open_gradebook", "sync_assignment", "record_submission", "graded_hash", "export_csv", "export_lms_csv"]

_meta = MetaData()
MARKERS = Table(
    "gmm_autograde",
    _meta,
    Column("student", String(128), primary_key=True),
    Column("assignment", String(128), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # ok | invalid | error
    Column("reason", Text, nullable=True),
    Column("score", Float, nullable=True),
    Column("graded_at", DateTime, nullable=False),
)


_NAME_FIELDS = ("first_name", "last_name", "email", "lms_user_id")


class CourseGradebook(Gradebook):
    """nbgrader's gradebook that refuses a student's name, e-mail or LMS id holding markup:
    formgrader prints names into its pages unescaped, so every path that saves a roster
    (``--roster``, `gmmcourse.grading.lms`) is checked here (`html_safety.safe_name`)."""

    def add_student(self, student_id, **kwargs):
        return super().add_student(student_id, **_checked(kwargs))

    def update_or_create_student(self, name, **kwargs):
        return super().update_or_create_student(name, **_checked(kwargs))


def _checked(kwargs: dict) -> dict:
    from .html_safety import safe_name

    return {k: safe_name(v, k) if k in _NAME_FIELDS else v for k, v in kwargs.items()}


def open_gradebook(course: Path) -> Gradebook:
    import shutil
    import sys

    if shutil.which("alembic") is None:  # nbgrader runs `alembic` for new databases
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = Path(course) / "gradebook.db"
    gb = CourseGradebook(f"sqlite:///{path}")
    _meta.create_all(gb.db.get_bind())
    return gb


def nbgrader_cells(nb) -> list[dict[str, Any]]:
    """The nbgrader cells of a (trusted, source) notebook, in order."""
    out = []
    for cell in nb.cells:
        md = cell.get("metadata", {}).get("nbgrader")
        if not md or not md.get("grade_id"):
            continue
        out.append({"cell": cell, "md": md, "name": md["grade_id"], "type": cell.cell_type})
    return out


def sync_assignment(gb: Gradebook, assignment_id: str, notebook_name: str, source_nb) -> float:
    """Create/update the assignment's structure from the SOURCE notebook; returns max score."""
    nb_name = Path(notebook_name).stem
    gb.update_or_create_assignment(assignment_id)
    gb.update_or_create_notebook(nb_name, assignment_id)
    total = 0.0
    for c in nbgrader_cells(source_nb):
        md, name, ctype = c["md"], c["name"], c["type"]
        if md.get("grade"):
            pts = float(md.get("points", 0) or 0)
            total += pts
            gb.update_or_create_grade_cell(name, nb_name, assignment_id, max_score=pts, cell_type=ctype)
        if md.get("solution"):
            gb.update_or_create_solution_cell(name, nb_name, assignment_id)
        if md.get("task"):
            pts = float(md.get("points", 0) or 0)
            total += pts
            gb.update_or_create_task_cell(name, nb_name, assignment_id, max_score=pts, cell_type=ctype)
        gb.update_or_create_source_cell(
            name,
            nb_name,
            assignment_id,
            cell_type=ctype,
            locked=bool(md.get("locked")),
            source=c["cell"].source,
            checksum=md.get("checksum"),
        )
    return total


def graded_hash(gb: Gradebook, student: str, assignment: str) -> tuple[str, str] | None:
    row = gb.db.execute(
        select(MARKERS.c.sha256, MARKERS.c.status).where(
            MARKERS.c.student == student, MARKERS.c.assignment == assignment
        )
    ).first()
    return (row[0], row[1]) if row else None


MANUAL = Table(
    "gmm_manual_answer",
    _meta,
    Column("student", String(128), primary_key=True),
    Column("assignment", String(128), primary_key=True),
    Column("grade_id", String(128), primary_key=True),
    Column("sha256", String(64), nullable=False),  # of the student's answer in that cell
)


def record_submission(
    gb: Gradebook,
    *,
    student: str,
    assignment: str,
    notebook_name: str,
    sha256: str,
    status: str,
    reason: str | None,
    auto_scores: dict[str, float | None],
    comments: dict[str, str],
    timestamp: str | None = None,
    answers: dict[str, str] | None = None,
) -> float:
    """Record a graded submission in ONE transaction, keeping the instructors' work.

    The student's submission rows are updated in place, never deleted: auto scores and
    auto comments are replaced; manual scores, extra credit and manual comments written in
    formgrader are kept. Where the student's answer behind a manual grade changed since it
    was graded (``answers``: grade_id -> sha256 of the student's answer in that cell; for
    autograded cells with a manual override, of the whole notebook), the old manual grade
    stays visible and the cell is flagged ``needs_manual_grade`` ("needs regrading").

    ``auto_scores``: grade_id -> auto score (None = graded by hand).
    ``comments``: grade_id -> automatic comment (solution/task cells only in nbgrader).
    """
    s = gb.db
    nb_name = Path(notebook_name).stem
    answers = dict(answers or {})
    answers.setdefault("\0notebook", sha256)
    try:
        with s.no_autoflush:
            st = s.query(nbapi.Student).filter(nbapi.Student.id == student).one_or_none()
            if st is None:
                st = nbapi.Student(id=student)
                s.add(st)
            asg = s.query(nbapi.Assignment).filter(nbapi.Assignment.name == assignment).one()
            sub = (
                s.query(nbapi.SubmittedAssignment)
                .filter(nbapi.SubmittedAssignment.assignment == asg, nbapi.SubmittedAssignment.student == st)
                .one_or_none()
            )
            if sub is None:
                sub = nbapi.SubmittedAssignment(assignment=asg, student=st)
                s.add(sub)
            if timestamp:
                try:
                    from nbgrader.utils import parse_utc

                    sub.timestamp = parse_utc(timestamp)
                except Exception:
                    pass
            old_answers = {
                r.grade_id: r.sha256
                for r in s.execute(select(MANUAL).where(MANUAL.c.student == student, MANUAL.c.assignment == assignment))
            }

            def changed(gid: str, manual_cell: bool) -> bool:
                key = gid if manual_cell else "\0notebook"
                return old_answers.get(key) is not None and old_answers.get(key) != answers.get(key)

            total = 0.0
            for notebook in list(asg.notebooks):
                snb = next((x for x in sub.notebooks if x.notebook_id == notebook.id), None)
                if snb is None:
                    snb = nbapi.SubmittedNotebook(notebook=notebook, assignment=sub)
                    s.add(snb)
                grades = {g.cell_id: g for g in snb.grades}
                notes = {c.cell_id: c for c in snb.comments}
                for gc in list(notebook.grade_cells) + list(notebook.task_cells):
                    score = auto_scores.get(gc.name) if notebook.name == nb_name else 0.0
                    g = grades.get(gc.id)
                    if g is None:
                        g = nbapi.Grade(cell_id=gc.id, notebook=snb)
                        s.add(g)
                    g.auto_score = score
                    if g.manual_score is None:
                        g.needs_manual_grade = score is None
                    elif changed(gc.name, score is None):
                        g.needs_manual_grade = True  # graded by hand for an answer that changed
                    total += (g.manual_score if g.manual_score is not None else score) or 0.0
                for sc in list(notebook.solution_cells) + list(notebook.task_cells):
                    c = notes.get(sc.id)
                    if c is None:
                        c = nbapi.Comment(cell_id=sc.id, notebook=snb)
                        s.add(c)
                    c.auto_comment = comments.get(sc.name)
            s.execute(
                MARKERS.delete().where(MARKERS.c.student == student, MARKERS.c.assignment == assignment)
            )
            s.execute(
                MARKERS.insert().values(
                    student=student,
                    assignment=assignment,
                    sha256=sha256,
                    status=status,
                    reason=reason,
                    score=total,
                    graded_at=_dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None),
                )
            )
            s.execute(MANUAL.delete().where(MANUAL.c.student == student, MANUAL.c.assignment == assignment))
            for gid, h in answers.items():
                s.execute(MANUAL.insert().values(student=student, assignment=assignment, grade_id=gid, sha256=h))
            s.commit()
    except BaseException:
        s.rollback()
        raise
    return total


CSV_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
               "raw_score", "late_submission_penalty", "score", "max_score"]


def csv_text(value) -> str:
    """A text cell that a spreadsheet shows as text: no formula (``= + - @`` or a control
    character first gets a leading apostrophe, as OWASP recommends); quoting is the csv
    module's."""
    text = "" if value is None else str(value)
    if text and (text[0] in "=+-@" or text[0] in "\t\r\n"):
        return "'" + text
    return text


def export_csv(gb: Gradebook, dest: Path) -> None:
    """The rows and columns of ``nbgrader export`` (its CSV plugin), written with proper
    quoting (a comma or newline in a name cannot forge a row) and formula neutralisation,
    atomically."""
    import csv

    from nbgrader.api import MissingEntry

    fh = io.StringIO(newline="")
    w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
    w.writerow(CSV_COLUMNS)
    for asg in gb.assignments:
        for st in gb.students:
            try:
                sub = gb.find_submission(asg.name, st.id)
            except MissingEntry:
                ts, raw, pen, score = "", 0.0, 0.0, 0.0
            else:
                ts, raw, pen = sub.timestamp, sub.score, sub.late_submission_penalty
                score = max(0.0, raw - pen)
            w.writerow([
                csv_text(asg.name), "" if asg.duedate is None else str(asg.duedate),
                "" if ts in (None, "") else str(ts), csv_text(st.id), csv_text(st.last_name),
                csv_text(st.first_name), csv_text(st.email), str(raw), str(pen), str(score), str(asg.max_score),
            ])
    atomic_write(dest, fh.getvalue())


def _points(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def _write_rows(dest: Path, rows: list[list[str]]) -> None:
    import csv

    fh = io.StringIO(newline="")
    csv.writer(fh, quoting=csv.QUOTE_MINIMAL).writerows(rows)
    atomic_write(dest, fh.getvalue())


def export_lms_csv(gb: Gradebook, course: Path) -> tuple[Path, Path]:
    """Grades in the layouts that LMS gradebooks import (docs/grading.md, "Submissions from an
    LMS"), next to ``grades.csv``:

    * ``grades-canvas.csv``: Canvas's gradebook import -- ``Student`` ("Last, First"), ``ID``
      (the Canvas user id: the gradebook's ``lms_user_id``), ``SIS User ID`` (the nbgrader
      student id), ``SIS Login ID``, ``Section``, one column per assignment, and a
      ``Points Possible`` row with each assignment's maximum;
    * ``grades-moodle.csv``: Moodle's "Import grades from CSV" -- ``Student ID``,
      ``LMS user ID``, ``Email address``, ``First name``, ``Last name``, one column per
      assignment (Moodle's importer stops at a row it cannot map, so there is no points row).

    A score is the submission's score after nbgrader's late penalty, as in ``grades.csv``;
    a cell is empty where the student has no graded submission (the LMS's own rule for
    missing work applies). Text is neutralised like ``grades.csv`` (`csv_text`).
    """
    from nbgrader.api import MissingEntry

    course = Path(course)
    asgs = list(gb.assignments)
    canvas = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] + [csv_text(a.name) for a in asgs],
              ["Points Possible", "", "", "", ""] + [_points(float(a.max_score or 0.0)) for a in asgs]]
    moodle = [["Student ID", "LMS user ID", "Email address", "First name", "Last name"] + [csv_text(a.name) for a in asgs]]
    for st in sorted(gb.students, key=lambda s: s.id):
        cells = []
        for a in asgs:
            try:
                sub = gb.find_submission(a.name, st.id)
            except MissingEntry:
                cells.append("")
            else:
                cells.append(_points(max(0.0, float(sub.score or 0.0) - float(sub.late_submission_penalty or 0.0))))
        last, first = (st.last_name or "").strip(), (st.first_name or "").strip()
        name = f"{last}, {first}" if last and first else (last or first or st.id)
        lms = "" if st.lms_user_id is None else str(st.lms_user_id)
        canvas.append([csv_text(name), csv_text(lms), csv_text(st.id), "", ""] + cells)
        moodle.append([csv_text(st.id), csv_text(lms), csv_text(st.email), csv_text(first), csv_text(last)] + cells)
    out = (course / "grades-canvas.csv", course / "grades-moodle.csv")
    _write_rows(out[0], canvas)
    _write_rows(out[1], moodle)
    return out


def instructor_view(gb: Gradebook, student: str, assignment: str, notebook_name: str):
    """(cells, total, max_score) of a recorded submission as formgrader leaves it: every cell
    graded or commented by hand (manual score or manual comment), every cell still to grade,
    and the total with the manual scores. None when the submission is not in the gradebook."""
    from nbgrader.api import MissingEntry

    try:
        snb = gb.find_submission_notebook(Path(notebook_name).stem, assignment, student)
    except MissingEntry:
        return None
    comments = {c.name: c.manual_comment for c in snb.comments if c.manual_comment}
    cells = []
    for g in sorted(snb.grades, key=lambda g: g.name):
        hand = g.manual_score is not None or g.name in comments
        if hand or g.needs_manual_grade:
            cells.append({"name": g.name, "max_score": float(g.max_score),
                          "score": None if g.needs_manual_grade or g.score is None else float(g.score),
                          "comment": comments.pop(g.name, ""), "hand": hand})
    for name, text in sorted(comments.items()):  # comments on cells without points
        cells.append({"name": name, "max_score": 0.0, "score": 0.0, "comment": text, "hand": True})
    sub = snb.assignment
    return cells, float(sub.score), float(sub.max_score)
