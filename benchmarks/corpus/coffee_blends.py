"""The `coffee_blends` assignment's corpus: correct submissions in several styles
(vectorised and per-cup loop updates, float32 and float64, more chains, other seeds, another
valid MH kernel, any component order) that must get full marks, and typical mistakes that must
each lose exactly the points of the parts they break (`cases`).

* `sampler_namespace`: the solution's numpy Gibbs sampler; `submission(seed, ...)` a student's
  answers from it (optionally with a `patch` that swaps in a wrong or another right update);
  `coffee_answers` the answers from a given sampler namespace, in any component order.
* Right update functions written otherwise: `loop_updates`, `float32_updates` (and the float32
  sampler `run_gibbs32`, `float32_submission`); wrong ones: `linear_sample_z`, `frozen_means`,
  `variance_as_sd`, `weights_not_sampled`, `dirichlet_counts`, `means_without_noise`
  (`cond_mean`: the means' conditional mean).
* `model_namespace(variant)`: the GenJAX model, right or with a typical mistake.

Used by tests/test_exercises.py, tests/test_grading_fairness.py, benchmarks/false_fail.py and
benchmarks/probe_rates.py.
"""

from __future__ import annotations

import numpy as np

from gmmcourse.grading.assignments import ASSIGNMENTS

from .grading import Case, namespace

__all__ = ["AID", "COFFEE_POSTERIOR", "HALVES", "sampler_namespace", "submission", "coffee_answers",
           "model_namespace", "loop_updates", "float32_updates", "run_gibbs32", "float32_submission",
           "linear_sample_z", "other_mh", "frozen_means", "variance_as_sd", "weights_not_sampled",
           "dirichlet_counts", "means_without_noise", "cond_mean", "cases"]

AID = "coffee_blends"
COFFEE_POSTERIOR = ("coffee_draws_format", "coffee_posterior_means", "coffee_posterior_weights",
                    "coffee_posterior_sds", "coffee_assignments")


def coffee_answers(ns, seed, chains=4, samples=1000, perm=(0, 1, 2), mean_scale=37.5, variance=False):
    """The posterior answers (draws, summary, assignment probabilities) from the sampler in `ns`,
    components in the order `perm`; `variance`: the sds' draws squared (a mistake)."""
    draws, probs = ns["run_gibbs"](ns["CAFFEINE"], 3, 125.0, mean_scale, num_chains=chains,
                                   num_samples=samples, num_warmup=300, seed=seed)
    perm = list(perm)
    draws = {k: v[..., perm] for k, v in draws.items()}
    if variance:
        draws["sds"] = draws["sds"] ** 2
    summary = {k: v.mean(axis=(0, 1)) for k, v in draws.items()}
    return {"coffee_draws": draws, "coffee_summary": summary, "coffee_assignment_probs": probs[:, perm]}


def model_namespace(variant):
    """`coffee_gmm` written as a student would: "correct", "wrong_prior", "variance" (sd squared)
    or "ignores_weights"."""
    import jax.numpy as jnp
    from genjax import Const, categorical, dirichlet, gamma, gen, normal

    loc, scale = 125.0, (20.0 if variant == "wrong_prior" else 37.5)

    @gen
    def cup(weights, means, sds):
        logits = jnp.zeros(3) if variant == "ignores_weights" else jnp.log(weights)
        z = categorical(logits) @ "z"
        sd = sds[z] ** 2 if variant == "variance" else sds[z]
        return normal(means[z], sd) @ "x"

    @gen
    def coffee_gmm(n: Const[int]):
        weights = dirichlet(jnp.ones(3)) @ "weights"
        means = normal.repeat(3)(loc, scale) @ "means"
        sds = gamma.repeat(3)(2.0, 1.0) @ "sds"
        return cup.repeat(n.value)(weights, means, sds) @ "points"

    return {"coffee_gmm": coffee_gmm}


def sampler_namespace() -> dict:
    """The solution's numpy Gibbs sampler (`run_gibbs` and the three updates; independent of gmmcourse.gibbs)."""
    return namespace(AID, {"setup", "gibbs_solution", "gibbs_given"})


def submission(seed, chains=4, samples=1000, warmup=300, dtype=np.float64, patch=None, x_mean_scale=37.5, **kw):
    """A student's posterior answers and update functions from the solution's sampler, after
    `patch(ns)` (which may swap in other update functions)."""
    ns = sampler_namespace()
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


def _math_log_density(v: float, mean: float, sd: float) -> float:
    import math

    return -math.log(sd) - 0.5 * ((v - mean) / sd) ** 2  # up to a constant, which cancels


def loop_updates(ns, log_density=_math_log_density):
    """Per-chain, per-cup loops for all three updates, written with the math module (slow but
    right): the draws come from them (the given run_gibbs calls them). ``log_density(v, mean,
    sd)`` is a component's log density, called once per chain, cup and component;
    benchmarks/bench_limits.py passes scipy's ``norm.logpdf`` (the slowest style known)."""
    import math

    def sample_z(rng, x, weights, means, sds):
        c, k = weights.shape
        z = np.zeros((c, len(x)), dtype=int)
        probs = np.zeros((c, len(x), k))
        for ci in range(c):
            for i, v in enumerate(x):
                lp = [math.log(weights[ci, j]) + log_density(v, means[ci, j], sds[ci, j]) for j in range(k)]
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


