"""False-fail rate of the posterior checks: a correct sampler, many seeds, how often it loses points.

Runs the solutions' numpy Gibbs sampler (4 chains x 1000 draws, the minimum the notebooks ask for)
with SEEDS seeds on the coffee and bento data, scores the posterior parts with the trusted checks
and writes benchmarks/results/false_fail.json.

Usage: python benchmarks/false_fail.py [num_seeds]
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

from gmmcourse.grading import checks  # noqa: E402
from test_exercises import _coffee_answers, _namespace, score  # noqa: E402

PARTS = {
    "coffee_blends": ["coffee_posterior_means", "coffee_posterior_weights", "coffee_posterior_sds", "coffee_assignments"],
    "uncertainty": ["bento_posterior_means", "bento_posterior_probs"],
}


def main(num_seeds: int = 30) -> dict:
    t0 = time.time()
    ns0 = _namespace("coffee_blends", {"setup", "gibbs_solution", "gibbs_given"})
    un0 = _namespace("uncertainty", {"setup"})
    fails = {gid: 0 for gids in PARTS.values() for gid in gids}
    any_fail = 0
    for s in range(num_seeds):
        seed = 10_000 + s
        failed = False
        ns = dict(ns0)
        ns.update(_coffee_answers(ns0, seed=seed, perm=tuple(np.random.default_rng(seed).permutation(3))))
        for gid in PARTS["coffee_blends"]:
            if score("coffee_blends", gid, ns).fraction < 1.0:
                fails[gid] += 1
                failed = True
        un = dict(un0)
        draws, probs = ns0["run_gibbs"](un0["BENTO_WEIGHTS"], 2, 400.0, 50.0, num_chains=4, num_samples=1000, seed=seed)
        un.update(bento_draws=draws, bento_assignment_probs=probs,
                  bento_means_mean=draws["means"].mean(axis=(0, 1)),
                  bento_means_sd=draws["means"].std(axis=(0, 1), ddof=1))
        for gid in PARTS["uncertainty"]:
            if score("uncertainty", gid, un).fraction < 1.0:
                fails[gid] += 1
                failed = True
        any_fail += failed
    from scipy.stats import norm

    per_number = 2 * norm.sf(checks.Z_MC)
    numbers = 3 * 3 + 2 * 2  # compared MC numbers per seed (coffee 3 parts x 3, bento means + sds)
    result = {
        "num_seeds": num_seeds,
        "z": checks.Z_MC,
        "draws": "4 chains x 1000 samples (the minimum asked)",
        "failures_by_part": fails,
        "seeds_with_any_failure": any_fail,
        "false_fail_rate": any_fail / num_seeds,
        "bound": min(1.0, 20 * numbers * per_number),
        "nominal_rate_per_seed_gaussian": numbers * per_number,
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(__file__).resolve().parent / "results" / "false_fail.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30), indent=2))
