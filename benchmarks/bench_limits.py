"""What docs/grading.md states about the grader's limits, measured; writes results/limits.json.

    python benchmarks/bench_limits.py             # the real run (about 10 min on 2 idle cores)
    python benchmarks/bench_limits.py --smoke DIR # a quick check that it works: DIR/limits.json

* styles: the coffee notebook's Gibbs sampler written as students write it, on one core
  (the process pinned, as a sandbox's one-core quota allows): the solution's vectorised numpy
  sampler at the minimum draws asked, 4 chains x (1000 + 500) sweeps, timed whole; per-cup
  Python loops (`corpus.coffee_blends.loop_updates`, and the same with scipy's `norm.logpdf`
  for every cup and component, the slowest style we know) timed at `--loop-sweeps` sweeps and
  scaled linearly to 1500 (their cost per sweep is constant: the same loops each sweep);
* R-hat: the largest split R-hat (`checks.split_rhat`) of the solution's sampler at the
  minimum draws, over `--rhat-seeds` seeds: what a correct sampler shows against `RHAT_MAX`;
* throttle: a JAX notebook cell (the coffee `posterior` call, compiled without a cache, then
  `--matmuls` jitted 1024 x 1024 float32 products) in the real sandbox under the default quota, with the thread pools cut to one thread
  (`SandboxConfig.single_thread`, what the grader does) and without, alternated `--rounds`
  times; the cell's own clocks (wall, and the CPU time the time limits count);
* flood: growth of the grading process's peak RSS while a sandboxed notebook publishes
  `--flood-mb` 1 MB outputs, against `channels.queued_bytes_bound` at the default message cap.

The warm-up figures docs/grading.md states come from startup.json and compile.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "hostile"))  # toy: the toy assignment the throttle and flood notebooks extend

import numpy as np  # noqa: E402

import common  # noqa: E402
from corpus.coffee_blends import loop_updates, sampler_namespace  # noqa: E402

MIN_CHAINS, MIN_SAMPLES, MIN_WARMUP = 4, 1000, 500  # the minimum draws every coffee notebook asks


def scipy_loop_updates(ns):
    """`loop_updates` with `sample_z` calling scipy's `norm.logpdf` for every chain, cup and component."""
    from scipy.stats import norm

    loop_updates(ns, log_density=norm.logpdf)


def _gibbs(ns, samples, warmup, seed=0):
    return ns["run_gibbs"](ns["CAFFEINE"], 3, 125.0, 37.5, num_chains=MIN_CHAINS, num_samples=samples,
                           num_warmup=warmup, seed=seed)


def styles(loop_sweeps: int, rhat_seeds: int) -> dict:
    """Sampler styles' times on one pinned core, and the solution's R-hat at the minimum draws."""
    from gmmcourse.grading.checks import split_rhat

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # one core, like the sandbox's default quota
    try:
        out: dict = {"chains": MIN_CHAINS, "samples": MIN_SAMPLES, "warmup": MIN_WARMUP}
        sol = sampler_namespace()
        t = time.perf_counter()
        _gibbs(sol, MIN_SAMPLES, MIN_WARMUP)
        out["vectorised_s"] = time.perf_counter() - t
        sweeps = MIN_SAMPLES + MIN_WARMUP
        samples, warmup = math.ceil(loop_sweeps * 2 / 3), loop_sweeps - math.ceil(loop_sweeps * 2 / 3)
        for name, patch in (("math_loop", loop_updates), ("scipy_loop", scipy_loop_updates)):
            ns = sampler_namespace()
            patch(ns)
            t = time.perf_counter()
            _gibbs(ns, samples, warmup)
            took = time.perf_counter() - t
            out[name] = {"sweeps_timed": samples + warmup, "timed_s": took,
                         "at_minimum_s": took * sweeps / (samples + warmup)}
        worst = []
        for seed in range(rhat_seeds):
            draws, _ = _gibbs(sol, MIN_SAMPLES, MIN_WARMUP, seed=seed)
            worst.append(max(float(np.max(split_rhat(v))) for v in draws.values()))
        out["rhat"] = {"seeds": rhat_seeds, "max": max(worst), "median": statistics.median(worst)}
        return out
    finally:
        os.sched_setaffinity(0, before)