def float32_updates() -> dict:
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


def run_gibbs32(x, k, mean_loc, mean_scale, num_chains=4, num_samples=1000, num_warmup=300, seed=0):
    """A float32 sampler written on its own: every array and every update in float32 (not a cast
    of float64 draws); returns float32 draws, float32 probabilities and the float32 update functions."""
    f = np.float32
    x = np.asarray(x, f)
    loc, scale = f(mean_loc), f(mean_scale)
    fns = float32_updates()
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


def linear_sample_z(ns):
    """sample_z in linear space (the notebook says "work in log space"): right on the coffee data,
    0/0 where every density underflows."""
    from scipy.stats import norm

    def sample_z(rng, x, weights, means, sds):
        p = weights[:, None, :] * norm.pdf(x[None, :, None], means[:, None, :], sds[:, None, :])
        p = p / p.sum(axis=-1, keepdims=True)
        u = rng.random(p.shape[:2])[..., None]
        return np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), weights.shape[1] - 1), p

    ns["sample_z"] = sample_z


def other_mh(ns):
    """Another valid kernel: one MH step with a wider proposal for the sds."""
    upd = ns["update_sds"]
    ns["update_sds"] = lambda rng, x, z, means, sds: upd(rng, x, z, means, sds, step=0.6, num_mh=1)


def frozen_means(ns):
    """Forgot to update the means: every chain keeps its random start (chains disagree)."""
    ns["sample_means"] = lambda rng, x, z, sds, mean_loc, mean_scale: ns["_gx_keep_means"]
    orig = ns["sample_z"]

    def sample_z(rng, x, weights, means, sds):
        ns["_gx_keep_means"] = means
        return orig(rng, x, weights, means, sds)

    ns["sample_z"] = sample_z


def variance_as_sd(ns):
    orig_z, orig_m = ns["sample_z"], ns["sample_means"]
    ns["sample_z"] = lambda rng, x, w, m, s: orig_z(rng, x, w, m, s ** 2)
    ns["sample_means"] = lambda rng, x, z, sds, loc, scale: orig_m(rng, x, z, sds ** 2, loc, scale)


def weights_not_sampled(ns):
    """Broken Dirichlet update: the weights stay at the posterior mean's neighbourhood 1/K."""
    ns["sample_weights"] = lambda rng, z, k, concentration=1.0: np.full((z.shape[0], k), 1.0 / k)


def dirichlet_counts(ns):
    """Dirichlet(n_k) instead of Dirichlet(1 + n_k): forgets the prior's pseudo-counts."""
    def sample_weights(rng, z, k, concentration=1.0):
        counts = (z[..., None] == np.arange(k)).sum(axis=1)
        g = rng.gamma(np.maximum(counts, 1e-3))
        return g / g.sum(axis=-1, keepdims=True)

    ns["sample_weights"] = sample_weights


def means_without_noise(ns):
    """The conditional mean instead of a draw from the conditional."""
    ns["sample_means"] = lambda rng, x, z, sds, loc, scale: cond_mean(x, z, sds, loc, scale)


def cond_mean(x, z, sds, loc, scale):
    k = sds.shape[1]
    onehot = z[..., None] == np.arange(k)
    n_k, s_k = onehot.sum(axis=1), (onehot * x[None, :, None]).sum(axis=1)
    prec = 1.0 / scale ** 2 + n_k / sds ** 2
    return (loc / scale ** 2 + s_k / sds ** 2) / prec


def float32_submission(seed, chains=4, samples=1000):
    from gmmcourse.data import COFFEE_CAFFEINE

    draws, probs, fns = run_gibbs32(COFFEE_CAFFEINE, 3, 125.0, 37.5, num_chains=chains, num_samples=samples, seed=seed)
    return {"coffee_draws": draws, "coffee_summary": {k: v.mean(axis=(0, 1)) for k, v in draws.items()},
            "coffee_assignment_probs": probs, **fns}


HALVES = ("coffee_posterior_means", "coffee_posterior_weights", "coffee_assignments")
"""Parts half of which grade an update function of the student's (right in most mistakes)."""


