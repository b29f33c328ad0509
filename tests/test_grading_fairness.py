"""Issue 9: grading that is fair and sharp, tested on a corpus of submissions.

The corpus (`corpus(seed)`) holds correct submissions in several styles (vectorised and loop
code, float32 and float64, more chains, other seeds, another valid sampler) that must get full
marks, and typical mistakes that must each lose exactly the points of the parts they break.
Every submission is a namespace of student variables; each part's export code runs on it
in-process and the trusted check grades the JSON it produces (as in tests/test_exercises.py).
`benchmarks/false_fail.py` runs the same corpus over many seeds and reports false-fail and catch
rates.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gmmcourse.grading import checks as C  # noqa: E402
from gmmcourse.grading.assignments import ASSIGNMENTS  # noqa: E402
from gmmcourse.grading.assignments.categorization import ADVICE as CATEGORIZE_ADVICE  # noqa: E402
from gmmcourse.grading.assignments.categorization import MISTAKES as CATEGORIZE_MISTAKES  # noqa: E402
from gmmcourse.grading.assignments.categorization import mistake as categorize_mistake  # noqa: E402
from test_exercises import SOL, _namespace, _nb, score  # noqa: E402

CAT, CB, UN = "categorization", "coffee_blends", "uncertainty"
COFFEE_POSTERIOR = ("coffee_draws_format", "coffee_posterior_means", "coffee_posterior_weights",
                    "coffee_posterior_sds", "coffee_assignments")
BENTO_POSTERIOR = ("bento_posterior_probs", "bento_posterior_means")


@dataclass
class Case:
    name: str
    aid: str
    ns: dict
    parts: tuple
    lost: frozenset = field(default_factory=frozenset)
    """parts this submission must lose entirely (the others must get full marks)"""
    expect: dict = field(default_factory=dict)
    """parts with a stated partial score instead (e.g. EM means right, sds wrong: half), or a
    tuple of the scores allowed (Dirichlet(n_k) weights are sometimes caught by the draws too)"""
    says: dict = field(default_factory=dict)
    """words the message of a part that lost points must contain (it names what is wrong)"""

    @property
    def correct(self) -> bool:
        return not self.lost


# ----------------------------------------------------------------------------- categorization


def _cat_base():
    return _namespace(CAT, {"setup", "categorize_solution", "q1_solution", "q2_solution", "q3_solution"})


def _categorize_loop(x, weights, means, sds):
    from scipy.stats import norm

    out = []
    for v in np.asarray(x, dtype=float):
        lj = [np.log(w) + norm.logpdf(v, m, s) for w, m, s in zip(weights, means, sds)]
        top = max(lj)
        e = [np.exp(a - top) for a in lj]
        out.append([a / sum(e) for a in e])
    return np.array(out)


def _categorize_jax32(x, weights, means, sds):
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from jax.scipy.stats import norm

    x, w, m, s = (jnp.asarray(a, jnp.float32) for a in (x, weights, means, sds))
    lj = jnp.log(w)[None, :] + norm.logpdf(x[:, None], m[None, :], s[None, :])
    return jnp.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def _naive(x, weights, means, sds):
    from scipy.stats import norm

    with np.errstate(all="ignore"):
        d = np.asarray(weights) * norm.pdf(np.asarray(x, dtype=float)[:, None], means, sds)
        return d / d.sum(axis=1, keepdims=True)


def categorization_cases():
    base = _cat_base()
    parts = tuple(p.grade_id for p in ASSIGNMENTS[CAT].parts)
    cases = [Case("solution", CAT, base, parts)]
    w, m, s = base["WEIGHTS"], base["MEANS"], base["SDS"]
    for name, fn in (("loop", _categorize_loop), ("jax_float32", _categorize_jax32)):
        ns = dict(base, categorize=fn)
        p425 = float(np.asarray(fn([425.0], w, m, s))[0, 0])
        if name == "jax_float32":  # the Q answers in float32 as well
            import jax.numpy as jnp
            from jax.scipy.special import logsumexp
            from jax.scipy.stats import norm

            lj = jnp.log(jnp.asarray(w, jnp.float32)) + norm.logpdf(jnp.float32(425.0), jnp.asarray(m, jnp.float32),
                                                                    jnp.asarray([2.0, 4.0], jnp.float32))
            lp = [float(logsumexp(jnp.log(jnp.asarray(w, jnp.float32)) + norm.logpdf(jnp.float32(v), jnp.asarray(m, jnp.float32),
                                                                                     jnp.asarray(s, jnp.float32))))
                  for v in (425.0, 500.0)]
            ns.update(log_odds_425_unequal=float(lj[0] - lj[1]), log_pred_425=lp[0], log_pred_500=lp[1])
        ns["p_tonkatsu_425"] = p425
        cases.append(Case(name, CAT, ns, parts))
    for kind in CATEGORIZE_MISTAKES:
        fn = (lambda kind: lambda x, weights, means, sds: categorize_mistake(kind, x, weights, means, sds))(kind)
        lost = {"categorize_basic"}
        if kind in ("normalised_over_observations", "unnormalised", "log_probs"):
            lost.add("categorize_stable")  # wrong everywhere, the tails included
        cases.append(Case(f"categorize_{kind}", CAT, dict(base, categorize=fn), ("categorize_basic", "categorize_stable"),
                          frozenset(lost)))
    cases.append(Case("categorize_no_log_space", CAT, dict(base, categorize=_naive),
                      ("categorize_basic", "categorize_stable"), frozenset({"categorize_stable"})))
    cases.append(Case("q1_ignores_weights", CAT, dict(base, p_tonkatsu_425=0.5), ("bento_425_equal",),
                      frozenset({"bento_425_equal"})))
    lj = np.log(w) + __import__("scipy.stats").stats.norm.logpdf(425.0, m, [4.0, 16.0])  # variance for sd
    cases.append(Case("q2_variance_as_sd", CAT, dict(base, log_odds_425_unequal=float(lj[0] - lj[1])),
                      ("bento_425_unequal",), frozenset({"bento_425_unequal"})))
    cases.append(Case("q3_log10", CAT, dict(base, log_pred_425=base["log_pred_425"] / np.log(10),
                                            log_pred_500=base["log_pred_500"] / np.log(10)),
                      ("bento_425_outlier",), frozenset({"bento_425_outlier"})))
    return cases


# ----------------------------------------------------------------------------- coffee_blends


def _gibbs_ns():
    return _namespace(CB, {"setup", "gibbs_solution", "gibbs_given"})


def _coffee_ns(seed, chains=4, samples=1000, warmup=300, dtype=np.float64, patch=None, x_mean_scale=37.5, **kw):
    ns = _gibbs_ns()
    if patch:
        patch(ns)
    draws, probs = ns["run_gibbs"](ns["CAFFEINE"], 3, 125.0, x_mean_scale, num_chains=chains, num_samples=samples,
                                   num_warmup=warmup, seed=seed, **kw)
    draws = {k: v.astype(dtype) for k, v in draws.items()}
    # the submission holds the (patched) update functions that made its draws: the grader
    # also tests them directly
    return {"coffee_draws": draws, "coffee_summary": {k: v.mean(axis=(0, 1)) for k, v in draws.items()},
            "coffee_assignment_probs": probs.astype(dtype),
            **{f: ns[f] for f in ("sample_z", "sample_weights", "sample_means")}}


def _loop_updates(ns):
    """Per-chain, per-cup loops for all three updates, written with the math module (slow but
    right): the draws come from them (the given run_gibbs calls them)."""
    import math

    def sample_z(rng, x, weights, means, sds):
        c, k = weights.shape
        z = np.zeros((c, len(x)), dtype=int)
        probs = np.zeros((c, len(x), k))
        for ci in range(c):
            for i, v in enumerate(x):
                lp = [math.log(weights[ci, j]) - math.log(sds[ci, j]) - 0.5 * ((v - means[ci, j]) / sds[ci, j]) ** 2
                      for j in range(k)]
                top = max(lp)
                e = [math.exp(a - top) for a in lp]
                tot = sum(e)
                u, acc = rng.random() * tot, 0.0
                z[ci, i] = k - 1
                for j in range(k):
                    probs[ci, i, j] = e[j] / tot
                for j in range(k):
                    acc += e[j]
                    if u < acc:
                        z[ci, i] = j
                        break
        return z, probs

    def sample_weights(rng, z, k, concentration=1.0):
        out = np.zeros((z.shape[0], k))
        for ci in range(z.shape[0]):
            g = [rng.gamma(concentration + int(np.sum(z[ci] == j))) for j in range(k)]
            out[ci] = [v / sum(g) for v in g]
        return out

    def sample_means(rng, x, z, sds, mean_loc, mean_scale):
        c, k = sds.shape
        out = np.zeros((c, k))
        for ci in range(c):
            for j in range(k):
                n, tot = 0, 0.0
                for i, v in enumerate(x):
                    if z[ci, i] == j:
                        n, tot = n + 1, tot + v
                prec = 1 / mean_scale ** 2 + n / sds[ci, j] ** 2
                out[ci, j] = (mean_loc / mean_scale ** 2 + tot / sds[ci, j] ** 2) / prec + rng.normal() / math.sqrt(prec)
        return out

    ns.update(sample_z=sample_z, sample_weights=sample_weights, sample_means=sample_means)


def _float32_updates() -> dict:
    """sample_z, sample_weights and sample_means written in float32 (every array and operation)."""
    f = np.float32

    def sample_z(rng, x, weights, means, sds):
        x, weights, means, sds = (np.asarray(a, f) for a in (x, weights, means, sds))
        lp = (np.log(weights)[:, None, :] - np.log(sds)[:, None, :]
              - f(0.5) * ((x[None, :, None] - means[:, None, :]) / sds[:, None, :]) ** 2)
        lp = lp - lp.max(axis=-1, keepdims=True)
        p = np.exp(lp)
        p = p / p.sum(axis=-1, keepdims=True)
        u = rng.random(p.shape[:2], dtype=f)[..., None]
        z = np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), weights.shape[1] - 1)
        return z, p

    def sample_weights(rng, z, k, concentration=1.0):
        counts = (z[..., None] == np.arange(k)).sum(axis=1).astype(f)
        g = rng.standard_gamma(f(concentration) + counts, dtype=f)
        return g / g.sum(axis=-1, keepdims=True)

    def sample_means(rng, x, z, sds, mean_loc, mean_scale):
        x, sds = np.asarray(x, f), np.asarray(sds, f)
        onehot = (z[..., None] == np.arange(sds.shape[1])).astype(f)
        prec = f(1) / f(mean_scale) ** 2 + onehot.sum(axis=1) / sds ** 2
        m = (f(mean_loc) / f(mean_scale) ** 2 + (onehot * x[None, :, None]).sum(axis=1) / sds ** 2) / prec
        return m + rng.standard_normal(m.shape, dtype=f) / np.sqrt(prec)

    return {"sample_z": sample_z, "sample_weights": sample_weights, "sample_means": sample_means}


def _run_gibbs32(x, k, mean_loc, mean_scale, num_chains=4, num_samples=1000, num_warmup=300, seed=0):
    """A float32 sampler written on its own: every array and every update in float32 (not a cast
    of float64 draws); returns float32 draws, float32 probabilities and the float32 update functions."""
    f = np.float32
    x = np.asarray(x, f)
    loc, scale = f(mean_loc), f(mean_scale)
    fns = _float32_updates()
    sample_z, sample_weights, sample_means = fns["sample_z"], fns["sample_weights"], fns["sample_means"]

    def update_sds(rng, z, means, sds):
        onehot = (z[..., None] == np.arange(k)).astype(f)
        n_k = onehot.sum(axis=1)
        ss = (onehot * (x[None, :, None] - means[:, None, :]) ** 2).sum(axis=1)

        def target(s):
            return (f(2) - n_k) * np.log(s) - ss / (f(2) * s ** 2) - s

        for _ in range(3):
            prop = sds * np.exp(f(0.3) * rng.standard_normal(sds.shape, dtype=f))
            acc = np.log(rng.random(sds.shape, dtype=f)) < target(prop) - target(sds)
            sds = np.where(acc, prop, sds)
        return sds

    rng = np.random.default_rng(seed)
    c = num_chains
    means = np.sort(np.stack([rng.choice(x, k, replace=False) for _ in range(c)]), axis=1).astype(f)
    sds, weights = np.full((c, k), 2, f), np.full((c, k), 1 / k, f)
    keep = {n: np.zeros((c, num_samples, k), f) for n in ("weights", "means", "sds")}
    psum = np.zeros((x.shape[0], k), f)
    for t in range(num_warmup + num_samples):
        z, p = sample_z(rng, x, weights, means, sds)
        if t >= num_warmup:
            o = np.argsort(means, axis=1)
            for n, v in (("weights", weights), ("means", means), ("sds", sds)):
                keep[n][:, t - num_warmup] = np.take_along_axis(v, o, axis=1)
            psum += np.take_along_axis(p, o[:, None, :], axis=2).mean(axis=0)
        weights = sample_weights(rng, z, k)
        means = sample_means(rng, x, z, sds, loc, scale)
        sds = update_sds(rng, z, means, sds)
    return keep, psum / f(num_samples), fns


def _linear_sample_z(ns):
    """sample_z in linear space (the notebook says "work in log space"): right on the coffee data,
    0/0 where every density underflows."""
    from scipy.stats import norm

    def sample_z(rng, x, weights, means, sds):
        p = weights[:, None, :] * norm.pdf(x[None, :, None], means[:, None, :], sds[:, None, :])
        p = p / p.sum(axis=-1, keepdims=True)
        u = rng.random(p.shape[:2])[..., None]
        return np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), weights.shape[1] - 1), p

    ns["sample_z"] = sample_z


def _other_mh(ns):
    """Another valid kernel: one MH step with a wider proposal for the sds."""
    upd = ns["update_sds"]
    ns["update_sds"] = lambda rng, x, z, means, sds: upd(rng, x, z, means, sds, step=0.6, num_mh=1)


def _frozen_means(ns):
    """Forgot to update the means: every chain keeps its random start (chains disagree)."""
    ns["sample_means"] = lambda rng, x, z, sds, mean_loc, mean_scale: ns["_gx_keep_means"]
    orig = ns["sample_z"]

    def sample_z(rng, x, weights, means, sds):
        ns["_gx_keep_means"] = means
        return orig(rng, x, weights, means, sds)

    ns["sample_z"] = sample_z


def _variance_as_sd(ns):
    orig_z, orig_m = ns["sample_z"], ns["sample_means"]
    ns["sample_z"] = lambda rng, x, w, m, s: orig_z(rng, x, w, m, s ** 2)
    ns["sample_means"] = lambda rng, x, z, sds, loc, scale: orig_m(rng, x, z, sds ** 2, loc, scale)


def _weights_not_sampled(ns):
    """Broken Dirichlet update: the weights stay at the posterior mean's neighbourhood 1/K."""
    ns["sample_weights"] = lambda rng, z, k, concentration=1.0: np.full((z.shape[0], k), 1.0 / k)


