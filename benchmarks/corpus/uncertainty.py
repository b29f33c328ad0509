"""The `uncertainty` assignment's corpus: the solution, the bento posterior from other
samplers (the coffee solution's numpy Gibbs sampler with more chains, a float32 sampler), and
typical mistakes, each losing exactly the parts it breaks (`cases`). `bento_answers(draws)`:
what a student stores from a run's draws.

Used by tests/test_exercises.py, tests/test_grading_fairness.py and benchmarks/false_fail.py.
"""

from __future__ import annotations

import numpy as np

from gmmcourse.grading.assignments import ASSIGNMENTS

from .coffee_blends import run_gibbs32, sampler_namespace
from .grading import Case, namespace

__all__ = ["AID", "BENTO_POSTERIOR", "base_namespace", "bento_answers", "cases"]

AID = "uncertainty"
BENTO_POSTERIOR = ("bento_posterior_probs", "bento_posterior_means")


def base_namespace() -> dict:
    """The solution's variables: the EM fit, its labels, the posterior draws and summaries."""
    return namespace(AID, {"setup", "em_solution", "gibbs_given", "posterior_solution", "ambiguity_solution"})


def bento_answers(draws) -> dict:
    """What a student stores from a run's bento draws: the draws, assignment probabilities, the
    means' mean and sd."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    x = np.array([498, 352, 501, 349, 497, 503, 351, 500, 348, 502, 499, 350, 498, 353, 501, 347, 499, 502, 352, 500.])
    w, m, s = (np.asarray(draws[n], dtype=float).reshape(-1, 2) for n in ("weights", "means", "sds"))
    lj = np.log(w)[:, None, :] + norm.logpdf(x[None, :, None], m[:, None, :], s[:, None, :])
    probs = np.exp(lj - logsumexp(lj, axis=2, keepdims=True)).mean(axis=0)
    return {"bento_draws": draws, "bento_assignment_probs": probs,
            "bento_means_mean": draws["means"].mean(axis=(0, 1)),
            "bento_means_sd": draws["means"].std(axis=(0, 1), ddof=1)}


def cases(unc, seed=0, chain_counts=(20, 32, 64)) -> list[Case]:
    """The corpus around the solution namespace `unc` (`base_namespace()`); `seed` changes every
    sampler's seed."""
    gibbs = sampler_namespace()
    s = 2000 + 10 * seed

    def run(seed, **kw):
        return gibbs["run_gibbs"](unc["BENTO_WEIGHTS"], 2, 400.0, 50.0, seed=seed, **kw)[0]

    all_parts = tuple(p.grade_id for p in ASSIGNMENTS[AID].parts)
    out = [Case("solution", AID, unc, all_parts)]
    out.append(Case("numpy_gibbs_six_chains", AID, dict(unc, **bento_answers(run(s + 1, num_chains=6))), BENTO_POSTERIOR))
    d32 = run_gibbs32(unc["BENTO_WEIGHTS"], 2, 400.0, 50.0, num_chains=8, num_samples=1500, seed=s + 2)[0]
    out.append(Case("float32_sampler", AID, dict(unc, **bento_answers(d32)), BENTO_POSTERIOR))
    for i, chains in enumerate(chain_counts):
        out.append(Case(f"{chains}_chains", AID, dict(unc, **bento_answers(run(s + 20 + i, num_chains=chains))),
                          BENTO_POSTERIOR))
    # mistakes
    rev = {k: v[..., ::-1] for k, v in unc["bento_draws"].items()}
    out.append(Case("other_component_order", AID,
                      dict(unc, **bento_answers(rev), bento_point_labels=1 - np.asarray(unc["bento_point_labels"]),
                           bento_em={k: v[::-1] for k, v in unc["bento_em"].items()}),
                      ("bento_em_fit", "bento_point_labels") + BENTO_POSTERIOR,
                      frozenset({"bento_em_fit", "bento_point_labels"} | set(BENTO_POSTERIOR)),
                      says=dict.fromkeys(("bento_point_labels",) + BENTO_POSTERIOR, "lighter")))
    # only the reported mean, or only the sd, wrong: half of the part, naming the wrong one (item 8)
    out.append(Case("em_means_as_posterior_means", AID, dict(unc, bento_means_mean=np.asarray(unc["bento_em"]["means"])),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_mean is not the mean of your draws"}))
    out.append(Case("variance_reported_as_sd", AID, dict(unc, bento_means_sd=np.asarray(unc["bento_means_sd"]) ** 2),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_sd is not the standard deviation"}))
    first = unc["bento_draws"]["means"][0]  # statistics of the first chain only
    out.append(Case("sd_of_one_chain", AID, dict(unc, bento_means_sd=first.std(axis=0, ddof=1)),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_sd"}))
    stuck = {k: v.copy() for k, v in run(s + 3).items()}
    stuck["means"][0] += 3 * np.asarray(ASSIGNMENTS[AID].reference()["posterior"]["means"]["sd"])  # one chain elsewhere
    out.append(Case("one_chain_not_converged", AID, dict(unc, **bento_answers(stuck)), ("bento_posterior_means",),
                      frozenset({"bento_posterior_means"}), says={"bento_posterior_means": "R-hat"}))
    few = {k: v[:2, :500] for k, v in unc["bento_draws"].items()}
    out.append(Case("too_few_draws", AID, dict(unc, **bento_answers(few)), BENTO_POSTERIOR, frozenset(BENTO_POSTERIOR),
                      says=dict.fromkeys(BENTO_POSTERIOR, "Too few draws")))
    em_sd = dict(unc["bento_em"], sds=np.asarray(unc["bento_em"]["sds"]) ** 2)
    out.append(Case("em_variance_as_sd", AID, dict(unc, bento_em=em_sd), ("bento_em_fit",), frozenset({"bento_em_fit"}),
                      {"bento_em_fit": 0.5}, says={"bento_em_fit": "M-step"}))
    return out
