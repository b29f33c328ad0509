"""The record step of a grading run: one submission's result becomes its verdicts (trusted
checks, `verdicts`), its feedback page, its autograded notebook and ONE gradebook
transaction; the files are staged before the row is committed and renamed into place after
(`gmmcourse.atomic.staged`), so a failure leaves the previous grade and files whole."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .files import staged
from .intake import Job
from .planning import AssignmentPlan
from .spec import Assignment, RecordingError, sanitize
from .verdicts import CheckCrashed, check_part

__all__ = ["NotGraded", "record"]

log = logging.getLogger("gmmcourse.grading")


class NotGraded(Exception):
    """This submission gets no grade on this run (nothing recorded; retried on the next):
    the run goes on with the others."""


def record(course: Path, gb, ap: AssignmentPlan, job: Job, result: dict | None,
           internal_error: str | None) -> tuple[float, str]:
    """Checks (trusted) + feedback + autograded notebook + ONE gradebook transaction.

    Raises `NotGraded` for anything about this one submission (a sandbox failure, a check
    that crashed, a notebook whose files cannot be built), `RecordingError` when the course
    folder or the gradebook cannot be written (that stops the run)."""
    if job.reason is None and (internal_error or (result or {}).get("infra_error")):
        # Not a grade: nothing is recorded (no row, no feedback, no CSV line), the student's
        # previous grade (if any) stays, and the next run retries this submission.
        raise NotGraded(internal_error or result["infra_error"])
    a = ap.assignment
    try:
        files, row = _build(course, ap, job, result)
    except (KeyboardInterrupt, SystemExit):
        raise
    except CheckCrashed as e:
        log.error("%s/%s: %s", job.student, a.id, e)
        raise NotGraded(f"internal error: {e}") from None
    except Exception as e:  # noqa: BLE001 (a problem of this submission's content, e.g. unencodable text)
        log.error("%s/%s: building its feedback failed", job.student, a.id, exc_info=True)
        raise NotGraded(f"its feedback or autograded notebook could not be built ({type(e).__name__}: "
                        f"{sanitize(str(e), 120)})") from None
    _write(gb, job, a, files, row)
    return row["score"], row["status"]


def _build(course: Path, ap: AssignmentPlan, job: Job, result: dict | None) -> tuple[dict[Path, bytes], dict]:
    """The files (UTF-8 bytes) and the gradebook row of one submission; nothing is written."""
    import nbformat

    a, source_nb, max_score = ap.assignment, ap.source_nb, ap.max_score

    from .feedback import autograded_notebook, feedback_html

    parts_out = []
    scores: dict[str, float | None] = {}
    comments: dict[str, str] = {}
    events: list[str] = []
    status, reason = "ok", job.reason
    if reason:
        status = "invalid"
    else:
        events = list(result.get("events", []))
    for p in a.parts:
        if status == "ok":
            pts, msg = check_part(p, result["answers"].get(p.grade_id), ap.hidden.reference())
            if pts < float(p.points):
                from .checks import time_limit_note
                from .dependence import events_for_part

                msg = time_limit_note(events_for_part(p, events, result.get("notebook")), msg)
        else:
            pts, msg = 0.0, "not graded: " + reason
        scores[p.grade_id] = pts
        parts_out.append(
            {"grade_id": p.grade_id, "description": p.description, "points": float(p.points), "score": pts, "message": msg}
        )
    manual = []
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader") or {}
        gid = md.get("grade_id")
        if gid and (md.get("grade") or md.get("task")) and gid not in scores:
            if status == "ok":
                scores[gid] = None
                manual.append(gid)
            else:
                scores[gid] = 0.0
    score = sum(v or 0.0 for v in scores.values())
    nb_stem = Path(a.notebook).stem
    fb = feedback_html(
        student=job.student, assignment=a.id, notebook=a.notebook, parts=parts_out, score=score,
        max_score=max_score, events=events, reason=reason, manual=manual,
    )
    files = {course / "feedback" / job.student / a.id / f"{nb_stem}.html": fb}
    answers: dict[str, str] = {}
    if status == "ok":
        executed = nbformat.reads(result["notebook"], as_version=4)
        agnb = autograded_notebook(executed, source_nb, {p["grade_id"]: p for p in parts_out})
        files[course / "autograded" / job.student / a.id / a.notebook] = nbformat.writes(agnb)
        if job.timestamp:
            files[course / "autograded" / job.student / a.id / "timestamp.txt"] = job.timestamp
        answers = _manual_answers(executed, manual)
    encoded = {path: text.encode("utf-8") for path, text in files.items()}  # strict: a lone surrogate fails here
    return encoded, {"score": score, "status": status, "reason": reason, "auto_scores": scores, "comments": comments,
                     "answers": answers}


def _write(gb, job: Job, a: Assignment, files: dict[Path, bytes], row: dict) -> None:
    """Files are staged first (a full disk fails here, before anything is recorded), the
    gradebook row is committed, then the staged files replace the old ones (a rename)."""
    from .feedback import stage_file
    from .gradebook import record_submission

    with staged() as batch:  # renamed into place once the row is committed; removed on any failure
        try:
            for path, data in files.items():
                batch.append((stage_file(path, data.decode("utf-8")), path))
            record_submission(
                gb, student=job.student, assignment=a.id, notebook_name=a.notebook, sha256=job.sha256,
                status=row["status"], reason=row["reason"], auto_scores=row["auto_scores"], comments=row["comments"],
                timestamp=job.timestamp, answers=row["answers"],
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            raise RecordingError(f"could not record {job.student}/{a.id}: {type(e).__name__}: "
                                 f"{sanitize(str(e), 200)}") from e


def _manual_answers(executed_nb, manual: list[str]) -> dict[str, str]:
    """sha256 of the student's answer in each hand-graded cell (to flag changed answers)."""
    out = {}
    for gid in manual:
        src = next((c.source for c in executed_nb.cells
                    if (c.get("metadata", {}).get("nbgrader") or {}).get("grade_id") == gid), "")
        out[gid] = hashlib.sha256(str(src).encode("utf-8", "surrogatepass")).hexdigest()  # a lone surrogate too
    return out
