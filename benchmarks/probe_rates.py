"""False-fail rate and power of the coffee_blends function probes (issue 25).

The grader calls the student's `sample_z`, `sample_weights` and `sample_means` once, with one
fixed seed, on a probe state of its own (`coffee_blends.update_inputs`; sample_z also on a state
where every density underflows) and tests their draws against the exact conditionals
(`coffee_blends.probe_verdict`). Here the same export and the same test run with many seeds:

* for correct functions (the solution's vectorised ones, float32 ones, per-chain per-cup loops),
  the share of seeds where the probe fails them (false fail), with a 95 % upper bound;
* for each listed mistake, the share of seeds where the probe catches it (power).

Results: benchmarks/results/probe_rates.json. The grading cell of the coffee notebook and
docs/grading.md state them (`coffee_blends.PROBE_RATES`; a test keeps them in step).

Usage: python benchmarks/probe_rates.py [seeds] [loop_seeds] [power_seeds]   (committed run and
`make bench`: the defaults, 1000 50 200)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import write  # noqa: E402
from corpus.coffee_blends import cond_mean, float32_updates, linear_sample_z, loop_updates, sampler_namespace  # noqa: E402
from gmmcourse.grading.assignments import coffee_blends as CB  # noqa: E402

FUNCTIONS = ("sample_z", "sample_weights", "sample_means")


def mistakes(sol: dict) -> dict:
    """The listed mistakes, by function: name -> a wrong version built from the solution's."""
    sz, sw, sm = sol["sample_z"], sol["sample_weights"], sol["sample_means"]

    def dirichlet_counts(rng, z, k, concentration=1.0):  # Dirichlet(n_k): the prior's +1 forgotten
        g = rng.gamma(np.maximum((z[..., None] == np.arange(k)).sum(axis=1), 1e-3))
        return g / g.sum(axis=-1, keepdims=True)

    def half_prior(rng, z, k, concentration=1.0):  # Dirichlet(0.5 + n_k): another prior
        return sw(rng, z, k, concentration=0.5)

    def not_sampled(rng, z, k, concentration=1.0):  # the conditional mean instead of a draw
        a = 1.0 + (z[..., None] == np.arange(k)).sum(axis=1)
        return a / a.sum(axis=-1, keepdims=True)

    def no_prior_term(rng, x, z, sds, loc, scale):  # the likelihood only (flat prior)
        return sm(rng, x, z, sds, loc, 1e12)

    def means_variance(rng, x, z, sds, loc, scale):
        return sm(rng, x, z, sds ** 2, loc, scale)

    def means_no_noise(rng, x, z, sds, loc, scale):
        return cond_mean(x, z, sds, loc, scale)

    def z_variance(rng, x, w, m, s):
        return sz(rng, x, w, m, s ** 2)

    def z_ignores_weights(rng, x, w, m, s):
        return sz(rng, x, np.full_like(w, 1.0 / w.shape[1]), m, s)

    def z_argmax(rng, x, w, m, s):  # the most likely label instead of a draw
        _, p = sz(rng, x, w, m, s)
        return p.argmax(axis=-1), p

    def z_uniform(rng, x, w, m, s):  # labels that do not follow the returned probabilities
        _, p = sz(rng, x, w, m, s)
        return rng.integers(0, w.shape[1], size=p.shape[:2]), p

    linear = {}
    linear_sample_z(linear)
    return {
        "sample_weights": {"dirichlet_counts_without_prior": dirichlet_counts, "prior_concentration_0.5": half_prior,
                           "weights_not_sampled": not_sampled},
        "sample_means": {"no_prior_term": no_prior_term, "variance_as_sd": means_variance,
                         "means_without_noise": means_no_noise},
        "sample_z": {"linear_space": linear["sample_z"], "variance_as_sd": z_variance,
                     "ignores_weights": z_ignores_weights, "argmax_not_sampled": z_argmax,
                     "z_not_following_probs": z_uniform},
    }


def fails(fn, name: str, seed: int, inputs: dict) -> bool:
    """Whether the probe fails `fn` (as `name`) when the grader's generator has this seed."""
    out = CB.export_update({name: fn}, inputs, name=name, reported="means", probe_seed=seed)
    return CB.probe_verdict(json.loads(json.dumps(out["update"])), name) is not None


def rate(fn, name, seeds, inputs) -> dict:
    n_fail = sum(fails(fn, name, 10_000 + s, inputs) for s in range(seeds))
    return {"seeds": seeds, "failed": n_fail, "rate": n_fail / seeds,
            # 95 % upper bound (exact binomial; 3/n by the rule of three when none failed)
            "upper95": _upper(n_fail, seeds)}


def _upper(k: int, n: int) -> float:
    from scipy.stats import beta

    return 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k))


def main(seeds: int = 1000, loop_seeds: int = 50, power_seeds: int = 200) -> dict:
    t0 = time.time()
    inputs = json.loads(json.dumps(CB.ASSIGNMENT.inputs()))
    sol = sampler_namespace()
    loop: dict = {}
    loop_updates(loop)
    correct = {"vectorised (solution)": (sol, seeds), "float32": (float32_updates(), seeds), "loop": (loop, loop_seeds)}
    out: dict = {"seeds": seeds, "loop_seeds": loop_seeds, "chains": CB.UPDATE_CHAINS, "z": CB.UPDATE_Z,
                 "tail": CB.UPDATE_P, "false_fail": {}, "power": {}}
    for style, (ns, n) in correct.items():
        for name in FUNCTIONS:
            out["false_fail"][f"{name} {style}"] = rate(ns[name], name, n, inputs)
    for name, wrong in mistakes(sol).items():
        for what, fn in wrong.items():
            out["power"][f"{name} {what}"] = rate(fn, name, power_seeds, inputs)
    out["worst_false_fail_upper95"] = max(r["upper95"] for r in out["false_fail"].values())
    out["lowest_power"] = min(r["rate"] for r in out["power"].values())
    out["seconds"] = round(time.time() - t0, 1)
    write("probe_rates", out)  # names the commit, machine and date
    return out


if __name__ == "__main__":
    res = main(*[int(a) for a in sys.argv[1:4]])
    for kind in ("false_fail", "power"):
        for key, r in res[kind].items():
            print(f"{kind:10s} {key:45s} {r['failed']:5d}/{r['seeds']:<5d} rate {r['rate']:.4f} (95% <= {r['upper95']:.4f})")
    print("seconds", res["seconds"])
