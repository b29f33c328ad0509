"""The autograding engine, in three steps: `plan` (discover the submissions and decide which
need grading, and why, before anything expensive starts), `run` (grade those in sandboxes,
serially or on Dask: `runners`) and `record` (verdicts from `verdicts`, feedback, the
autograded notebook and ONE gradebook transaction per submission); then grades.csv.

A run with nothing to grade starts no Dask cluster and no kernel, and computes no inputs or
reference where the course's cache holds them (`reference.Hidden`)."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .files import CourseLocked, lock_course
from .intake import Job, discover
from .reference import Hidden
from .runners import (Task, TLSFiles, check_scheduler, cleanup_own, local_cluster, remote_client, run_dask, run_serial,
                      stop_processes)
from .sandbox import REPO_ROOT, CGroup, Limits, check_host, cleanup_stale_scratch, sandbox_available
from .spec import Assignment, GradingError, RecordingError, sanitize
from .verdicts import CheckCrashed, check_part, fingerprint

# The heavy modules (nbclient/ZeroMQ, nbgrader/SQLAlchemy, nbconvert) are imported when
# grading starts, so that a usage error is reported at once.


def run_submission(*args, **kw):
    from .executor import run_submission as run

    return run(*args, **kw)


__all__ = ["GradingError", "RecordingError", "autograde", "load_registry", "Summary", "Plan", "AssignmentPlan", "Todo",
           "plan", "run", "update_feedback"]

log = logging.getLogger("gmmcourse.grading")


@dataclass
class Summary:
    graded: list[tuple[str, str, float, str]] = field(default_factory=list)  # student, asg, score, status
    skipped: list[tuple[str, str]] = field(default_factory=list)
    csv: Path | None = None
    seconds: float = 0.0
    problems: dict[tuple[str, str], str] = field(default_factory=dict)  # (student, asg) -> why not graded


# --------------------------------------------------------------------------- registry


def load_registry(spec: str | None = None) -> dict[str, Assignment]:
    """``module:ATTR`` (default ``gmmcourse.grading.assignments:ASSIGNMENTS``)."""
    spec = spec or "gmmcourse.grading.assignments:ASSIGNMENTS"
    mod, _, attr = spec.partition(":")
    try:
        m = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        raise GradingError(f"cannot load the assignment registry {spec!r}: {e}") from None
    reg = getattr(m, attr or "ASSIGNMENTS", None)
    if not isinstance(reg, dict):
        raise GradingError(f"{spec!r} is not a dict of assignments")
    return reg


# --------------------------------------------------------------------------- the course


def _lock_course(course: Path):
    """One grader per course (`files.lock_course`)."""
    try:
        return lock_course(course)
    except CourseLocked as busy:
        raise GradingError(f"another autograde is already grading {course} (pid {busy.args[0]}); "
                           "wait for it to finish or stop it") from None
    except OSError as e:
        raise RecordingError(f"cannot write to the course folder {course}: {e.strerror}") from None


def _unlock_course(f) -> None:
    try:
        f.close()  # releases the lock
    except OSError:
        pass


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


# --------------------------------------------------------------------------- plan


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


# --------------------------------------------------------------------------- run


def run(p: Plan, on_result: Callable[[AssignmentPlan, Job, dict | None, str | None], None], *, limits: Limits,
        cache: Path, warm_cache: bool = True, serial: bool = False, workers: int | None = None,
        scheduler: str | None = None, tls: TLSFiles | None = None, trusted_network: bool = False,
        worker_wait: float = 60.0, echo: Callable[[str], None] = lambda s: None) -> None:
    """Grade the plan's submissions, calling ``on_result(plan, job, result, internal_error)``
    for each as it finishes: those refused at intake at once (no sandbox), the others in
    sandboxes on the chosen runner (`runners`). Nothing to run in a sandbox: nothing starts
    (no warm-up, no inputs drawn, no cluster)."""
    for ap, t in p.todo():  # bad submissions: zero with the reason, no sandbox needed
        if t.job.reason is not None:
            on_result(ap, t.job, None, None)
    # one thread per submission unless it may use two cores or more: XLA's and BLAS's
    # thread pools under a one-core CPU quota only get throttled (3x slower per notebook)
    base_cfg = {"jax_cache": str(cache), "single_thread": not serial or limits.cpus < 2}
    tasks = []
    for ap in p.assignments:
        jobs = [t.job for t in ap.todo if t.job.reason is None]
        if not jobs:
            continue
        a = ap.assignment
        inputs_json = ap.hidden.inputs_json()
        if warm_cache:
            warm_jax_cache(a, ap.source_text, inputs_json, cache, limits)
        exports = [(q.grade_id, q.code) for q in a.parts]
        cfg = {**base_cfg, "offers": a.sandbox_offers}
        tasks += [Task(f"grade-{a.id}-{len(tasks) + i}-{j.sha256[:12]}", (j.nb_text, exports, inputs_json, limits, cfg),
                       (ap, j)) for i, j in enumerate(jobs)]

    def task_done(t: Task, res, err):
        ap, j = t.payload
        on_result(ap, j, res, err)

    if serial or not tasks:
        run_serial(tasks, task_done)
    elif scheduler:
        with remote_client(scheduler, tls or TLSFiles(), trusted_network=trusted_network,
                           worker_wait=worker_wait, echo=echo) as client:
            run_dask(client, tasks, task_done)
    else:
        with local_cluster(workers or os.cpu_count() or 1) as (client, _):
            run_dask(client, tasks, task_done)


def warm_jax_cache(a: Assignment, source_text: str, inputs_json: str, cache: Path, limits: Limits) -> None:
    """Run the trusted source notebook once with a writable JAX cache: once per version of the
    notebook and of the course's kernels (their programs are filed by that version)."""
    if "jax" not in source_text and "gmmcourse" not in source_text:
        return
    from gmmcourse.programs import code_version  # imports JAX

    stamp = cache / f".warm-{a.id}-{hashlib.sha256((source_text + code_version()).encode()).hexdigest()[:16]}"
    if stamp.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    run_submission(
        source_text,
        [(p.grade_id, p.code) for p in a.parts],
        inputs_json,
        limits,
        {"jax_cache": str(cache), "jax_cache_writable": True, "single_thread": True, "offers": a.sandbox_offers},
    )
    stamp.write_text(f"{time.monotonic() - t:.1f}s\n")


