"""Import + first-call time, with a cold and a warm JAX persistent compilation cache."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from common import write

SNIPPET = """
import time; t0 = time.perf_counter()
import genjax, gmmcourse
t1 = time.perf_counter()
from gmmcourse import COFFEE_CAFFEINE, COFFEE_PRIOR, posterior
posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=4, num_samples=500)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def run(env):
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    imp, first = map(float, out.stdout.split()[-2:])
    return {"import_s": imp, "first_call_s": first}


def main() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        no_cache = run({k: v for k, v in env.items() if k != "JAX_COMPILATION_CACHE_DIR"})
        cold = run(env)
        warm = run(env)
    result = {"no_cache": no_cache, "cache_cold": cold, "cache_warm": warm,
              "first_call_speedup_with_warm_cache": no_cache["first_call_s"] / warm["first_call_s"]}
    write("startup", result)
    return result


if __name__ == "__main__":
    print(main())