def _dirichlet_counts(ns):
    """Dirichlet(n_k) instead of Dirichlet(1 + n_k): forgets the prior's pseudo-counts."""
    def sample_weights(rng, z, k, concentration=1.0):
        counts = (z[..., None] == np.arange(k)).sum(axis=1)
        g = rng.gamma(np.maximum(counts, 1e-3))
        return g / g.sum(axis=-1, keepdims=True)

    ns["sample_weights"] = sample_weights


def _means_without_noise(ns):
    """The conditional mean instead of a draw from the conditional."""
    ns["sample_means"] = lambda rng, x, z, sds, loc, scale: _cond_mean(x, z, sds, loc, scale)


def _cond_mean(x, z, sds, loc, scale):
    k = sds.shape[1]
    onehot = z[..., None] == np.arange(k)
    n_k, s_k = onehot.sum(axis=1), (onehot * x[None, :, None]).sum(axis=1)
    prec = 1.0 / scale ** 2 + n_k / sds ** 2
    return (loc / scale ** 2 + s_k / sds ** 2) / prec


def _coffee32(seed, chains=4, samples=1000):
    from gmmcourse.data import COFFEE_CAFFEINE

    draws, probs, fns = _run_gibbs32(COFFEE_CAFFEINE, 3, 125.0, 37.5, num_chains=chains, num_samples=samples, seed=seed)
    return {"coffee_draws": draws, "coffee_summary": {k: v.mean(axis=(0, 1)) for k, v in draws.items()},
            "coffee_assignment_probs": probs, **fns}