class NotGraded(Exception):
    """This submission gets no grade on this run (nothing recorded; retried on the next):
    the run goes on with the others."""


# --------------------------------------------------------------------------- record


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

    staged = []
    try:
        for path, data in files.items():
            staged.append((stage_file(path, data.decode("utf-8")), path))
        record_submission(
            gb, student=job.student, assignment=a.id, notebook_name=a.notebook, sha256=job.sha256,
            status=row["status"], reason=row["reason"], auto_scores=row["auto_scores"], comments=row["comments"],
            timestamp=job.timestamp, answers=row["answers"],
        )
    except BaseException as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise RecordingError(f"could not record {job.student}/{a.id}: {type(e).__name__}: {sanitize(str(e), 200)}") from e
    for tmp, path in staged:
        os.replace(tmp, path)


def _manual_answers(executed_nb, manual: list[str]) -> dict[str, str]:
    """sha256 of the student's answer in each hand-graded cell (to flag changed answers)."""
    out = {}
    for gid in manual:
        src = next((c.source for c in executed_nb.cells
                    if (c.get("metadata", {}).get("nbgrader") or {}).get("grade_id") == gid), "")
        out[gid] = hashlib.sha256(str(src).encode("utf-8", "surrogatepass")).hexdigest()  # a lone surrogate too
    return out


