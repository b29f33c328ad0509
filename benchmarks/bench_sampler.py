"""Posterior sampler on coffee: min-ESS per second against NumPyro NUTS (same model).
(The GenJAX kernel against the same kernel in plain JAX: bench_kernel.py.)"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from common import alternate, spread, write
from gmmcourse.data import COFFEE_CAFFEINE
from gmmcourse.gibbs import posterior
from gmmcourse.models import COFFEE_PRIOR
from gmmcourse.sweep import permutations, relabel

CHAINS, SAMPLES, WARMUP = 4, 1000, 200


def min_ess(weights, means, sds) -> float:
    import arviz as az

    dt = az.from_dict({"posterior": {"weights": weights, "means": means, "sds": sds}})
    table = az.summary(dt, round_to="none")
    return float(min(table["ess_bulk"].min(), table["ess_tail"].min()))


def gibbs_run():
    return posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=CHAINS, num_samples=SAMPLES, num_warmup=WARMUP, seed=1)


def numpyro_run(seed=0):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model(x):
        w = numpyro.sample("weights", dist.Dirichlet(jnp.ones(3)))
        with numpyro.plate("k", 3):
            mu = numpyro.sample("means", dist.Normal(125.0, 37.5))
            sd = numpyro.sample("sds", dist.Gamma(2.0, 1.0))
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(mu, sd)), obs=x)

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=SAMPLES, num_chains=CHAINS, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), jnp.asarray(COFFEE_CAFFEINE, jnp.float32))
    s = mcmc.get_samples(group_by_chain=True)
    return tuple(np.asarray(s[a]) for a in ("weights", "means", "sds"))


def relabel_draws(draws, pivot):
    """The package's relabelling applied to NumPyro's draws (same pivot)."""
    w, m, s = draws
    perms = jnp.asarray(permutations(3))
    perm = jax.vmap(jax.vmap(lambda mm: relabel(mm, jnp.asarray(pivot.means, jnp.float32), jnp.asarray(pivot.sds, jnp.float32), perms)))(jnp.asarray(m))
    take = lambda a: np.take_along_axis(a, np.asarray(perm), axis=-1)
    return take(w), take(m), take(s)


COLD = """
import sys, time
sys.path.insert(0, {here!r})
import bench_sampler as b
t = time.perf_counter(); b.{fn}(); print("SECONDS", time.perf_counter() - t)
"""


def cold_without_cache(fn: str) -> float:
    """Seconds of the first call of `fn` in a fresh process with no JAX compilation cache."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    code = COLD.format(here=str(Path(__file__).resolve().parent), fn=fn)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split("SECONDS")[-1])


def main(rounds: int = 5, cold_rounds: int = 3) -> dict:
    # cold = first call in this process, compile included, with the persistent compilation
    # cache of the environment (warm after a first run): one timing each, by its nature;
    # `cold_without_compilation_cache` below measures the same in fresh processes with no
    # cache at all, the two alternated `cold_rounds` times
    t = time.perf_counter(); post = gibbs_run(); gibbs_cold = time.perf_counter() - t
    ess_gibbs = min_ess(post.weights, post.means, post.sds)
    t = time.perf_counter(); draws = numpyro_run(); nuts_cold = time.perf_counter() - t
    ess_nuts = min_ess(*relabel_draws(draws, post.pivot))

    # warm: the two samplers alternated in this process; per-round ratio of min-ESS per second
    warm = alternate({"gibbs": gibbs_run, "numpyro_nuts": lambda: numpyro_run(1)}, rounds)
    tw = warm.pop("times_s")
    speedup_warm = spread([(ess_gibbs / g) / (ess_nuts / n) for g, n in zip(tw["gibbs"], tw["numpyro_nuts"])])
    gibbs_warm, nuts_warm = warm["gibbs"]["median_s"], warm["numpyro_nuts"]["median_s"]

    # each fresh process reports its own call's seconds (after its imports): those are kept
    cold_times: dict[str, list[float]] = {"gibbs": [], "numpyro_nuts": []}
    alternate({name: (lambda name=name, fn=fn: cold_times[name].append(cold_without_cache(fn)))
               for name, fn in (("gibbs", "gibbs_run"), ("numpyro_nuts", "numpyro_run"))}, cold_rounds)
    gibbs_nocache = float(np.median(cold_times["gibbs"]))
    nuts_nocache = float(np.median(cold_times["numpyro_nuts"]))
    speedup_nocache = spread([(ess_gibbs / g) / (ess_nuts / n) for g, n in zip(cold_times["gibbs"], cold_times["numpyro_nuts"])])

    result = {
        "data": "coffee (N=30, K=3)",
        "cold_without_compilation_cache": {
            "gibbs_s": gibbs_nocache, "numpyro_nuts_s": nuts_nocache, "times_s": cold_times,
            "speedup": speedup_nocache["median"], "speedup_spread": speedup_nocache,
        }, "chains": CHAINS, "samples_per_chain": SAMPLES,
        "gibbs": {"cold_s": gibbs_cold, "warm_s": gibbs_warm, "min_ess": ess_gibbs,
                  "min_ess_per_s_warm": ess_gibbs / gibbs_warm, "min_ess_per_s_cold": ess_gibbs / gibbs_cold},
        "numpyro_nuts": {"cold_s": nuts_cold, "warm_s": nuts_warm, "min_ess": ess_nuts,
                         "min_ess_per_s_warm": ess_nuts / nuts_warm, "min_ess_per_s_cold": ess_nuts / nuts_cold},
        "warm_alternated": {**warm, "times_s": tw},
        "speedup_warm": speedup_warm["median"], "speedup_warm_spread": speedup_warm,
        "speedup_cold": (ess_gibbs / gibbs_cold) / (ess_nuts / nuts_cold),
        "basis": (f"warm: the two alternated {rounds} times in one process, median of the per-round ratio of "
                  f"min-ESS/s (min-ESS of each sampler's first run); no cache: fresh processes alternated "
                  f"{cold_rounds} times; cold with the cache: one first call each"),
        "goal": "speedup_warm >= 30, speedup_cold >= 2",
    }
    write("sampler", result)
    return result


if __name__ == "__main__":  # python benchmarks/bench_sampler.py [rounds] [cold_rounds]
    import sys

    print(main(*(int(a) for a in sys.argv[1:3])))
