"""The autograding engine, in three steps: `plan` (discover the submissions and decide which
need grading, and why, before anything expensive starts: `planning`), `run` (grade those in
sandboxes, serially or on Dask: `runners`) and `record` (verdicts from `verdicts`, feedback,
the autograded notebook and ONE gradebook transaction per submission: `recording`); then
grades.csv. Here: the run step, `autograde` (the three in order, under the course lock) and
`update_feedback` (the instructors' grades added to the feedback pages).

A run with nothing to grade starts no Dask cluster and no kernel, and computes no inputs or
reference where the course's cache holds them (`reference.Hidden`); where the gradebook and
the CSVs are as the last complete run left them (`planning.settled_key`), it does not even
import nbgrader or open the gradebook."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .files import CourseLocked, atomic_write, lock_course, staged
from .intake import Job
from .planning import AssignmentPlan, Plan, Todo, plan, settled_key, sync
from .recording import NotGraded, record
from .runners import (Task, TLSFiles, check_scheduler, cleanup_own, local_cluster, remote_client, run_dask, run_serial,
                      stop_processes)
from .sandbox import REPO_ROOT, CGroup, Limits, check_host, cleanup_stale_scratch, sandbox_available
from .spec import Assignment, GradingError, RecordingError

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
    from gmmcourse.codeversion import code_version  # no JAX import

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
    CGroup.cleanup_stale()
    cleanup_stale_scratch()
    for loose in sorted((course / "submitted").glob("*/*.ipynb")):
        echo(f"warning: {ascii(str(loose.relative_to(course)))} is ignored: a submission goes to "
             f"submitted/<student>/<assignment>/<notebook>.ipynb")
    summary = Summary()
    gb = None
    complete = False
    settled = course / ".cache" / "settled"
    try:
        todo = plan(None, reg, ids, course, source_root, students, limits, force)  # no nbgrader import
        log.info("planned: %d to grade, %d unchanged (%.1f s)", todo.total, len(todo.skipped), time.monotonic() - t0)
        summary.skipped = list(todo.skipped)
        if summary.skipped:
            echo(f"{len(summary.skipped)} submission(s) already graded (unchanged); skipping them.")
        key = settled_key(course, todo)
        if todo.total == 0 and key is not None and _read_key(settled) == key:
            summary.csv = course / "grades.csv"  # as the last complete run wrote it from this gradebook
            summary.seconds = time.monotonic() - t0
            return summary
        from .gradebook import export_csv, export_lms_csv, open_gradebook

        gb = open_gradebook(course)
        sync(gb, todo)
        log.info("gradebook opened and synced (%.1f s)", time.monotonic() - t0)
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
        complete = True
    finally:
        # Ctrl-C included: every sandbox of this process is killed first, then cleaned up
        # (the local cluster's workers and their sandboxes were killed on leaving it).
        stop_processes()
        if gb is not None:
            gb.close()
        if complete:  # what the next run with nothing to grade compares with (`planning.settled_key`)
            _write_key(settled, settled_key(course, todo))
        CGroup.cleanup_stale()
        cleanup_stale_scratch()
        cleanup_own()
        _unlock_course(lock)
    summary.seconds = time.monotonic() - t0
    return summary


def _read_key(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _write_key(path: Path, key: str | None) -> None:
    """Best effort: without it the next run only opens the gradebook again."""
    try:
        if key is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, key + "\n")
    except OSError as e:
        log.warning("could not write %s: %s", path, e.strerror)


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
                    with staged() as batch:
                        batch.append((stage_file(page, text), page))
                except OSError as err:
                    raise RecordingError(f"could not write {page}: {err.strerror}") from None
                updated += 1
        finally:
            gb.close()
    finally:
        _unlock_course(lock)
    echo(f"updated {updated} feedback page(s) with the instructors' grades")
    return updated
