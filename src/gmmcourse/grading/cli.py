"""``python -m gmmcourse.grading autograde [ASSIGNMENT ...] [--course grading] ...``"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gmmcourse.grading", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("autograde", help="grade submissions into the nbgrader gradebook")
    a.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="assignment ids (default: all with submissions)")
    a.add_argument("--course", default="grading", help="nbgrader course root (default: grading)")
    a.add_argument("--source", default=None, help="source notebooks root (default: <course>/../solutions)")
    a.add_argument("--workers", type=int, default=None, help="local Dask workers (default: CPU count)")
    a.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786")
    a.add_argument("--serial", action="store_true", help="grade one by one in this process (no Dask)")
    a.add_argument("--student", action="append", default=None, help="only this student (repeatable)")
    a.add_argument("--force", action="store_true", help="regrade even unchanged, already graded submissions")
    a.add_argument("--registry", default=None, help="MODULE:ATTR of the assignments dict (default: gmmcourse.grading.assignments:ASSIGNMENTS)")
    a.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default 60)")
    a.add_argument("--notebook-timeout", type=float, default=None, help="seconds per notebook (default 300)")
    a.add_argument("--memory-mb", type=int, default=None, help="memory cap per submission in MiB (default 2048)")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--no-warm", action="store_true", help="do not warm the JAX compilation cache first")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .engine import GradingError, autograde
    from .sandbox import Limits

    kw = {}
    if args.cell_timeout:
        kw["cell_timeout"] = args.cell_timeout
    if args.notebook_timeout:
        kw["notebook_timeout"] = args.notebook_timeout
    if args.memory_mb:
        kw["memory_bytes"] = args.memory_mb << 20
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
        )
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
        print(f"  {student}/{asg}: {status} (see the gradebook / feedback)", file=sys.stderr)
    return 1 if any(g[3] == "error" for g in s.graded) else 0
