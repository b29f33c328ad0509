"""False-fail rate and catch rate of the dpmm assignment's checks over many seeds (issue 28).

Two parts, each with its own result file (benchmarks/common.write: commit, machine, date):

* ``functions`` (results/dpmm_probe_rates.json): the grader calls the student's `crp_probs` and
  `log_conditional` on probe states drawn afresh in every grading run (`dpmm.inputs`) and
  compares them with the exact conditionals. The same exports and checks run on many draws of
  those states (`inputs.generator` with seeds 0, 1, ...): for correct functions (the solution's
  vectorised ones, per-cluster loops with scipy, float32) the share of draws where a part fails
  them (false fail), with a 95 % upper bound; for each listed mistake, the share of draws where
  its part catches it with its own advice (linear space: the stable part, which names log space).
* ``posterior`` (results/dpmm_posterior_rates.json): the posterior-over-K part on the draws of
  many seeds of the student's own sampler run. Correct styles: the given sampler with 4 chains
  (the solution) and 8 chains, float32 arrays, and a blocked Gibbs sampler of the student's
  own (4 chains x 2000); the share of seeds where the part fails them, with a 95 % upper bound.
  Mistakes: the given sampler with each conditional that changes its law on these data
  (`corpus.dpmm.SAMPLER_MISTAKES`), K as the largest label + 1, the share of one chain
  reported, the shares shifted by one (entry k - 1 for K = k), too few draws; the share of seeds
  where the part gives 0 with the message naming the mistake. The given sampler's draws come
  from `corpus.dpmm.gibbs_chains` (the notebook's run_sampler, vectorised over seeds: the same
  draws, tests/test_dpmm_grading.py checks them).

The dpmm notebook's grading cell and docs/grading.md state the rates (`dpmm.PROBE_RATES`,
`dpmm.POSTERIOR_RATES`; tests/test_dpmm_grading.py keeps them in step with the result files).

Usage: python benchmarks/dpmm_probe_rates.py [functions|posterior|all] [draws or seeds]
(default: all, 1000 probe draws, 200 sampler seeds; the wrong samplers on the first 100)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common import write
from corpus.dpmm import (FUNCTION_MISTAKES, SAMPLER_MISTAKES, answers, base_namespace, blocked_gibbs,
                         correct_styles, gibbs_chains, num_clusters)
from corpus.grading import score
from gmmcourse.grading.assignments import dpmm as M

PARTS = {"crp_predictive": (M.export_crp, {}, M.check_crp),
         "gibbs_conditional": (M.export_conditional, {"key": "conditional"}, M.check_conditional),
         "gibbs_conditional_stable": (M.export_conditional, {"key": "stable"}, M.check_stable)}


def verdicts(ns: dict, inputs: dict, context: dict, parts) -> dict:
    out = {}
    for gid in parts:
        export, opts, check = PARTS[gid]
        try:
            answer = json.loads(json.dumps(export(ns, inputs, **opts), allow_nan=False))
        except Exception as e:  # as the kernel does: an export that raised is an error answer
            answer = {"error": type(e).__name__}
        out[gid] = check(answer, context)
    return out


def upper95(failed: int, n: int) -> float:
    """One-sided 95 % upper bound of a binomial rate (exact, Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if failed >= n else float(beta.ppf(0.95, failed + 1, n - failed))


def functions(draws: int) -> None:
    base = base_namespace()
    styles = correct_styles(base)
    fails = {name: 0 for name in styles}
    caught = {name: 0 for name in FUNCTION_MISTAKES}
    t0 = time.perf_counter()
    for seed in range(draws):
        inputs = json.loads(json.dumps(M.inputs.generator(np.random.default_rng(seed))))
        context = json.loads(json.dumps(M.reference_for(inputs)))
        for name, (crp, cond) in styles.items():
            v = verdicts(dict(base, crp_probs=crp, log_conditional=cond), inputs, context, PARTS)
            if any(x.fraction != 1.0 for x in v.values()):
                fails[name] += 1
                print(f"seed {seed}: {name} failed: {[(g, x.message) for g, x in v.items() if x.fraction != 1.0]}")
        for name, (lost, fns) in FUNCTION_MISTAKES.items():
            v = verdicts(dict(base, **fns), inputs, context, lost)
            advice = M.ADVICE.get(name, "log space")
            if all(x.fraction == 0.0 and advice in x.message for x in v.values()):
                caught[name] += 1
        if seed % 50 == 49:
            print(f"{seed + 1} draws, {time.perf_counter() - t0:.0f} s", flush=True)
    power = {k: {"caught": c, "draws": draws} for k, c in caught.items()}
    write("dpmm_probe_rates", {
        "draws": draws,
        "false_fail": {k: {"failed": f, "draws": draws, "upper95": upper95(f, draws)} for k, f in fails.items()},
        "power": power,
        "lowest_power": min(c / draws for c in caught.values()),
        "seconds": time.perf_counter() - t0,
    })


# ----------------------------------------------------------------------------- the posterior part


def posterior_verdict(ns: dict):
    """The posterior part's export (in-process, through JSON) and trusted check."""
    try:
        return score("dpmm", "dpmm_num_clusters", ns)
    except Exception as e:  # as the kernel does: an export that raised is an error answer
        return M.check_num_clusters({"error": type(e).__name__}, M.reference())


def posterior_cases(k: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """From one seed's 8 chains of the given sampler (K draws and labels): the correct answers
    (4 and 8 chains; float32) and the mistakes made on the same draws, with the words their
    message must contain."""
    shifted = answers(k[:4])
    shifted["dpmm_k_posterior"] = np.append(shifted["dpmm_k_posterior"][1:], 0.0)  # entry k - 1 for K = k
    one_chain = answers(k[:4])
    one_chain["dpmm_k_posterior"] = answers(k[:1])["dpmm_k_posterior"]
    correct = {"given_4_chains": answers(k[:4]), "given_8_chains": answers(k),
               "given_4_chains_float32": answers(k[:4], np.float32)}
    mistakes = {"k_from_largest_label": (answers(labels[:4].max(-1) + 1), "distinct labels"),
                "share_of_one_chain": (one_chain, "share of your draws"),
                "shares_shifted_by_one": (shifted, "share of your draws"),
                "too_few_draws": (answers(k[:2, :500]), "Too few draws")}
    return correct, mistakes


def posterior(seeds: int, mistake_seeds: int, batch: int = 50) -> None:
    base = base_namespace()
    x, a, pr = M.X, M.ALPHA, M.PRIOR
    names = ["given_4_chains", "given_8_chains", "given_4_chains_float32", "blocked_gibbs"]
    fails = {k: [] for k in names}
    caught = {k: 0 for k in ["k_from_largest_label", "share_of_one_chain", "shares_shifted_by_one", "too_few_draws"]}
    caught.update({f"sampler_{m}": 0 for m in SAMPLER_MISTAKES})
    how = {k: {} for k in caught}
    t0 = time.perf_counter()

    def grade(name, ns, says=None):
        v = posterior_verdict(dict(base, **ns))
        if says is None:
            if v.fraction != 1.0:
                fails[name].append(seed)
                print(f"seed {seed}: {name} failed: {v.message}", flush=True)
        else:
            ok = v.fraction == 0.0 and any(s in v.message for s in says)
            caught[name] += ok
            key = "not caught" if not ok else next(s for s in says if s in v.message)
            how[name][key] = how[name].get(key, 0) + 1

    for start in range(0, seeds, batch):
        block = list(range(start, min(seeds, start + batch)))
        labels = gibbs_chains(x, a, pr, block, num_chains=8)
        blocked = blocked_gibbs(x, a, pr, num_chains=4 * len(block), seed=10**6 + start)  # 4 chains a run
        sampled = [s for s in block if s < mistake_seeds]  # the wrong samplers: on the first mistake_seeds
        wrong = {m: gibbs_chains(x, a, pr, sampled, num_chains=4, mistake=m) for m in SAMPLER_MISTAKES} if sampled else {}
        for r, seed in enumerate(block):
            k = num_clusters(labels[r])
            correct, mistakes = posterior_cases(k, labels[r])
            for name, ns in correct.items():
                grade(name, ns)
            grade("blocked_gibbs", answers(num_clusters(blocked[4 * r:4 * r + 4])))
            for name, (ns, says) in mistakes.items():
                grade(name, ns, [says])
            for m in (wrong if seed < mistake_seeds else ()):
                grade(f"sampler_{m}", answers(num_clusters(wrong[m][r])), ["differs from the exact one", "not converged"])
        print(f"{block[-1] + 1} seeds, {time.perf_counter() - t0:.0f} s", flush=True)
    write("dpmm_posterior_rates", {
        "seeds": seeds,
        "false_fail": {k: {"failed": len(f), "seeds": seeds, "upper95": upper95(len(f), seeds), "failed_seeds": f}
                       for k, f in fails.items()},
        "power": {k: {"caught": c, "seeds": sum(how[k].values()), "messages": how[k]} for k, c in caught.items()},
        "lowest_power": min(c / sum(how[k].values()) for k, c in caught.items()),
        "seconds": time.perf_counter() - t0,
    })


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else None
    if which in ("functions", "all"):
        functions(n or 1000)
    if which in ("posterior", "all"):
        posterior(n or 200, min(n or 200, 100))
