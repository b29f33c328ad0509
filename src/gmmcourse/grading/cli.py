"""``python -m gmmcourse.grading autograde [ASSIGNMENT ...] [--course grading] ...``"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of `Limits` (``--cell-timeout``, ``--memory-bytes``, ...)."""
    from dataclasses import fields

    from .sandbox import Limits

    g = parser.add_argument_group("limits per submission (defaults: gmmcourse.grading.sandbox.Limits)")
    for f in fields(Limits):
        if isinstance(f.default, bool):  # a switch: --allow-unlimited
            g.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", default=None, dest=f"limit_{f.name}",
                           help="grade even where a limit cannot be applied (a trusted class only; the run says which)")
            continue
        g.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None, metavar="N",
                       dest=f"limit_{f.name}", help=f"default {f.default}")
    g.add_argument("--memory-mb", type=int, default=None, help="memory cap in MiB (same as --memory-bytes)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gmmcourse.grading", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("autograde", help="grade submissions into the nbgrader gradebook")
    a.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="assignment ids (default: all with submissions)")
    a.add_argument("--course", default="grading", help="nbgrader course root (default: grading)")
    a.add_argument("--source", default=None, help="source notebooks root (default: <course>/../solutions)")
    a.add_argument("--workers", type=int, default=None, help="local Dask workers (default: CPU count)")
    a.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tls://host:8786")
    a.add_argument("--worker-wait", type=float, default=60.0, metavar="S",
                   help="with --scheduler: seconds to wait for a worker to join (default 60)")
    t = a.add_argument_group("a real Dask cluster (docs/grading.md, \"A real cluster\")")
    t.add_argument("--tls-ca", default=None, metavar="PEM", help="CA certificate of the cluster")
    t.add_argument("--tls-cert", default=None, metavar="PEM", help="this grader's client certificate")
    t.add_argument("--tls-key", default=None, metavar="PEM", help="this grader's client key")
    t.add_argument("--trusted-network", action="store_true",
                   help="allow a plain tcp:// scheduler (only where nobody but the graders can reach it)")
    a.add_argument("--serial", action="store_true", help="grade one by one in this process (no Dask)")
    a.add_argument("--student", action="append", default=None, help="only this student (repeatable)")
    a.add_argument("--force", action="store_true", help="regrade even unchanged, already graded submissions")
    a.add_argument("--registry", default=None, help="MODULE:ATTR of the assignments dict (default: gmmcourse.grading.assignments:ASSIGNMENTS)")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--no-warm", action="store_true", help="do not warm the JAX compilation cache first")
    z = a.add_argument_group("submissions from an LMS (docs/grading.md)")
    z.add_argument("--zip", default=None, metavar="FILE",
                   help="first import this zip downloaded from an LMS into submitted/ (one ASSIGNMENT)")
    z.add_argument("--roster", default=None, metavar="CSV", help="with --zip: student_id,lms_user_id,name,... "
                   "(default: the gradebook's students)")
    z.add_argument("--lms", default="auto", choices=("auto", "canvas", "moodle", "zipcollect", "submitted"),
                   help="with --zip: the file-name convention (default: auto)")
    z.add_argument("--regexp", default=None, help="with --zip: nbgrader zip_collect named_regexp "
                   "((?P<student_id>...), (?P<file_id>...), optional (?P<timestamp>...))")
    z.add_argument("--import-only", action="store_true", help="with --zip: import, do not grade")
    _limit_options(a)
    f = sub.add_parser("feedback", help="add the grades and comments written in formgrader to the students' "
                                        "feedback pages (no regrading); run before handing feedback back")
    f.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="assignment ids (default: all)")
    f.add_argument("--course", default="grading", help="nbgrader course root (default: grading)")
    f.add_argument("--registry", default=None, help="MODULE:ATTR of the assignments dict")
    return p


def _feedback(args) -> int:
    from .engine import GradingError, RecordingError, update_feedback

    try:
        update_feedback(args.assignments or None, args.course, registry=args.registry,
                        echo=lambda s: print(s, file=sys.stderr))
    except RecordingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except GradingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "feedback":
        return _feedback(args)
    from .engine import GradingError, RecordingError, autograde
    from .runners import TLSFiles, skip_unused_iri_checker
    from .sandbox import Limits

    skip_unused_iri_checker()

    kw = {k[len("limit_"):]: v for k, v in vars(args).items() if k.startswith("limit_") and v is not None}
    if args.memory_mb:
        kw["memory_bytes"] = args.memory_mb << 20
    imported = 0
    if args.zip:
        imported = _import_zip(args)
        if imported == 2 or args.import_only:
            return imported
    try:
        s = autograde(
            args.assignments or None,
            args.course,
            workers=args.workers,
            scheduler=args.scheduler,
            serial=args.serial,
            registry=args.registry,
            source_root=args.source,
            students=args.student,
            limits=Limits(**kw),
            force=args.force,
            progress=not args.no_progress,
            warm_cache=not args.no_warm,
            worker_wait=args.worker_wait,
            tls=TLSFiles(args.tls_ca, args.tls_cert, args.tls_key),
            trusted_network=args.trusted_network,
        )
    except RecordingError as e:
        print(f"error: {e}; grading stopped (what was recorded before is intact; re-run to resume)", file=sys.stderr)
        return 1
    except GradingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; graded submissions are saved, re-run to resume", file=sys.stderr)
        return 130
    bad = [g for g in s.graded if g[3] != "ok"]
    print(
        f"graded {len(s.graded)} submission(s) ({len(bad)} with problems), skipped {len(s.skipped)} unchanged, "
        f"in {s.seconds:.1f} s; grades: {s.csv}",
        file=sys.stderr,
    )
    for student, asg, score, status in bad:
        why = s.problems.get((student, asg), "infrastructure error")
        what = f"not graded ({why}; retried on the next run)" if status == "error" else status
        print(f"  {ascii(student)[1:-1]}/{asg}: {what}", file=sys.stderr)
    return 1 if any(g[3] == "error" for g in s.graded) else imported


def _import_zip(args) -> int:
    """``--zip``: the LMS zip into ``submitted/`` (gmmcourse.grading.lms); 0, 1 or 2."""
    from .engine import GradingError, load_registry
    from .lms import import_zip

    try:
        if len(args.assignments) != 1:
            raise GradingError("--zip needs exactly one ASSIGNMENT: the one the LMS zip holds")
        reg = load_registry(args.registry)
        if args.assignments[0] not in reg:
            raise GradingError(f"unknown assignment {args.assignments[0]!r}; known assignments: {', '.join(sorted(reg))}")
        report = import_zip(args.zip, args.course, reg[args.assignments[0]], roster=args.roster, lms=args.lms,
                            regexp=args.regexp)
    except GradingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return report.exit_code