def cases(seed=0, chain_counts=(20, 32, 64)) -> list[Case]:
    """The corpus; `seed` changes every sampler's seed (benchmarks/false_fail.py runs many)."""
    base = sampler_namespace()
    s = 1000 + 10 * seed
    out = [
        Case("vectorised_gibbs", AID, dict(base, **submission(s + 1)), COFFEE_POSTERIOR),
        Case("float32_sampler", AID, dict(base, **float32_submission(s + 2, chains=8, samples=1500)), COFFEE_POSTERIOR),
        Case("eight_chains", AID, dict(base, **submission(s + 3, chains=8)), COFFEE_POSTERIOR),
        Case("other_mh_kernel", AID, dict(base, **submission(s + 4, patch=other_mh)), COFFEE_POSTERIOR),
        Case("loop_sampler", AID, dict(base, **submission(s + 12, patch=loop_updates)), COFFEE_POSTERIOR),
    ]
    for i, chains in enumerate(chain_counts):  # any number of chains at least 4 (item 1)
        out.append(Case(f"{chains}_chains", AID, dict(base, **submission(s + 20 + i, chains=chains)), COFFEE_POSTERIOR))
    perm = np.random.default_rng(s).permutation(3)  # "any component order" is promised here
    any_order = submission(s + 5)
    any_order = dict(any_order, coffee_draws={k: v[..., perm] for k, v in any_order["coffee_draws"].items()},
                     coffee_summary={k: v[perm] for k, v in any_order["coffee_summary"].items()},
                     coffee_assignment_probs=any_order["coffee_assignment_probs"][:, perm])
    out.append(Case("any_component_order", AID, dict(base, **any_order), COFFEE_POSTERIOR[1:]))
    unimplemented = dict(base, **submission(s + 13))
    for f in ("sample_z", "sample_weights", "sample_means"):  # another sampler made the draws
        unimplemented[f] = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())
    out.append(Case("own_sampler_functions_left_blank", AID, unimplemented, COFFEE_POSTERIOR,
                      expect=dict.fromkeys(HALVES, 0.5)))
    # mistakes
    # a part is half the draws' summary, half the update function that makes them: a right
    # function keeps its half when the draws are wrong for another reason
    out.append(Case("frozen_means_not_converged", AID, dict(base, **submission(s + 6, patch=frozen_means)),
                      COFFEE_POSTERIOR[1:4], frozenset(COFFEE_POSTERIOR[1:4]), {"coffee_posterior_weights": 0.5},
                      says=dict.fromkeys(COFFEE_POSTERIOR[1:4], "R-hat")))
    stuck = submission(s + 15, chains=20)  # one chain past the 16th is elsewhere: R-hat sees every chain
    stuck["coffee_draws"]["means"][18] += 3.0
    stuck["coffee_summary"] = {k: v.mean(axis=(0, 1)) for k, v in stuck["coffee_draws"].items()}
    out.append(Case("chain_19_of_20_not_converged", AID, dict(base, **stuck), ("coffee_posterior_means",),
                      frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "R-hat"}))
    # the variance where an sd belongs, in sample_z and sample_means: every posterior summary
    # is off, and both functions fail their own tests
    lost = ("coffee_posterior_means", "coffee_posterior_sds", "coffee_assignments")
    out.append(Case("variance_as_sd", AID, dict(base, **submission(s + 7, patch=variance_as_sd)),
                      lost, frozenset(lost), says={"coffee_posterior_means": "sample_means", "coffee_assignments": "sample_z"}))
    out.append(Case("dirichlet_counts_without_prior", AID, dict(base, **submission(s + 14, patch=dirichlet_counts)),
                      ("coffee_posterior_weights",), frozenset({"coffee_posterior_weights"}),
                      {"coffee_posterior_weights": (0.0, 0.5)}, says={"coffee_posterior_weights": "Dirichlet(1 + n_1"}))
    out.append(Case("weights_not_sampled", AID, dict(base, **submission(s + 8, patch=weights_not_sampled)),
                      ("coffee_posterior_weights",), frozenset({"coffee_posterior_weights"}),
                      says={"coffee_posterior_weights": "sample_weights"}))
    out.append(Case("means_without_noise", AID, dict(base, **submission(s + 9, patch=means_without_noise)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}),
                      says={"coffee_posterior_means": "sample_means"}))
    out.append(Case("wrong_prior_scale", AID, dict(base, **submission(s + 10, x_mean_scale=3.0)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "differ from the reference"}))
    out.append(Case("sample_z_in_linear_space", AID, dict(base, **submission(s + 16, patch=linear_sample_z)),
                      ("coffee_assignments",), frozenset({"coffee_assignments"}), {"coffee_assignments": 0.5},
                      says={"coffee_assignments": "log space"}))
    ok = submission(s + 11)
    ref = ASSIGNMENTS[AID].reference()["posterior"]
    shifted = dict(ok["coffee_summary"],  # a summary that is not the draws' mean (one MC se off)
                   means=ok["coffee_summary"]["means"] + np.asarray(ref["means"]["sd"]) / np.sqrt(4000))
    out.append(Case("summary_not_of_draws", AID, dict(base, **dict(ok, coffee_summary=shifted)),
                      ("coffee_posterior_means",), frozenset({"coffee_posterior_means"}), {"coffee_posterior_means": 0.5},
                      says={"coffee_posterior_means": "not the average of your draws"}))
    few = {k: v[:2, :500] for k, v in ok["coffee_draws"].items()}  # 2 x 500: below the stated minimum
    out.append(Case("too_few_draws", AID, dict(base, **dict(ok, coffee_draws=few,
                                                              coffee_summary={k: v.mean(axis=(0, 1)) for k, v in few.items()})),
                      COFFEE_POSTERIOR, frozenset(COFFEE_POSTERIOR), dict.fromkeys(HALVES, 0.5),
                      says=dict.fromkeys(COFFEE_POSTERIOR, "Too few draws")))
    return out
