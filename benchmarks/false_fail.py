"""False-fail and catch rates of the autograder's trusted checks over the issue-9 corpus.

Two measurements (both written to benchmarks/results/false_fail.json):

1. The corpus of `benchmarks/corpus/` (which tests/test_grading_fairness.py grades once) --
   correct submissions in several styles and typical mistakes -- regenerated with CORPUS_SEEDS
   seeds (each seed re-runs every sampler):
   for every correct case the share of seeds where some part lost points (false fail), for every
   mistake the share of seeds where each part it breaks lost exactly its stated points with a
   message naming the mistake (caught) and where a part it does not break lost points (collateral).
2. A correct sampler at the minimum size (4 chains x 1000 draws) with NUM_SEEDS seeds on the
   coffee and bento data: the false-fail rate of every posterior part.

Usage: python benchmarks/false_fail.py [num_seeds] [corpus_seeds]   (committed run and `make bench`:
       the defaults, 30 10)
       python benchmarks/false_fail.py --update categorization 10   (rerun one assignment's corpus)
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import write  # noqa: E402
from corpus import categorization, coffee_blends, uncertainty  # noqa: E402
from corpus.grading import grade, namespace, score, verdict_ok  # noqa: E402
from gmmcourse.grading import checks  # noqa: E402

PARTS = {
    "coffee_blends": ["coffee_posterior_means", "coffee_posterior_weights", "coffee_posterior_sds", "coffee_assignments"],
    "uncertainty": ["bento_posterior_means", "bento_posterior_probs"],
}


def corpus_rates(corpus_seeds: int, assignments=("categorization", "coffee_blends", "uncertainty")) -> dict:
    from gmmcourse.grading.assignments.categorization import ASSIGNMENT as CAT

    unc = uncertainty.base_namespace() if "uncertainty" in assignments else None
    stats: dict = {}
    for seed in range(corpus_seeds):
        cases = []
        if "categorization" in assignments:
            CAT.inputs.redraw()  # categorize's hidden cases are drawn fresh in every grading run
            cases += categorization.cases()
        if "coffee_blends" in assignments:
            cases += coffee_blends.cases(seed)
        if "uncertainty" in assignments:
            cases += uncertainty.cases(unc, seed)
        for case in cases:
            verdicts = grade(case)
            st = stats.setdefault(f"{case.aid}/{case.name}", {"assignment": case.aid, "kind": "correct" if case.correct else "mistake",
                                              "runs": 0, "failed": 0, "caught": 0, "collateral": 0,
                                              "breaks": sorted(case.lost), "messages": []})
            st["runs"] += 1
            wrong = verdict_ok(case, verdicts)  # points other than stated, or a message not naming the mistake
            if case.correct:
                st["failed"] += bool(wrong)
                if wrong:
                    st["messages"].append({w[0]: w[2] for w in wrong})
            else:
                st["caught"] += not any(w[0] in case.lost for w in wrong)
                st["collateral"] += any(w[0] not in case.lost for w in wrong)
                if seed == 0 or wrong:
                    st["messages"] = sorted({verdicts[g].message for g in case.lost})
    for st in stats.values():
        if st["kind"] == "correct":
            st["false_fail_rate"] = st["failed"] / st["runs"]
            for k in ("caught", "collateral", "breaks"):
                st.pop(k)
        else:
            st["catch_rate"] = st["caught"] / st["runs"]
            st["collateral_rate"] = st["collateral"] / st["runs"]
            st.pop("failed")
    return stats


def minimum_sampler_rates(num_seeds: int) -> dict:
    ns0 = coffee_blends.sampler_namespace()
    un0 = namespace("uncertainty", {"setup"})
    fails = {gid: 0 for gids in PARTS.values() for gid in gids}
    any_fail = 0
    for s in range(num_seeds):
        seed = 10_000 + s
        failed = False
        ns = dict(ns0)
        ns.update(coffee_blends.coffee_answers(ns0, seed=seed, perm=tuple(np.random.default_rng(seed).permutation(3))))
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
    return {"failures_by_part": fails, "seeds_with_any_failure": any_fail, "false_fail_rate": any_fail / num_seeds}


def main(num_seeds: int = 30, corpus_seeds: int = 10) -> dict:
    from scipy.stats import norm

    t0 = time.time()
    minimum = minimum_sampler_rates(num_seeds)
    corpus = corpus_rates(corpus_seeds)
    per_number = 2 * norm.sf(checks.Z_MC)
    # compared MC numbers per seed: coffee 3 parts x 3 means (+ 3 x 3 spreads), bento 2 means + 2 sds
    numbers = 2 * 3 * 3 + 2 * 2
    correct = [c for c in corpus.values() if c["kind"] == "correct"]
    mistakes = [c for c in corpus.values() if c["kind"] == "mistake"]
    result = {
        "num_seeds": num_seeds,
        "corpus_seeds": corpus_seeds,
        "z": checks.Z_MC,
        "max_iat": checks.MAX_IAT,
        "rhat_max": checks.RHAT_MAX,
        "summary_z": checks.SUMMARY_Z,
        "draws": "4 chains x 1000 samples (the minimum asked)",
        "failures_by_part": minimum["failures_by_part"],
        "seeds_with_any_failure": minimum["seeds_with_any_failure"],
        "false_fail_rate": minimum["false_fail_rate"],
        "bound": min(1.0, 20 * numbers * per_number),
        "nominal_rate_per_seed_gaussian": numbers * per_number,
        "corpus_false_fail_rate": sum(c["failed"] for c in correct) / max(1, sum(c["runs"] for c in correct)),
        "corpus_catch_rate": sum(c["caught"] for c in mistakes) / max(1, sum(c["runs"] for c in mistakes)),
        "corpus_collateral_rate": sum(c["collateral"] for c in mistakes) / max(1, sum(c["runs"] for c in mistakes)),
        "corpus": corpus,
        "seconds": round(time.time() - t0, 1),
    }
    write("false_fail", result)  # names the commit, machine and date
    return result


def update(assignments: list[str], corpus_seeds: int) -> dict:
    """Rerun the corpus of `assignments` only and replace their entries in the committed
    results (after a fix to one assignment's checks); the rerun names its own commit and date
    under "reruns", the rest keeps the main run's."""
    from common import RESULTS, commit

    path = RESULTS / "false_fail.json"
    result = json.loads(path.read_text())
    new = corpus_rates(corpus_seeds, tuple(assignments))
    result["corpus"] = {k: v for k, v in result["corpus"].items() if v["assignment"] not in assignments} | new
    correct = [c for c in result["corpus"].values() if c["kind"] == "correct"]
    mistakes = [c for c in result["corpus"].values() if c["kind"] == "mistake"]
    result["corpus_false_fail_rate"] = sum(c["failed"] for c in correct) / max(1, sum(c["runs"] for c in correct))
    result["corpus_catch_rate"] = sum(c["caught"] for c in mistakes) / max(1, sum(c["runs"] for c in mistakes))
    result["corpus_collateral_rate"] = sum(c["collateral"] for c in mistakes) / max(1, sum(c["runs"] for c in mistakes))
    result.setdefault("reruns", []).append({"assignments": assignments, "corpus_seeds": corpus_seeds, "commit": commit(),
                                            "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"]:  # python benchmarks/false_fail.py --update categorization 10
        res = update(sys.argv[2].split(","), int(sys.argv[3]))
        sys.argv = sys.argv[:1]
    else:
        args = [int(a) for a in sys.argv[1:3]]
        res = main(*args)
    print(json.dumps({k: v for k, v in res.items() if k != "corpus"}, indent=2))
    for name, st in res["corpus"].items():
        rate = st.get("false_fail_rate", st.get("catch_rate"))
        print(f"{st['kind']:8s} {name:48s} runs {st['runs']:3d} "
              + (f"false-fail {rate:.2f}" if st["kind"] == "correct" else
                 f"caught {rate:.2f} collateral {st['collateral_rate']:.2f}"))