HALVES = ("coffee_posterior_means", "coffee_posterior_weights", "coffee_assignments")
"""Parts half of which grade an update function of the student's (right in most mistakes)."""


def coffee_cases(seed=0, chain_counts=(20, 32, 64)):
    base = _gibbs_ns()
    s = 1000 + 10 * seed
    cases = [
        Case("vectorised_gibbs", CB, dict(base, **_coffee_ns(s + 1)), COFFEE_POSTERIOR),
        Case("float32_sampler", CB, dict(base, **_coffee32(s + 2, chains=8, samples=1500)), COFFEE_POSTERIOR),
        Case("eight_chains", CB, dict(base, **_coffee_ns(s + 3, chains=8)), COFFEE_POSTERIOR),
        Case("other_mh_kernel", CB, dict(base, **_coffee_ns(s + 4, patch=_other_mh)), COFFEE_POSTERIOR),
        Case("loop_sampler", CB, dict(base, **_coffee_ns(s + 12, patch=_loop_updates)), COFFEE_POSTERIOR),
    ]
    for i, chains in enumerate(chain_counts):  # any number of chains at least 4 (item 1)
        cases.append(Case(f"{chains}_chains", CB, dict(base, **_coffee_ns(s + 20 + i, chains=chains)), COFFEE_POSTERIOR))
    perm = np.random.default_rng(s).permutation(3)  # "any component order" is promised here
    any_order = _coffee_ns(s + 5)
    any_order = dict(any_order, coffee_draws={k: v[..., perm] for k, v in any_order["coffee_draws"].items()},
                     coffee_summary={k: v[perm] for k, v in any_order["coffee_summary"].items()},
                     coffee_assignment_probs=any_order["coffee_assignment_probs"][:, perm])
    cases.append(Case("any_component_order", CB, dict(base, **any_order), COFFEE_POSTERIOR[1:]))
    unimplemented = dict(base, **_coffee_ns(s + 13))
    for f in ("sample_z", "sample_weights", "sample_means"):  # another sampler made the draws
        unimplemented[f] = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())
    cases.append(Case("own_sampler_functions_left_blank", CB, unimplemented, COFFEE_POSTERIOR,
                      expect=dict.fromkeys(HALVES, 0.5)))
    # mistakes
    # a part is half the draws' summary, half the update function that makes them: a right
    # function keeps its half when the draws are wrong for another reason
    cases.append(Case("frozen_means_not_converged", CB, dict(base, **_coffee_ns(s + 6, patch=_frozen_means)),
                      COFFEE_POSTERIOR[1:4], frozenset(COFFEE_POSTERIOR[1:4]), {"coffee_posterior_weights": 0.5},
                      says=dict.fromkeys(COFFEE_POSTERIOR[1:4], "R-hat")))
    stuck = _coffee_ns(s + 15, chains=20)  # one chain past the 16th is elsewhere: R-hat sees every chain
    stuck["coffee_draws"]["means"][18] += 3.0
    stuck["coffee_summary"] = {k: v.mean(axis=(0, 1)) for k, v in stuck["coffee_draws"].items()}
    cases.append(Case("chain_19_of_20_not_converged", CB, dict(base, **stuck), ("coffee_posterior_means",),
                      frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "R-hat"}))
    # the variance where an sd belongs, in sample_z and sample_means: every posterior summary
    # is off, and both functions fail their own tests
    lost = ("coffee_posterior_means", "coffee_posterior_sds", "coffee_assignments")
    cases.append(Case("variance_as_sd", CB, dict(base, **_coffee_ns(s + 7, patch=_variance_as_sd)),
                      lost, frozenset(lost), says={"coffee_posterior_means": "sample_means", "coffee_assignments": "sample_z"}))
    cases.append(Case("dirichlet_counts_without_prior", CB, dict(base, **_coffee_ns(s + 14, patch=_dirichlet_counts)),
                      ("coffee_posterior_weights",), frozenset({"coffee_posterior_weights"}),
                      {"coffee_posterior_weights": (0.0, 0.5)}, says={"coffee_posterior_weights": "Dirichlet(1 + n_1"}))
    cases.append(Case("weights_not_sampled", CB, dict(base, **_coffee_ns(s + 8, patch=_weights_not_sampled)),
                      ("coffee_posterior_weights",), frozenset({"coffee_posterior_weights"}),
                      says={"coffee_posterior_weights": "sample_weights"}))
    cases.append(Case("means_without_noise", CB, dict(base, **_coffee_ns(s + 9, patch=_means_without_noise)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}),
                      says={"coffee_posterior_means": "sample_means"}))
    cases.append(Case("wrong_prior_scale", CB, dict(base, **_coffee_ns(s + 10, x_mean_scale=3.0)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "differ from the reference"}))
    cases.append(Case("sample_z_in_linear_space", CB, dict(base, **_coffee_ns(s + 16, patch=_linear_sample_z)),
                      ("coffee_assignments",), frozenset({"coffee_assignments"}), {"coffee_assignments": 0.5},
                      says={"coffee_assignments": "log space"}))
    ok = _coffee_ns(s + 11)
    ref = ASSIGNMENTS[CB].reference()["posterior"]
    shifted = dict(ok["coffee_summary"],  # a summary that is not the draws' mean (one MC se off)
                   means=ok["coffee_summary"]["means"] + np.asarray(ref["means"]["sd"]) / np.sqrt(4000))
    cases.append(Case("summary_not_of_draws", CB, dict(base, **dict(ok, coffee_summary=shifted)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "not the average of your draws"}))
    few = {k: v[:2, :500] for k, v in ok["coffee_draws"].items()}  # 2 x 500: below the stated minimum
    cases.append(Case("too_few_draws", CB, dict(base, **dict(ok, coffee_draws=few,
                                                              coffee_summary={k: v.mean(axis=(0, 1)) for k, v in few.items()})),
                      COFFEE_POSTERIOR, frozenset(COFFEE_POSTERIOR), dict.fromkeys(HALVES, 0.5),
                      says=dict.fromkeys(COFFEE_POSTERIOR, "Too few draws")))
    return cases


