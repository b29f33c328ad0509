"""The autograding engine: discover submissions, run them (serially or on Dask), check the
exported answers (trusted, here in the parent), write gradebook, feedback and CSV."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .intake import CourseLocked, Job, discover, lock_course
from .reference import cached as cached_reference
from .reference import source_of
from .sandbox import REPO_ROOT, CGroup, Limits, cleanup_stale_scratch, sandbox_available
from .spec import Assignment, GradingError, Part, RecordingError, Verdict, sanitize

# The heavy modules (nbclient/ZeroMQ, nbgrader/SQLAlchemy, nbconvert) are imported when
# grading starts, so that a usage error is reported at once.


def run_submission(*args, **kw):
    from .executor import run_submission as run

    return run(*args, **kw)

__all__ = ["GradingError", "RecordingError", "autograde", "load_registry", "Summary", "update_feedback"]

log = logging.getLogger("gmmcourse.grading")
ENGINE_VERSION = "1"


@dataclass
class Summary:
    graded: list[tuple[str, str, float, str]] = field(default_factory=list)  # student, asg, score, status
    skipped: list[tuple[str, str]] = field(default_factory=list)
    csv: Path | None = None
    seconds: float = 0.0


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


def _strict_json(text: str) -> Any:
    def bad_const(c):
        raise ValueError(f"{c} is not allowed")

    return json.loads(text, parse_constant=bad_const)


def check_part(part: Part, answer: dict, reference: Any) -> tuple[float, str]:
    """Trusted verdict for one part: points only for a positive, checked Verdict."""
    if not answer or not answer.get("ok"):
        err = sanitize((answer or {}).get("error") or "no answer")
        return 0.0, f"Your answer could not be read from the notebook ({err})."
    try:
        value = _strict_json(answer["json"])
    except (ValueError, RecursionError, TypeError):
        return 0.0, "Your answer could not be read from the notebook (not plain data)."
    try:
        v = part.check(value, reference)
    except Exception as e:  # the check itself failed on this answer
        log.debug("check %s raised %r", part.grade_id, e)
        return 0.0, "Your answer has an unexpected type or shape."
    if not isinstance(v, Verdict):
        return 0.0, "Your answer could not be checked."
    try:
        frac = float(v.fraction)
    except (TypeError, ValueError):
        frac = 0.0
    if not math.isfinite(frac) or frac <= 0:
        frac = 0.0
    frac = min(frac, 1.0)
    return round(float(part.points) * frac, 6), str(v.message)


# --------------------------------------------------------------------------- discovery


def _fingerprint(a: Assignment, source_nb, reference_key: str) -> str:
    """What decides the autograded verdicts, and nothing else: the parts (ids, points, export
    code, check code), the inputs, the reference values, the sandbox's hidden packages and
    the source notebook's grade cells (ids, points). Fixing a typo in the notebook's text
    does not regrade the class."""
    h = hashlib.sha256(ENGINE_VERSION.encode())
    for p in a.parts:
        h.update(f"{p.grade_id}\0{p.points}\0{p.code}\0{source_of(p.check)}\0".encode())
    h.update(json.dumps(a.inputs(), sort_keys=True, allow_nan=False).encode())
    h.update(reference_key.encode())
    h.update(repr(tuple(a.sandbox_hide)).encode())
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader") or {}
        if md.get("grade") or md.get("task"):
            h.update(f"{md.get('grade_id')}\0{md.get('points')}\0{c.cell_type}\0".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- running


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait (a little) for local workers to exit, so that the clean-up after them sees them
    gone; kill the ones that linger."""
    import signal as _signal

    from .sandbox import owner_alive

    end = time.monotonic() + timeout
    while time.monotonic() < end and any(owner_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if owner_alive(p):
            try:
                os.kill(p, _signal.SIGKILL)
            except OSError:
                pass
    end = time.monotonic() + 2
    while time.monotonic() < end and any(owner_alive(p) for p in pids):
        time.sleep(0.05)


def _lock_course(course: Path):
    """One grader per course (`intake.lock_course`)."""
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


def _warm_cache(a: Assignment, source_text: str, inputs_json: str, cache: Path, limits: Limits) -> None:
    """Run the trusted source notebook once with a writable JAX cache: once per version of the
    notebook and of the course's kernels (their programs are filed by that version)."""
    from gmmcourse.programs import code_version

    stamp = cache / f".warm-{a.id}-{hashlib.sha256((source_text + code_version()).encode()).hexdigest()[:16]}"
    if stamp.exists() or "jax" not in source_text and "gmmcourse" not in source_text:
        return
    cache.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    run_submission(
        source_text,
        [(p.grade_id, p.code) for p in a.parts],
        inputs_json,
        limits,
        {"jax_cache": str(cache), "jax_cache_writable": True, "single_thread": True, "hide": list(a.sandbox_hide)},
    )
    stamp.write_text(f"{time.monotonic() - t:.1f}s\n")


def _finish(
    course: Path, gb, a: Assignment, source_nb, max_score: float, reference: Any, job: Job, result: dict | None,
    internal_error: str | None,
) -> tuple[float, str]:
    """Checks (trusted) + feedback + autograded notebook + ONE gradebook transaction."""
    import nbformat

    from .feedback import autograded_notebook, feedback_html, stage_file
    from .gradebook import record_submission

    parts_out = []
    scores: dict[str, float | None] = {}
    comments: dict[str, str] = {}
    events: list[str] = []
    status, reason = "ok", job.reason
    if reason:
        status = "invalid"
    elif internal_error or (result or {}).get("infra_error"):
        # Not a grade: nothing is recorded (no row, no feedback, no CSV line), the student's
        # previous grade (if any) stays, and the next run retries this submission.
        log.warning("%s/%s not graded: %s", job.student, a.id, internal_error or result["infra_error"])
        return 0.0, "error"
    else:
        events = list(result.get("events", []))
    for p in a.parts:
        if status == "ok":
            pts, msg = check_part(p, result["answers"].get(p.grade_id), reference)
            if pts < float(p.points):
                from .checks import time_limit_note

                msg = time_limit_note(events, msg)
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
    # Files are staged first (a full disk fails here, before anything is recorded), the
    # gradebook row is committed, then the staged files replace the old ones (a rename).
    staged = []
    try:
        for path, text in files.items():
            staged.append((stage_file(path, text), path))
        record_submission(
            gb, student=job.student, assignment=a.id, notebook_name=a.notebook, sha256=job.sha256, status=status,
            reason=reason, auto_scores=scores, comments=comments, timestamp=job.timestamp, answers=answers,
        )
    except BaseException as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise RecordingError(f"could not record {job.student}/{a.id}: {type(e).__name__}: {sanitize(str(e), 200)}") from e
    for tmp, path in staged:
        os.replace(tmp, path)
    return score, status


def _manual_answers(executed_nb, manual: list[str]) -> dict[str, str]:
    """sha256 of the student's answer in each hand-graded cell (to flag changed answers)."""
    out = {}
    for gid in manual:
        src = next((c.source for c in executed_nb.cells
                    if (c.get("metadata", {}).get("nbgrader") or {}).get("grade_id") == gid), "")
        out[gid] = hashlib.sha256(str(src).encode()).hexdigest()
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
) -> Summary:
    """Grade every new or changed submission (see docs/grading.md).

    Raises `GradingError` (one line for a person) on bad input, when another grader holds
    the course, when no Dask worker joins `scheduler` within `worker_wait` seconds, and
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
    lock = _lock_course(course)
    from .gradebook import export_csv, export_lms_csv, graded_hash, open_gradebook, sync_assignment

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
    client = cluster = None
    worker_pids: list[int] = []
    try:
        plans = []
        for aid in ids:
            a = reg[aid]
            source_nb, source_text = _load_source(source_root, a)
            _validate_parts(a, source_nb)
            max_score = sync_assignment(gb, a.id, a.notebook, source_nb)
            reference, ref_key = cached_reference(a, course)
            fp = _fingerprint(a, source_nb, ref_key)
            jobs = discover(course, a, fp, students, limits)
            todo = []
            for j in jobs:
                prev = graded_hash(gb, j.student, a.id)
                if not force and prev and prev[0] == j.sha256 and prev[1] in ("ok", "invalid"):
                    summary.skipped.append((j.student, a.id))
                else:
                    todo.append(j)
            if not todo:
                plans.append((a, source_nb, max_score, None, None, todo))
                continue
            inputs_json = json.dumps(a.inputs(), allow_nan=False)
            if warm_cache:
                _warm_cache(a, source_text, inputs_json, cache, limits)
            plans.append((a, source_nb, max_score, reference, inputs_json, todo))
        total = sum(len(p[-1]) for p in plans)
        if summary.skipped:
            echo(f"{len(summary.skipped)} submission(s) already graded (unchanged); skipping them.")
        # one thread per submission unless it may use two cores or more: XLA's and BLAS's
        # thread pools under a one-core CPU quota only get throttled (3x slower per notebook)
        base_cfg = {"jax_cache": str(cache), "single_thread": not serial or limits.cpus < 2}
        cfgs = {p[0].id: {**base_cfg, "hide": list(p[0].sandbox_hide)} for p in plans}
        limits_d = asdict(limits)
        bar = None
        if progress and total:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="autograde", unit="nb", file=sys.stderr)

        def done(a, source_nb, max_score, reference, job, result, err):
            # A RecordingError (disk full, read-only course) stops the whole run.
            score, status = _finish(course, gb, a, source_nb, max_score, reference, job, result, err)
            summary.graded.append((job.student, a.id, score, status))
            if bar:
                bar.update(1)

        runnable = [(p, j) for p in plans for j in p[-1] if j.reason is None]
        for p in plans:  # bad submissions: zero with the reason, no sandbox needed
            for j in p[-1]:
                if j.reason is not None:
                    done(p[0], p[1], p[2], p[3], j, None, None)
        def grade_here(plan, j):
            a, inputs_json = plan[0], plan[4]
            try:
                res, err = run_submission(j.nb_text, [(q.grade_id, q.code) for q in a.parts], inputs_json, limits_d, cfgs[a.id]), None
            except Exception as e:  # infrastructure failure: recorded, retried next run
                res, err = None, f"{type(e).__name__}: {str(e)[:200]}"
            done(plan[0], plan[1], plan[2], plan[3], j, res, err)

        if serial or not runnable:
            for plan, j in runnable:
                grade_here(plan, j)
        else:
            from distributed import Client, LocalCluster, as_completed

            if scheduler:
                try:
                    client = Client(scheduler, timeout=f"{max(1, int(worker_wait))}s")
                except OSError as e:
                    raise GradingError(f"cannot reach the Dask scheduler at {scheduler}: {sanitize(str(e), 200)}") from None
                if not client.scheduler_info().get("workers"):
                    echo(f"waiting up to {worker_wait:.0f} s for Dask workers at {scheduler} ...")
                    try:
                        client.wait_for_workers(1, timeout=worker_wait)
                    except (TimeoutError, OSError):
                        raise GradingError(
                            f"no Dask worker joined the scheduler at {scheduler} within {worker_wait:.0f} s; start "
                            f"workers with `dask worker {scheduler} --nthreads 1` (or use --worker-wait)") from None
            else:
                n = workers or os.cpu_count() or 1
                cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=logging.ERROR, memory_limit=0,
                )
                client = Client(cluster)
                try:
                    worker_pids = list(client.run(os.getpid).values())
                except Exception:
                    worker_pids = []
            futs = {}
            for plan, j in runnable:
                a, inputs_json = plan[0], plan[4]
                f = client.submit(
                    run_submission, j.nb_text, [(q.grade_id, q.code) for q in a.parts], inputs_json,
                    limits_d, cfgs[a.id], pure=False, key=f"grade-{a.id}-{len(futs)}-{j.sha256[:12]}",
                )
                futs[f] = (plan, j)
            for f in as_completed(futs, loop=client.loop):
                plan, j = futs.pop(f)
                try:
                    res, err = f.result(), None
                except Exception as e:
                    res, err = None, f"{type(e).__name__}: {str(e)[:200]}"
                f.release()
                done(plan[0], plan[1], plan[2], plan[3], j, res, err)
        if bar:
            bar.close()
        summary.csv = course / "grades.csv"
        export_csv(gb, summary.csv)
        export_lms_csv(gb, course)
    finally:
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=5)
            except Exception:
                pass
            _wait_gone(worker_pids, 10.0)
        gb.close()
        # local workers are gone: their sandboxes, cgroups and scratch mounts with them
        CGroup.cleanup_stale()
        cleanup_stale_scratch()
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
