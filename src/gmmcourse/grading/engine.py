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

from .files import CourseLocked, lock_course
from .intake import Job, discover
from .reference import cached as cached_reference
from .reference import inputs_key, source_of
from .runners import (Task, TLSFiles, check_scheduler, cleanup_own, local_cluster, remote_client, run_dask, run_serial,
                      stop_processes)
from .sandbox import REPO_ROOT, CGroup, Limits, check_host, cleanup_stale_scratch, sandbox_available
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
    problems: dict[tuple[str, str], str] = field(default_factory=dict)  # (student, asg) -> why not graded


class CheckCrashed(Exception):
    """A trusted check raised: a defect of the grader, not of the answer (never a score)."""


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
    except Exception as e:  # noqa: BLE001 (checks reject malformed answers themselves: `checks.guarded`)
        raise CheckCrashed(f"the check of {part.grade_id} raised {type(e).__name__}: {sanitize(str(e), 200)}") from e
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


VERDICT_MODULES = ("gmmcourse.grading.spec", "gmmcourse.grading.checks", "gmmcourse.grading.kernel_side")
"""Modules every verdict rests on (validation, named tolerances, the kernel-side export helpers)."""


def _module_source(name: str) -> bytes:
    """The source of an imported module (its name if it has no file)."""
    f = getattr(sys.modules.get(name), "__file__", None)
    try:
        return Path(f).read_bytes() if f else name.encode()
    except OSError:
        return name.encode()


def verdict_modules(a: Assignment) -> list[str]:
    """The modules whose source decides ``a``'s verdicts: `VERDICT_MODULES`, the modules
    defining its checks, and every module of the same package those use (transitively)."""
    import types

    todo = []
    for p in a.parts:
        for f in (p.check, getattr(p.check, "__wrapped__", None), getattr(p.check, "func", None)):
            if getattr(f, "__module__", None) in sys.modules:
                todo.append(f.__module__)
    seen = set(VERDICT_MODULES)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        package = name.rpartition(".")[0]
        for v in list(vars(sys.modules[name]).values()):
            used = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
            if isinstance(used, str) and used in sys.modules and used.rpartition(".")[0] == package:
                todo.append(used)
    return sorted(seen)


def _fingerprint(a: Assignment, source_nb, reference_key: str) -> str:
    """What decides the autograded verdicts, and nothing else: the parts (ids, points, export
    code, check code), the source of every module the checks rest on (`verdict_modules`:
    shared helpers and tolerance constants included), the inputs, the reference values, the
    sandbox's hidden packages and the source notebook's grade cells (ids, points). Fixing a
    typo in the notebook's text does not regrade the class."""
    h = hashlib.sha256(ENGINE_VERSION.encode())
    for p in a.parts:
        h.update(f"{p.grade_id}\0{p.points}\0{p.code}\0{source_of(p.check)}\0".encode())
    for name in verdict_modules(a):
        h.update(name.encode() + b"\0" + hashlib.sha256(_module_source(name)).digest())
    h.update(inputs_key(a).encode())  # the generator, not this run's draw, where inputs are drawn fresh
    h.update(reference_key.encode())
    h.update(repr(a.sandbox_offers).encode())
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader") or {}
        if md.get("grade") or md.get("task"):
            h.update(f"{md.get('grade_id')}\0{md.get('points')}\0{c.cell_type}\0".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- running


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
        {"jax_cache": str(cache), "jax_cache_writable": True, "single_thread": True, "offers": a.sandbox_offers},
    )
    stamp.write_text(f"{time.monotonic() - t:.1f}s\n")


class NotGraded(Exception):
    """This submission gets no grade on this run (nothing recorded; retried on the next):
    the run goes on with the others."""


def _finish(
    course: Path, gb, a: Assignment, source_nb, max_score: float, reference: Any, job: Job, result: dict | None,
    internal_error: str | None,
) -> tuple[float, str]:
    """Checks (trusted) + feedback + autograded notebook + ONE gradebook transaction.

    Raises `NotGraded` for anything about this one submission (a sandbox failure, a check
    that crashed, a notebook whose files cannot be built), `RecordingError` when the course
    folder or the gradebook cannot be written (that stops the run)."""
    if job.reason is None and (internal_error or (result or {}).get("infra_error")):
        # Not a grade: nothing is recorded (no row, no feedback, no CSV line), the student's
        # previous grade (if any) stays, and the next run retries this submission.
        raise NotGraded(internal_error or result["infra_error"])
    try:
        files, record = _build(course, a, source_nb, max_score, reference, job, result)
    except (KeyboardInterrupt, SystemExit):
        raise
    except CheckCrashed as e:
        log.error("%s/%s: %s", job.student, a.id, e)
        raise NotGraded(f"internal error: {e}") from None
    except Exception as e:  # noqa: BLE001 (a problem of this submission's content, e.g. unencodable text)
        log.error("%s/%s: building its feedback failed", job.student, a.id, exc_info=True)
        raise NotGraded(f"its feedback or autograded notebook could not be built ({type(e).__name__}: "
                        f"{sanitize(str(e), 120)})") from None
    _record(gb, job, a, files, record)
    return record["score"], record["status"]


def _build(course: Path, a: Assignment, source_nb, max_score: float, reference: Any, job: Job,
           result: dict | None) -> tuple[dict[Path, bytes], dict]:
    """The files (UTF-8 bytes) and the gradebook row of one submission; nothing is written."""
    import nbformat

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
            pts, msg = check_part(p, result["answers"].get(p.grade_id), reference)
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


def _record(gb, job: Job, a: Assignment, files: dict[Path, bytes], row: dict) -> None:
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
        cfgs = {p[0].id: {**base_cfg, "offers": p[0].sandbox_offers} for p in plans}
        limits_d = asdict(limits)
        bar = None
        if progress and total:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="autograde", unit="nb", file=sys.stderr)

        def done(a, source_nb, max_score, reference, job, result, err):
            # A RecordingError (disk full, read-only course) stops the whole run; anything
            # about this one submission is its reported problem and the run goes on.
            try:
                score, status = _finish(course, gb, a, source_nb, max_score, reference, job, result, err)
            except NotGraded as why:
                log.warning("%s/%s not graded: %s", job.student, a.id, why)
                score, status = 0.0, "error"
                summary.problems[(job.student, a.id)] = str(why)
            summary.graded.append((job.student, a.id, score, status))
            if bar:
                bar.update(1)

        for p in plans:  # bad submissions: zero with the reason, no sandbox needed
            for j in p[-1]:
                if j.reason is not None:
                    done(p[0], p[1], p[2], p[3], j, None, None)
        tasks = [
            Task(f"grade-{p[0].id}-{i}-{j.sha256[:12]}",
                 (j.nb_text, [(q.grade_id, q.code) for q in p[0].parts], p[4], limits_d, cfgs[p[0].id]), (p, j))
            for i, (p, j) in enumerate((p, j) for p in plans for j in p[-1] if j.reason is None)
        ]

        def task_done(t: Task, res, err):
            plan, j = t.payload
            done(plan[0], plan[1], plan[2], plan[3], j, res, err)

        if serial or not tasks:
            run_serial(tasks, task_done)
        elif scheduler:
            with remote_client(scheduler, tls or TLSFiles(), trusted_network=trusted_network,
                               worker_wait=worker_wait, echo=echo) as client:
                run_dask(client, tasks, task_done)
        else:
            with local_cluster(workers or os.cpu_count() or 1) as (client, _):
                run_dask(client, tasks, task_done)
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