# ----------------------------------------------------------------------------- uncertainty


def uncertainty_base():
    return _namespace(UN, {"setup", "em_solution", "gibbs_given", "posterior_solution", "ambiguity_solution"})


@pytest.fixture(scope="module")
def unc_base():
    return uncertainty_base()


def _bento_answers(draws):
    from scipy.special import logsumexp
    from scipy.stats import norm

    x = np.array([498, 352, 501, 349, 497, 503, 351, 500, 348, 502, 499, 350, 498, 353, 501, 347, 499, 502, 352, 500.])
    w, m, s = (np.asarray(draws[n], dtype=float).reshape(-1, 2) for n in ("weights", "means", "sds"))
    lj = np.log(w)[:, None, :] + norm.logpdf(x[None, :, None], m[:, None, :], s[:, None, :])
    probs = np.exp(lj - logsumexp(lj, axis=2, keepdims=True)).mean(axis=0)
    return {"bento_draws": draws, "bento_assignment_probs": probs,
            "bento_means_mean": draws["means"].mean(axis=(0, 1)),
            "bento_means_sd": draws["means"].std(axis=(0, 1), ddof=1)}


def uncertainty_cases(unc, seed=0, chain_counts=(20, 32, 64)):
    gibbs = _gibbs_ns()
    s = 2000 + 10 * seed

    def run(seed, **kw):
        return gibbs["run_gibbs"](unc["BENTO_WEIGHTS"], 2, 400.0, 50.0, seed=seed, **kw)[0]

    all_parts = tuple(p.grade_id for p in ASSIGNMENTS[UN].parts)
    cases = [Case("solution", UN, unc, all_parts)]
    cases.append(Case("numpy_gibbs_six_chains", UN, dict(unc, **_bento_answers(run(s + 1, num_chains=6))), BENTO_POSTERIOR))
    d32 = _run_gibbs32(unc["BENTO_WEIGHTS"], 2, 400.0, 50.0, num_chains=8, num_samples=1500, seed=s + 2)[0]
    cases.append(Case("float32_sampler", UN, dict(unc, **_bento_answers(d32)), BENTO_POSTERIOR))
    for i, chains in enumerate(chain_counts):
        cases.append(Case(f"{chains}_chains", UN, dict(unc, **_bento_answers(run(s + 20 + i, num_chains=chains))),
                          BENTO_POSTERIOR))
    # mistakes
    rev = {k: v[..., ::-1] for k, v in unc["bento_draws"].items()}
    cases.append(Case("other_component_order", UN,
                      dict(unc, **_bento_answers(rev), bento_point_labels=1 - np.asarray(unc["bento_point_labels"]),
                           bento_em={k: v[::-1] for k, v in unc["bento_em"].items()}),
                      ("bento_em_fit", "bento_point_labels") + BENTO_POSTERIOR,
                      frozenset({"bento_em_fit", "bento_point_labels"} | set(BENTO_POSTERIOR)),
                      says=dict.fromkeys(("bento_point_labels",) + BENTO_POSTERIOR, "lighter")))
    # only the reported mean, or only the sd, wrong: half of the part, naming the wrong one (item 8)
    cases.append(Case("em_means_as_posterior_means", UN, dict(unc, bento_means_mean=np.asarray(unc["bento_em"]["means"])),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_mean is not the mean of your draws"}))
    cases.append(Case("variance_reported_as_sd", UN, dict(unc, bento_means_sd=np.asarray(unc["bento_means_sd"]) ** 2),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_sd is not the standard deviation"}))
    first = unc["bento_draws"]["means"][0]  # statistics of the first chain only
    cases.append(Case("sd_of_one_chain", UN, dict(unc, bento_means_sd=first.std(axis=0, ddof=1)),
                      ("bento_posterior_means",), frozenset({"bento_posterior_means"}), {"bento_posterior_means": 0.5},
                      says={"bento_posterior_means": "bento_means_sd"}))
    stuck = {k: v.copy() for k, v in run(s + 3).items()}
    stuck["means"][0] += 3 * np.asarray(ASSIGNMENTS[UN].reference()["posterior"]["means"]["sd"])  # one chain elsewhere
    cases.append(Case("one_chain_not_converged", UN, dict(unc, **_bento_answers(stuck)), ("bento_posterior_means",),
                      frozenset({"bento_posterior_means"}), says={"bento_posterior_means": "R-hat"}))
    few = {k: v[:2, :500] for k, v in unc["bento_draws"].items()}
    cases.append(Case("too_few_draws", UN, dict(unc, **_bento_answers(few)), BENTO_POSTERIOR, frozenset(BENTO_POSTERIOR),
                      says=dict.fromkeys(BENTO_POSTERIOR, "Too few draws")))
    em_sd = dict(unc["bento_em"], sds=np.asarray(unc["bento_em"]["sds"]) ** 2)
    cases.append(Case("em_variance_as_sd", UN, dict(unc, bento_em=em_sd), ("bento_em_fit",), frozenset({"bento_em_fit"}),
                      {"bento_em_fit": 0.5}, says={"bento_em_fit": "M-step"}))
    return cases


# ----------------------------------------------------------------------------- grading the corpus


def grade(case: Case) -> dict:
    return {gid: score(case.aid, gid, case.ns) for gid in case.parts}


def verdict_ok(case: Case, verdicts: dict) -> list:
    """Parts graded wrongly: a correct part below full marks, a broken part with any points."""
    def allowed(gid):  # a tuple: the mistake may also show in the draws' half, at some seeds
        w = case.expect.get(gid, 0.0 if gid in case.lost else 1.0)
        return w if isinstance(w, tuple) else (w,)

    wrong = [(gid, v.fraction, v.message) for gid, v in verdicts.items() if v.fraction not in allowed(gid)]
    return wrong + [(gid, v.fraction, v.message, "should name: " + case.says[gid]) for gid, v in verdicts.items()
                    if gid in case.says and case.says[gid] not in v.message]


@pytest.fixture(scope="module")
def cat_cases():
    return categorization_cases()


@pytest.fixture(scope="module")
def cb_cases():
    return coffee_cases(0)


@pytest.fixture(scope="module")
def un_cases(unc_base):
    return uncertainty_cases(unc_base, 0)


def _ids(cases):
    return [c.name for c in cases]


def test_categorization_corpus(cat_cases):
    wrong = {c.name: verdict_ok(c, grade(c)) for c in cat_cases}
    assert not any(wrong.values()), wrong


def test_categorization_one_verdict_per_mistake(cat_cases):
    """Each categorize mistake gets its own advice (item 5), and stability is charged only for
    instability."""
    for c in cat_cases:
        if c.name.startswith("categorize_") and c.name != "categorize_no_log_space":
            kind = c.name[len("categorize_"):]
            v = score(CAT, "categorize_basic", c.ns)
            assert v.message == CATEGORIZE_ADVICE[kind], (kind, v)


def test_every_basic_case_is_changed_by_every_mistake():
    """Item 5: no basic case lets a mistake keep points; no stable case depends on the weights or
    on sd versus variance."""
    a = ASSIGNMENTS[CAT]
    ref, inp = a.reference(), a.inputs()
    for kind in CATEGORIZE_MISTAKES:
        for case, r in zip(inp["categorize_basic"], ref["categorize_basic"]):
            got = categorize_mistake(kind, case["x"], case["weights"], case["means"], case["sds"])
            assert not C.exact_close(got, np.asarray(r)), (kind, case)
    for kind in ("ignores_weights", "variance_as_sd", "sd_as_variance"):
        for case, r in zip(inp["categorize_stable"], ref["categorize_stable"]):
            got = categorize_mistake(kind, case["x"], case["weights"], case["means"], case["sds"])
            assert C.exact_close(got, np.asarray(r)), (kind, case)
    # and the naive (no log space) version fails every stable case
    for case in inp["categorize_stable"]:
        assert not np.all(np.isfinite(_naive(case["x"], case["weights"], case["means"], case["sds"])))


def test_one_exact_tolerance():
    """Item 2: every exact answer of the categorization notebook uses the same named tolerance,
    and the notebook states it."""
    from gmmcourse.grading.assignments import categorization

    src = Path(categorization.__file__).read_text()
    body = src[src.index("# ----------------------------------------------------------------------------- checks"):]
    assert "1e-5" not in body and "1e-6" not in body and body.count("exact_close(") >= 4
    text = "\n".join(c.source for c in _nb(SOL / CAT / f"{CAT}.ipynb").cells)
    assert f"relative tolerance {C.EXACT_RTOL:g}" in text and "float32" in text


def test_coffee_corpus(cb_cases):
    wrong = {c.name: verdict_ok(c, grade(c)) for c in cb_cases}
    assert not any(wrong.values()), wrong


def test_coffee_non_convergence_message(cb_cases):
    c = next(c for c in cb_cases if c.name == "frozen_means_not_converged")
    v = score(CB, "coffee_posterior_means", c.ns)
    assert v.fraction == 0.0 and "R-hat" in v.message and "converged" in v.message


def test_uncertainty_corpus(un_cases):
    wrong = {c.name: verdict_ok(c, grade(c)) for c in un_cases}
    assert not any(wrong.values()), wrong


def test_em_means_never_pass_as_posterior_means(unc_base):
    """Item 6, over several seeds: EM means reported as posterior means lose the mean's half
    whatever the draws."""
    gibbs = _gibbs_ns()
    for seed in (31, 32, 33):
        draws, _ = gibbs["run_gibbs"](unc_base["BENTO_WEIGHTS"], 2, 400.0, 50.0, seed=seed)
        ns = dict(unc_base, **_bento_answers(draws))
        assert score(UN, "bento_posterior_means", ns).fraction == 1.0
        ns["bento_means_mean"] = np.asarray(unc_base["bento_em"]["means"])
        v = score(UN, "bento_posterior_means", ns)  # the mean's half is lost, and named (item 8)
        assert v.fraction == 0.5 and "bento_means_mean is not the mean of your draws" in v.message, v


def test_capped_se_and_no_floor():
    """Item 4: a run's own (inflated) se cannot widen the tolerance beyond a converged run's."""
    ref = {"sd": [1.0], "ess": [1e4]}
    assert C.capped_se([5.0], ref["sd"], 4, 1000)[0] == pytest.approx(np.sqrt(C.MAX_IAT) / np.sqrt(4000))
    assert C.capped_se([0.001], ref["sd"], 4, 1000)[0] == 0.001
    rng = np.random.default_rng(0)
    good = rng.standard_normal((4, 1000, 1))
    assert C.split_rhat(good)[0] < 1.01
    drift = good + np.linspace(0, 3, 1000)[None, :, None]  # no warm-up: a trend within chains
    assert C.split_rhat(drift)[0] > C.RHAT_MAX
    assert not hasattr(C, "COFFEE_FLOORS") and not hasattr(C, "BENTO_FLOORS")


_VISIBLE_MODEL_VARIANTS = [("correct", True), ("wrong_prior", False), ("variance", False), ("ignores_weights", False)]


@pytest.mark.parametrize("variant,passes", _VISIBLE_MODEL_VARIANTS)
def test_visible_model_test_catches_common_mistakes(variant, passes):
    """Item 7: the visible density test compares with a known log density on a known choice map."""
    from test_exercises import _model_ns

    cell = next(c for c in _nb(SOL / CB / f"{CB}.ipynb").cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "coffee_model_density")
    visible = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S)
    ns = _namespace(CB, {"setup"})
    ns.update(_model_ns(variant))
    if passes:
        exec(visible, ns)
    else:
        with pytest.raises(AssertionError, match="check the priors"):
            exec(visible, ns)


def test_time_limit_stated_first_in_dependent_feedback():
    """Item 1: a part that lost points after a cell hit its time limit says so first, with the limit."""
    event = "Cell 9 was stopped: it exceeded the time limit (60 s per cell). It was skipped; grading continued."
    msg = C.time_limit_note(["Cell 2 printed a warning", event], "Your answer could not be read: NameError")
    assert msg.startswith("First: Cell 9 was stopped") and "60 s per cell" in msg and msg.endswith("NameError")
    assert C.time_limit_note(["Cell 2 printed a warning"], "m") == "m"


def test_benchmark_recorded_rates():
    """The recorded `benchmarks/false_fail.py` run: no correct corpus case lost a point over its
    seeds, every mistake lost exactly its parts' points."""
    import json

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "false_fail.json"
    if not path.exists():
        pytest.skip("run `python benchmarks/false_fail.py` first")
    res = json.loads(path.read_text())
    if "corpus" not in res:
        pytest.skip("results predate the corpus benchmark")
    assert res["corpus_false_fail_rate"] == 0.0 and res["false_fail_rate"] <= max(res["bound"], 0.1)
    for name, st in res["corpus"].items():
        if st["kind"] == "mistake":
            assert st["catch_rate"] == 1.0 and st["collateral_rate"] == 0.0, name


def test_rhat_message_shows_the_comparison():
    """Item 9: an R-hat just above the limit prints digits enough to show it is above, and says
    what R-hat measures."""
    for r in (1.0537, 1.05003, 1.0500001):
        msg = C.not_converged(np.array([1.0, r]), "caffeine means").message
        shown = float(re.search(r"split R-hat ([0-9.]+)", msg).group(1))
        assert shown > C.RHAT_MAX, msg
        assert "spread between chains" in msg and "1 when they agree" in msg
    assert C.not_converged(np.array([1.0, C.RHAT_MAX]), "x") is None


def test_time_limit_note_only_where_the_stopped_cell_is_needed(tmp_path):
    """Item 10, with a real timed-out notebook through the sandboxed grader: the cell defining
    `counts` runs past the cell limit, `mean` is left blank. test_counts (which reads `counts`)
    starts its feedback with the stop; test_mean lost its points for another reason and gets no
    such note."""
    import html
    import shutil

    import nbformat

    assert shutil.which("bwrap"), "this test needs bubblewrap (apt-get install -y bubblewrap)"
    from grading_helpers import _grade, toy

    course = toy.write_course(tmp_path, [])
    slow = "import time\nwhile True:\n    time.sleep(0.05)\n" + toy.COUNTS_SOL
    d = course / "submitted" / "slow" / "toy"
    d.mkdir(parents=True)
    nbformat.write(toy.notebook(toy.MEAN_BLANK, slow), d / "toy.ipynb")
    _grade(course)
    page = (course / "feedback" / "slow" / "toy" / "toy.html").read_text()
    comments = {m.group(1): html.unescape(m.group(2)) for m in
                re.finditer(r"<tr[^>]*><td>([a-z_]+)</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td></tr>", page)}
    assert comments["test_counts"].startswith("First: Cell") and "time limit" in comments["test_counts"], comments
    assert "time limit" not in comments["test_mean"] and "First:" not in comments["test_mean"], comments


def test_dependence_follows_the_data():
    """The names a part reads (its export's var()/student.get() calls, options included) meet the
    names a stopped cell, or a later cell using them, assigns."""
    from gmmcourse.grading.dependence import part_reads, tainted_names

    parts = {p.grade_id: p for p in ASSIGNMENTS[CB].parts}
    assert {"coffee_draws", "coffee_assignment_probs", "sample_z"} <= part_reads(parts["coffee_assignments"])
    assert "sample_means" not in part_reads(parts["coffee_assignments"])
    assert part_reads(parts["coffee_posterior_sds"]) == {"coffee_draws", "coffee_summary"}
    cells = ["def sample_z(rng):\n    return 1", "draws = run(sample_z)", "coffee_draws = dict(draws)", "other = 3"]
    assert tainted_names(cells, {1}) == {"draws", "coffee_draws"}
    assert "sample_z" in tainted_names(cells, {0}) and "other" not in tainted_names(cells, {0})


def _visible(aid, gid) -> str:
    cell = next(c for c in _nb(SOL / aid / f"{aid}.ipynb").cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
    return re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S)


def test_visible_tests_use_the_hidden_tolerances():
    """Item 4: the visible sum-to-one tests state the hidden checks' named tolerances, and a
    genuine float32 sampler passes them (and the hidden checks) at every seed tried."""
    from gmmcourse.grading import draws as D
    from gmmcourse.grading.assignments.coffee_blends import SIMPLEX_ATOL

    def literal(pattern, text):
        return float(re.search(pattern, text).group(1))

    assert literal(r"- 1\.0\) < ([0-9.e-]+)", _visible(CB, "coffee_posterior_weights")) == SIMPLEX_ATOL
    for aid, gid in ((CB, "coffee_assignments"), (UN, "bento_posterior_probs")):
        assert literal(r"rtol=0, atol=([0-9.e-]+)\)", _visible(aid, gid)) == D.PROB_SUM_ATOL
    for seed in range(4):
        ns = dict(_gibbs_ns(), **_coffee32(300 + seed))
        for gid in ("coffee_posterior_weights", "coffee_assignments"):
            exec(_visible(CB, gid), dict(ns))
            assert score(CB, gid, ns).fraction == 1.0, (seed, gid)


def test_given_run_gibbs_takes_any_number_of_chains():
    """Item 3: the given driver starts as many chains as the text invites (it raised above 10)."""
    ns = _gibbs_ns()
    for x, k in ((ns["CAFFEINE"], 3), (np.linspace(340.0, 510.0, 20), 2)):
        draws, _ = ns["run_gibbs"](x, k, 125.0, 37.5, num_chains=64, num_samples=3, num_warmup=0, seed=1)
        assert draws["means"].shape == (64, 3, k)


def test_statistics_of_every_chain():
    """Item 1: the export's statistics give the mean, sd and split R-hat of ALL the draws (past
    the raw chains), and the raw chains are not simply the first ones."""
    from gmmcourse.grading.draws import decode
    from gmmcourse.grading.kernel_side import EXPORT_MAX_CHAINS, draws

    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 600, 3)) + np.arange(3)
    off = next(i for i in range(16, 40) if i not in draws(a)["chains"])
    a[off] += 3.0  # a chain past the 16th, and not among the raw ones, is elsewhere
    d = decode(json.loads(json.dumps(draws(a))), 3, "means")
    assert off not in d.raw_chains and d.rhat_raw.max() < C.RHAT_MAX  # the raw chains alone would not see it
    flat = a.reshape(-1, 3)
    assert np.allclose(d.mean, flat.mean(0), rtol=1e-12) and np.allclose(d.sd, flat.std(0, ddof=1), rtol=1e-12)
    assert np.allclose(d.rhat, C.split_rhat(a), rtol=1e-10) and d.rhat.max() > C.RHAT_MAX
    assert len(d.raw_chains) == EXPORT_MAX_CHAINS and list(d.raw_chains) != list(range(EXPORT_MAX_CHAINS))
    forged = draws(a)
    forged["stats"]["mean"] = draws(a + 0.1)["stats"]["mean"]  # statistics that are not the raw chains'
    with pytest.raises(C.BadAnswer, match="inconsistent"):
        decode(json.loads(json.dumps(forged)), 3, "means")


def test_float32_summary_allowance():
    """Item 2: a float32 summary of float32 draws (8 x 1,500, summed in float32) passes; the same
    difference on float64 draws, or a summary one Monte Carlo se off, does not."""
    from gmmcourse.grading.draws import decode, summary_allowance
    from gmmcourse.grading.kernel_side import draws

    rng = np.random.default_rng(0)  # a run whose float32 rounding exceeds 0.1 se (1.2x) in one component
    a32 = (157.0 + 0.6 * rng.standard_normal((8, 1500, 3))).astype(np.float32)
    d32 = decode(json.loads(json.dumps(draws(a32))), 3, "means")
    d64 = decode(json.loads(json.dumps(draws(a32.astype(np.float64) + 1e-9))), 3, "means")
    rep = a32.mean(axis=(0, 1)).astype(np.float64)  # numpy's float32 sum
    mc = 0.6 / np.sqrt(d32.size)
    assert np.any(np.abs(rep - d32.mean) > 0.1 * mc)  # float32 rounding alone exceeds 0.1 se
    assert np.all(np.abs(rep - d32.mean) <= summary_allowance(d32, d32.mean, mc, C.SUMMARY_Z))
    assert not np.all(np.abs(rep - d64.mean) <= summary_allowance(d64, d64.mean, mc, C.SUMMARY_Z))
    assert not np.any(np.abs(d32.mean + mc - d32.mean) <= summary_allowance(d32, d32.mean, mc, C.SUMMARY_Z))


def test_probe_rates_stated_and_recorded():
    """The probes' false-fail rate and power: measured (benchmarks/probe_rates.py), and the
    numbers the notebook states are the recorded ones."""
    from gmmcourse.grading.assignments import coffee_blends

    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "probe_rates.json").read_text())
    r = coffee_blends.PROBE_RATES
    assert res["seeds"] >= 1000 and res["seeds"] == r["seeds"] and res["loop_seeds"] == r["loop_seeds"]
    assert all(v["failed"] == 0 for v in res["false_fail"].values())
    worst = max(v["upper95"] for v in res["false_fail"].values() if v["seeds"] == res["seeds"])
    assert round(worst, 3) <= r["false_fail_upper95"]
    assert res["lowest_power"] >= r["power_min"] and min(v["seeds"] for v in res["power"].values()) >= r["power_seeds"]
    text = coffee_blends.ASSIGNMENT.precision
    assert f"{r['seeds']:,} seeds" in text and f"{100 * r['false_fail_upper95']:.1f} %" in text


