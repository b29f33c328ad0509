"""Run the benchmarks (make bench); each writes benchmarks/results/<name>.json through
`common.write` (commit, machine, date, load averages), then the README's performance table
and docs/grading.md's figures are regenerated from the results (benchmarks/report.py).

    python benchmarks/run.py            # all of BENCHMARKS, in order (about 90 min on a quiet 2-core machine)
    python benchmarks/run.py em sampler # some
    python benchmarks/run.py --fast     # all but the slow statistical ones

Every committed file in benchmarks/results/ is written by one entry of `BENCHMARKS`
(tests/test_figures.py checks it), except `results/gpu/`, which `benchmarks/gpu_check.sh`
writes on a machine with an NVIDIA GPU (this one has none).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, its arguments, the result files it writes)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "em": ("bench_em.py", [], ["em.json"]),
    "sampler": ("bench_sampler.py", [], ["sampler.json"]),
    "compile": ("bench_compile.py", [], ["compile.json"]),
    "startup": ("bench_startup.py", [], ["startup.json"]),
    "sanitise": ("bench_sanitise.py", [], ["sanitise.json"]),
    "kernel": ("bench_kernel.py", [], ["kernel.json"]),
    "mvn": ("bench_mvn.py", [], ["mvn.json"]),
    "dpmm": ("bench_dpmm.py", [], ["dpmm.json"]),
    "limits": ("bench_limits.py", [], ["limits.json"]),  # styles, R-hat, throttling, flood memory: about 10 min
    "grading_ctrl_c": ("bench_grading.py", ["--ctrl-c-only"], ["grading_ctrl_c.json"]),
    "grading": ("bench_grading.py", [], ["grading.json"]),  # 150 submissions of coffee_blends: about 40 min
    "book": ("bench_book.py", [], ["book.json"]),
    "false_fail": ("false_fail.py", [], ["false_fail.json"]),
    "probe_rates": ("probe_rates.py", [], ["probe_rates.json"]),
    "dpmm_probes": ("dpmm_probe_rates.py", ["all"], ["dpmm_probe_rates.json", "dpmm_posterior_rates.json"]),
}
SLOW = {"false_fail", "probe_rates", "dpmm_probes"}  # statistical rates: 5-10 min each on 2 quiet cores


def main(argv: list[str]) -> int:
    fast = "--fast" in argv
    names = [a for a in argv if a != "--fast"] or [n for n in BENCHMARKS if not (fast and n in SLOW)]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        script, args, _ = BENCHMARKS[name]
        t = time.perf_counter()
        print(f"[{name}] running {script} {' '.join(args)} ...", flush=True)
        # each benchmark in its own process: clean JAX state, honest cold starts
        if subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"[{name}] FAILED")
        print(f"[{name}] {time.perf_counter() - t:.1f} s", flush=True)
    # the README's table and the grading doc's figures are regenerated from the results now
    subprocess.run([sys.executable, str(HERE / "report.py")])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