def autograde(
    assignment_ids: list[str] | None = None,
    course: str | Path = "grading",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    serial: bool = False,
    registry: dict[str, Assignment] | str | None = None,
    source_root: str | Path | None = None,
    students: list[str] | None = None,
    limits: Limits | None = None,
    force: bool = False,
    progress: bool = True,
    jax_cache: str | Path | None = None,
    warm_cache: bool = True,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    worker_wait: float = 60.0,
    tls: TLSFiles | None = None,
    trusted_network: bool = False,
) -> Summary:
    """Grade every new or changed submission (see docs/grading.md).

    ``scheduler`` is reached over TLS with ``tls`` (or Dask's configured certificates); a
    plain ``tcp://`` scheduler only with ``trusted_network``. Raises `GradingError` (one
    line for a person) on bad input, when another grader holds the course, when nothing
    listens at `scheduler` or no Dask worker joins it within `worker_wait` seconds, and
    (`RecordingError`) when the course folder or gradebook cannot be written.
    """
    t0 = time.monotonic()
    limits = limits or Limits()
    course = Path(course).resolve()
    reg = registry if isinstance(registry, dict) else load_registry(registry)
    ids = list(assignment_ids or [])
    for i in ids:
        if i not in reg:
            known = ", ".join(sorted(reg)) or "(none)"
            raise GradingError(f"unknown assignment {i!r}; known assignments: {known}")
    if not sandbox_available():
        raise GradingError("bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap")
    for missing in check_host(limits):  # a limit that cannot be applied refuses (LimitUnavailable), or:
        echo(f"warning: --allow-unlimited: {missing}")
    if not course.is_dir():
        raise GradingError(f"course directory {course} does not exist")
    if not (course / "submitted").is_dir():
        raise GradingError(
            f"no submissions directory {course / 'submitted'} "
            "(expected submitted/<student>/<assignment>/<notebook>.ipynb)"
        )
    if not ids:
        ids = [i for i in sorted(reg) if any((d / i).is_dir() for d in (course / "submitted").iterdir())]
        if not ids:
            raise GradingError(f"no submissions for any known assignment under {course / 'submitted'}")
    source_root = Path(source_root) if source_root else course.parent / "solutions"
    cache = Path(jax_cache) if jax_cache else REPO_ROOT / ".jax_cache" / "grading"
    if scheduler and not serial:
        check_scheduler(scheduler, tls or TLSFiles(), trusted_network=trusted_network)  # before any work
    lock = _lock_course(course)
    from .gradebook import export_csv, export_lms_csv, open_gradebook

    CGroup.cleanup_stale()
    cleanup_stale_scratch()
    for loose in sorted((course / "submitted").glob("*/*.ipynb")):
        echo(f"warning: {ascii(str(loose.relative_to(course)))} is ignored: a submission goes to "
             f"submitted/<student>/<assignment>/<notebook>.ipynb")
    try:
        gb = open_gradebook(course)
    except BaseException:
        _unlock_course(lock)
        raise
    summary = Summary()
    try:
        todo = plan(gb, reg, ids, course, source_root, students, limits, force)
        summary.skipped = list(todo.skipped)
        if summary.skipped:
            echo(f"{len(summary.skipped)} submission(s) already graded (unchanged); skipping them.")
        for ap, t in todo.todo():
            log.info("%s/%s: to grade (%s)", t.job.student, ap.assignment.id, t.why)
        bar = None
        if progress and todo.total:
            from tqdm import tqdm

            bar = tqdm(total=todo.total, desc="autograde", unit="nb", file=sys.stderr)

        def done(ap: AssignmentPlan, job: Job, result: dict | None, err: str | None) -> None:
            # A RecordingError (disk full, read-only course) stops the whole run; anything
            # about this one submission is its reported problem and the run goes on.
            try:
                score, status = record(course, gb, ap, job, result, err)
            except NotGraded as why:
                log.warning("%s/%s not graded: %s", job.student, ap.assignment.id, why)
                score, status = 0.0, "error"
                summary.problems[(job.student, ap.assignment.id)] = str(why)
            summary.graded.append((job.student, ap.assignment.id, score, status))
            if bar:
                bar.update(1)

        run(todo, done, limits=limits, cache=cache, warm_cache=warm_cache, serial=serial, workers=workers,
            scheduler=scheduler, tls=tls, trusted_network=trusted_network, worker_wait=worker_wait, echo=echo)
        if bar:
            bar.close()
        summary.csv = course / "grades.csv"
        export_csv(gb, summary.csv)
        export_lms_csv(gb, course)
    finally:
        # Ctrl-C included: every sandbox of this process is killed first, then cleaned up
        # (the local cluster's workers and their sandboxes were killed on leaving it).
        stop_processes()
        gb.close()
        CGroup.cleanup_stale()
        cleanup_stale_scratch()
        cleanup_own()
        _unlock_course(lock)
    summary.seconds = time.monotonic() - t0
    return summary


def update_feedback(assignment_ids: Iterable[str] | None, course: str | Path = "grading", *,
                    registry: str | dict | None = None, echo: Callable[[str], None] = lambda s: None) -> int:
    """Add the grades and comments written in formgrader to every graded student's feedback
    page (``feedback/<student>/<assignment>/<notebook>.html``), without regrading anything;
    run it before handing feedback back. Returns the number of pages updated."""
    course = Path(course).resolve()
    reg = registry if isinstance(registry, dict) else load_registry(registry)
    ids = list(assignment_ids or reg)
    for i in ids:
        if i not in reg:
            raise GradingError(f"unknown assignment {i!r}; known assignments: {', '.join(sorted(reg)) or '(none)'}")
    if not (course / "gradebook.db").is_file():
        raise GradingError(f"no gradebook in {course}: run autograde first")
    from .feedback import stage_file, with_instructor_grades  # heavy (nbgrader): after the usage checks
    from .gradebook import MARKERS, instructor_view, open_gradebook

    lock = _lock_course(course)
    updated = 0
    try:
        gb = open_gradebook(course)
        try:
            rows = gb.db.execute(MARKERS.select()).mappings().all()
            for r in rows:
                a = reg.get(r["assignment"])
                if a is None or a.id not in ids or r["status"] not in ("ok", "invalid"):
                    continue
                page = course / "feedback" / r["student"] / a.id / f"{Path(a.notebook).stem}.html"
                view = instructor_view(gb, r["student"], a.id, a.notebook)
                if view is None or not page.is_file() or page.is_symlink():
                    continue
                text = with_instructor_grades(page.read_text(encoding="utf-8"), *view)
                try:
                    os.replace(stage_file(page, text), page)
                except OSError as err:
                    raise RecordingError(f"could not write {page}: {err.strerror}") from None
                updated += 1
        finally:
            gb.close()
    finally:
        _unlock_course(lock)
    echo(f"updated {updated} feedback page(s) with the instructors' grades")
    return updated