def test_linear_space_sample_z_fails_its_probe():
    """Item 5: sample_z in linear space is right on the coffee data and on the probe state, but
    0/0 where every density underflows: it loses its half, with the advice to work in log space;
    the solution's and a float32 sample_z pass."""
    from gmmcourse.grading.assignments import coffee_blends

    inputs = json.loads(json.dumps(coffee_blends.inputs()))
    sol = _gibbs_ns()
    lin = {}
    _linear_sample_z(lin)
    for fn, ok in ((sol["sample_z"], True), (_float32_updates()["sample_z"], True), (lin["sample_z"], False)):
        out = coffee_blends.export_update({"sample_z": fn}, inputs, name="sample_z")
        v = coffee_blends.probe_verdict(json.loads(json.dumps(out["update"])), "sample_z")
        assert (v is None) == ok, v
        if not ok:
            assert "log space" in v.message and "below 1e-340" in v.message


def test_every_draws_part_checks_the_minimum(unc_base):
    """Item 6: 2 chains x 500 draws lose the draws' share of every part that uses them, naming why."""
    ns = dict(_gibbs_ns(), **_coffee_ns(77))
    ns["coffee_draws"] = {k: v[:2, :500] for k, v in ns["coffee_draws"].items()}
    ns["coffee_summary"] = {k: v.mean(axis=(0, 1)) for k, v in ns["coffee_draws"].items()}
    for gid in COFFEE_POSTERIOR:
        v = score(CB, gid, ns)
        assert v.fraction == (0.5 if gid in HALVES else 0.0) and "Too few draws" in v.message, (gid, v)
    few = {k: v[:2, :500] for k, v in unc_base["bento_draws"].items()}
    ns = dict(unc_base, **_bento_answers(few))
    for gid in BENTO_POSTERIOR:
        v = score(UN, gid, ns)
        assert v.fraction == 0.0 and "Too few draws" in v.message, (gid, v)


def test_float32_sample_z_rare_labels():
    """A correct float32 sample_z picks a label of probability 6e-13 with probability 2^-24 (a
    float32 uniform number is 0): the probe allows for that resolution (seed 10309 of the probe
    benchmark failed it before)."""
    from gmmcourse.grading.assignments import coffee_blends

    inputs = json.loads(json.dumps(coffee_blends.inputs()))
    out = coffee_blends.export_update({"sample_z": _float32_updates()["sample_z"]}, inputs, name="sample_z",
                                      probe_seed=10_309)
    assert coffee_blends.probe_verdict(json.loads(json.dumps(out["update"])), "sample_z") is None
