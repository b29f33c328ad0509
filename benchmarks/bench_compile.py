"""Compile once: shape buckets against per-shape compilation, and cold/warm model selection.

Every measurement runs in a fresh Python process (timed after the imports), either without
any persistent compilation cache or with a private cache filled by an earlier process:

* `sizes`: `posterior(x, 2)` (with its EM pivot) on 10 data sizes from 20 to 2,000 points, in
  one process, with the package's buckets and with per-shape compilation (the same kernels,
  `gmmcourse.shapes.bucket_size` patched to the identity and EM's padding to none), and with the package as it was
  when the compile-once issue was filed (`ISSUE_BASELINE`, taken from git history: one
  program per size, XLA's default optimisation, JAX's Gamma sampler), the issue's baseline.
* `selection`: `bic_table(coffee, 5)` and `loo_table(coffee, 5)`, cold (no cache) and with a
  warm persistent cache.
* `resize`: after a first `posterior` on coffee, the same call with other num_samples,
  num_warmup and num_chains (a student editing the sampler call) and on other data sizes in
  the bucket: seconds, and programs lowered (0 = nothing compiled).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import write

SIZES = [20, 30, 50, 80, 130, 220, 360, 600, 1000, 2000]

SIZES_CODE = """
import json, sys, time
import numpy as np
import gmmcourse
if {per_shape}:
    import importlib
    import gmmcourse.shapes
    gmmcourse.shapes.bucket_size = lambda n: int(n)
    em_module = importlib.import_module("gmmcourse.em")  # EM pads small data to one size: to N here
    em_module.pad = lambda x, dtype, size=None: gmmcourse.shapes.pad(x, dtype)
from gmmcourse import posterior
rng = np.random.default_rng(0)
times = []
t0 = time.perf_counter()
for n in {sizes}:
    x = np.where(rng.random(n) < 0.4, rng.normal(-2, 0.7, n), rng.normal(2, 1, n))
    t = time.perf_counter()
    posterior(x, 2, num_chains=4, num_samples=1000, seed=0)
    times.append(time.perf_counter() - t)
print("RESULT", json.dumps({{"total_s": time.perf_counter() - t0, "per_call_s": times, "package": gmmcourse.__file__}}))
"""

ISSUE_BASELINE = "f08aa68^"
"""The package when the compile-once issue was filed (the commit before shape buckets): one
program per data size, XLA's default optimisation, `jax.random.gamma`."""

SELECTION_CODE = """
import json, time
from gmmcourse import COFFEE_CAFFEINE
from gmmcourse.selection import bic_table, loo_table
out = {}
t = time.perf_counter(); bic_table(COFFEE_CAFFEINE, 5); out["bic_table_s"] = time.perf_counter() - t
t = time.perf_counter(); loo_table(COFFEE_CAFFEINE, 5); out["loo_table_s"] = time.perf_counter() - t
t = time.perf_counter(); bic_table(COFFEE_CAFFEINE, 5); out["bic_table_again_s"] = time.perf_counter() - t
t = time.perf_counter(); loo_table(COFFEE_CAFFEINE, 5); out["loo_table_again_s"] = time.perf_counter() - t
print("RESULT", json.dumps(out))
"""

RESIZE_CODE = """
import json, time
import jax
import numpy as np
from jax._src import dispatch
from gmmcourse import COFFEE_CAFFEINE, COFFEE_PRIOR, posterior
count = {"n": 0}
def listener(event, duration, **kw):
    if event == dispatch.JAXPR_TO_MLIR_MODULE_EVENT:
        count["n"] += 1
jax.monitoring.register_event_duration_secs_listener(listener)
out = {}
def timed(name, x, **kw):
    n0 = count["n"]; t = time.perf_counter()
    posterior(x, 3, prior=COFFEE_PRIOR, seed=0, **kw)
    out[name] = {"s": time.perf_counter() - t, "programs_lowered": count["n"] - n0}
timed("first: coffee, 4 chains x 1000", COFFEE_CAFFEINE, num_chains=4, num_samples=1000)
timed("again: same call", COFFEE_CAFFEINE, num_chains=4, num_samples=1000)
timed("num_samples=2500, num_warmup=500", COFFEE_CAFFEINE, num_chains=4, num_samples=2500, num_warmup=500)
timed("num_chains=8", COFFEE_CAFFEINE, num_chains=8, num_samples=1000)
timed("num_chains=2, num_samples=300", COFFEE_CAFFEINE, num_chains=2, num_samples=300)
timed("first 25 points", COFFEE_CAFFEINE[:25], num_chains=4, num_samples=1000)
print("RESULT", json.dumps(out))
"""


def fresh(code: str, cache: str | None = None, pythonpath: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.split("RESULT", 1)[1])


def issue_baseline() -> dict | None:
    """The 10 sizes with the package as it was when the issue was filed (from git history;
    None where the checkout has no history)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            archive = subprocess.run(["git", "-C", str(root), "archive", ISSUE_BASELINE, "src/gmmcourse"],
                                     capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(tmp, filter="data")
        out = fresh(SIZES_CODE.format(per_shape=False, sizes=SIZES), pythonpath=str(Path(tmp) / "src"))
        if not out["package"].startswith(tmp):
            raise RuntimeError(f"the baseline imported {out['package']}, not the archived package")
        out["commit"] = ISSUE_BASELINE
        return out


def main() -> dict:
    bucketed = fresh(SIZES_CODE.format(per_shape=False, sizes=SIZES))
    per_shape = fresh(SIZES_CODE.format(per_shape=True, sizes=SIZES))
    before = issue_baseline()
    selection_cold = fresh(SELECTION_CODE)
    with tempfile.TemporaryDirectory() as cache:
        fresh(SELECTION_CODE, cache)  # fills the cache
        selection_warm_cache = fresh(SELECTION_CODE, cache)
    resize = fresh(RESIZE_CODE)
    result = {
        "sizes": {"n": SIZES, "call": "posterior(x, 2, num_chains=4, num_samples=1000), fresh process, no cache",
                  "bucketed": bucketed, "per_shape_compilation": per_shape,
                  "speedup": per_shape["total_s"] / bucketed["total_s"],
                  "issue_baseline": before,
                  "speedup_vs_issue_baseline": before and before["total_s"] / bucketed["total_s"]},
        "selection_coffee_k5": {"cold_no_cache": selection_cold, "warm_persistent_cache": selection_warm_cache},
        "resize_sampler_call": resize,
        "goal": "sizes speedup >= 5 (against the package when the issue was filed: issue_baseline); bic_table < 2 s and loo_table < 5 s with a warm persistent cache",
    }
    write("compile", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