THROTTLE_CELL = textwrap.dedent("""\
    import time
    t0, c0 = time.perf_counter(), time.process_time()
    import jax, jax.numpy as jnp
    from gmmcourse import COFFEE_CAFFEINE, COFFEE_PRIOR, posterior
    posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=4, num_samples=1000)
    f = jax.jit(lambda a: (a @ a) / 1024.0)
    a = jnp.ones((1024, 1024), jnp.float32)
    for _ in range({matmuls}):
        a = f(a).block_until_ready()
    print('CELL_S', time.perf_counter() - t0, time.process_time() - c0)
    """)


def throttle(matmuls: int, rounds: int) -> dict:
    """The JAX cell's seconds in the sandbox under the default quota, thread pools cut or not."""
    import nbformat

    import toy
    from gmmcourse.grading.executor import run_submission
    from gmmcourse.grading.sandbox import Limits

    limits = Limits()
    nb = nbformat.writes(toy.notebook(extra_before=[THROTTLE_CELL.format(matmuls=matmuls)]))
    exports = [(p.grade_id, p.code) for p in toy.TOY.parts]
    times: dict[str, list[float]] = {"single_thread": [], "default_threads": []}
    cpu: dict[str, list[float]] = {n: [] for n in times}
    for r in range(rounds):
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in order:
            res = run_submission(nb, exports, json.dumps(toy._inputs()), limits, {"single_thread": name == "single_thread"})
            text = "".join(o.get("text", "") for c in nbformat.reads(res["notebook"], 4).cells for o in c.get("outputs", []))
            m = re.search(r"CELL_S ([0-9.e+-]+) ([0-9.e+-]+)", text)
            if not m:
                raise SystemExit(f"throttle: the JAX cell printed no time ({name}): events {res['events']}")
            times[name].append(float(m.group(1)))
            cpu[name].append(float(m.group(2)))
    out = {"cpus": limits.cpus, "matmuls": matmuls, "rounds": rounds, "times_s": times, "cpu_s": cpu,
           **{f"{n}_median_s": statistics.median(v) for n, v in times.items()},
           **{f"{n}_median_cpu_s": statistics.median(v) for n, v in cpu.items()}}
    out["default_over_single"] = out["default_threads_median_s"] / out["single_thread_median_s"]
    return out


FLOOD_CHILD = textwrap.dedent("""\
    import json, resource, sys
    import nbformat, toy
    from gmmcourse.grading.executor import run_submission
    from gmmcourse.grading.sandbox import Limits
    def run(nb):
        return run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                              json.dumps(toy._inputs()), Limits(), None)
    run(toy.notebook())  # the process at its working size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run(toy.notebook(extra_before=[sys.argv[1]]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "events": res["events"]}))
    """)

FLOOD_CELL = ("from IPython.display import publish_display_data\nblock = 'x' * (1 << 20)\n"
              "for _ in range({n}):\n    publish_display_data({{'text/plain': block}})\n")


def flood(megabytes: int) -> dict:
    """Peak-RSS growth of a grading process (its own child process) under an output flood."""
    from gmmcourse.grading import channels
    from gmmcourse.grading.sandbox import Limits

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE / "hostile"), os.environ.get("PYTHONPATH", "")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    out = subprocess.run([sys.executable, "-c", FLOOD_CHILD, FLOOD_CELL.format(n=megabytes)], env=env,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"flood: the grading process failed: {out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"outputs_mb": megabytes, "growth_mib": got["growth_kib"] / 1024,
            "bound_mib": channels.queued_bytes_bound(Limits().max_message_bytes) / (1 << 20)}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", metavar="DIR", help="tiny sizes, written to DIR/limits.json (not results/)")
    ap.add_argument("--loop-sweeps", type=int, default=MIN_SAMPLES + MIN_WARMUP)
    ap.add_argument("--rhat-seeds", type=int, default=20)
    ap.add_argument("--matmuls", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flood-mb", type=int, default=600)
    a = ap.parse_args(argv)
    if a.smoke:
        a.loop_sweeps, a.rhat_seeds, a.matmuls, a.rounds, a.flood_mb = 3, 2, 2, 1, 20
    from gmmcourse.grading.sandbox import Limits

    lim = Limits()
    result = {"smoke": bool(a.smoke), "limits": {"cell_s": lim.cell_timeout, "notebook_s": lim.notebook_timeout,
                                                 "cpus": lim.cpus},
              "styles": styles(a.loop_sweeps, a.rhat_seeds), "throttle": throttle(a.matmuls, a.rounds),
              "flood": flood(a.flood_mb)}
    common.write("limits", result, to=Path(a.smoke) if a.smoke else None)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1, default=float))
