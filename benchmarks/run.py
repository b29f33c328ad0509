"""Run every benchmark (make bench); each writes benchmarks/results/<name>.json, then the
README's performance table is regenerated from the results (benchmarks/report.py).

    python benchmarks/run.py            # all
    python benchmarks/run.py em sampler # some
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ALL = ["em", "mvn", "sampler", "kernel", "dpmm", "compile", "startup", "book", "grading", "false_fail", "dpmm_probes"]
MODULES = {"em": "bench_em", "mvn": "bench_mvn", "sampler": "bench_sampler", "kernel": "bench_kernel", "dpmm": "bench_dpmm", "compile": "bench_compile", "startup": "bench_startup", "book": "bench_book",
           "grading": "bench_grading", "false_fail": "false_fail", "dpmm_probes": "dpmm_probe_rates"}


def main(names):
    failed = []
    for name in names or ALL:
        path = Path(__file__).resolve().parent / f"{MODULES[name]}.py"
        if not path.exists():
            print(f"[{name}] skipped: {path.name} does not exist")
            continue
        t = time.perf_counter()
        print(f"[{name}] running {path.name} ...", flush=True)
        # each benchmark in its own process: clean JAX state, honest cold starts
        if subprocess.run([sys.executable, str(path)]).returncode != 0:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"[{name}] FAILED")
        print(f"[{name}] {time.perf_counter() - t:.1f} s")
    # the README's table is regenerated from whatever results exist now
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "report.py")])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
