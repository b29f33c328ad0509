"""Shared helpers for the benchmarks: timing, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_IMPORT = [round(v, 2) for v in os.getloadavg()]  # the benchmark's start, as near as a module can see it


def machine() -> dict:
    """Where the numbers were measured."""
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
            "jax": jax.__version__, "python": platform.python_version()}


def commit() -> str:
    """The commit the numbers were measured on, with "+changes" when the tree differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        # the results and the blocks report.py writes are outputs of the benchmarks, not their code
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)README.md", ":(exclude)docs/grading.md"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


COMMIT_AT_IMPORT = commit()  # what the benchmark runs: a pull during a long run must not rename it


def alternate(fns: dict, rounds: int = 41) -> dict:
    """Time each of `fns` (name -> zero-argument callable) once per round, in turn, `rounds` times.

    Load on a shared machine changes from second to second; timing the sides one after the
    other within each round exposes them to the same load, and the ratio of each round's pair
    is what is summarised (median and spread), not the ratio of two separate best times.
    Returns, per name, the median and quartiles of its times, and per name after the first,
    the median, quartiles and extremes of its per-round ratio to the first; `times_s` holds
    every round's times (name -> list), for ratios of other shapes."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]  # neither side always runs first
        for n in order:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    out = {"rounds": rounds, "times_s": times}
    base = names[0]
    for n in names:
        q = statistics.quantiles(times[n], n=4)
        out[n] = {"median_s": statistics.median(times[n]), "q1_s": q[0], "q3_s": q[2]}
    for n in names[1:]:
        out[f"{n}_over_{base}"] = spread([a / b for a, b in zip(times[n], times[base])])
    return out


def spread(values: list[float]) -> dict:
    """Median, quartiles and extremes of per-round ratios."""
    q = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "min": min(values), "max": max(values)}


def best_time(fn, repeat: int = 5) -> float:
    """Minimum wall time over `repeat` calls (seconds): the least noisy estimate."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def load() -> list[float]:
    """The machine's load averages over 1, 5 and 15 minutes."""
    return [round(v, 2) for v in os.getloadavg()]


def write(name: str, payload: dict, to: Path | None = None) -> Path:
    """The one way a benchmark writes `results/<name>.json`: its figures, with the run's commit
    ("+changes" when a tracked file differed from it), machine (CPU, cores, JAX device, JAX and
    Python versions), date (UTC) and the load averages at the benchmark's start and end (a
    benchmark that times phases may give its own `load_start`). `to`: another folder (a smoke
    run's, never committed) instead of `results/`."""
    folder = to or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()) + " UTC",
               "commit": COMMIT_AT_IMPORT, "load_start": LOAD_AT_IMPORT, "load_end": load(), **payload}
    if commit() != COMMIT_AT_IMPORT:
        payload["commit_at_write"] = commit()
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path
