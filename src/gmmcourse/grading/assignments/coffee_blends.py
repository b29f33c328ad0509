"""Assignment ``coffee_blends``: a Bayesian GMM (K = 3) in GenJAX and a Gibbs sampler for it.

The student writes ``coffee_gmm`` (graded by its log density on reference choice maps and by
the distribution of its simulations), finishes a sampler, and reports posterior summaries
(graded against a reference posterior within Monte Carlo error, in any component order) and
per-cup assignment probabilities. The course package is hidden.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gmmcourse.grading import reference as R
from gmmcourse.grading import draws as D
from gmmcourse.grading.checks import (MAX_IAT, MIN_CHAINS, MIN_SAMPLES, RHAT_MAX, SUMMARY_Z, Z_MC, BadAnswer,
                                      as_array, best_permutation, capped_se, guarded, mc_compare, not_converged,
                                      raw_array, sd_ok)
from gmmcourse.grading.kernel_side import MAX_CHAINS, draws, floats, raw, var
from gmmcourse.grading.spec import Assignment, Part, Verdict, sanitize

__all__ = ["ASSIGNMENT", "K", "N_CHOICE_MAPS", "SIMPLEX_ATOL", "PROBE_SEED", "inputs", "reference", "prior",
           "update_inputs", "probe_verdict"]

K = 3
N_CHOICE_MAPS = 6
ASSESS_RTOL, ASSESS_ATOL = 2e-4, 1e-3
"""Model log densities: float32 precision (a sum of ~100 float32 terms of size ~1e2)."""
SIMULATE_Z = 6.0
"""Prior moments of simulations: within SIMULATE_Z Monte Carlo standard errors."""
SIMPLEX_ATOL = 1e-4
"""Weights (draws, the summary, sample_weights' output) must sum to 1 within this (float32 sums)."""


def prior():
    """The coffee prior, from `gmmcourse.models` (the notebook states the same numbers; a test checks it)."""
    from gmmcourse.models import COFFEE_PRIOR

    return COFFEE_PRIOR


def prior_text() -> str:
    p = prior()
    loc = float(np.asarray(p.mean_loc)[0])
    return (f"Dirichlet({', '.join([f'{p.concentration:g}'] * K)}), Normal({loc:g}, {p.mean_scale:g}), "
            f"Gamma(shape {p.sd_shape:g}, rate {p.sd_rate:g}) on sds")


# ----------------------------------------------------------------------------- inputs, reference


@functools.lru_cache(maxsize=1)
def inputs() -> dict:
    """Choice maps at which the student's model's log density is compared (five simulated from
    the prior, one with the real data and plausible parameters)."""
    import jax
    from genjax import const, seed

    from gmmcourse.data import COFFEE_CAFFEINE
    from gmmcourse.models import gmm

    n = int(COFFEE_CAFFEINE.shape[0])
    sim = seed(gmm.simulate)
    maps = []
    for i in range(N_CHOICE_MAPS - 1):
        ch = sim(jax.random.key(1000 + i), const(n), prior()).get_choices()
        maps.append({
            "weights": np.asarray(ch["weights"], float).tolist(),
            "means": np.asarray(ch["means"], float).tolist(),
            "sds": np.asarray(ch["sds"], float).tolist(),
            "points": {"z": np.asarray(ch["points"]["z"], int).tolist(),
                       "x": np.asarray(ch["points"]["x"], float).tolist()},
        })
    # the real data with plausible parameters (and labels in an arbitrary order)
    z = np.array([{82: 1, 118: 0, 155: 2}[min((82, 118, 155), key=lambda m: abs(m - v))] for v in COFFEE_CAFFEINE])
    maps.append({"weights": [0.35, 0.33, 0.32], "means": [118.6, 81.0, 156.9], "sds": [2.1, 1.8, 1.9],
                 "points": {"z": z.tolist(), "x": COFFEE_CAFFEINE.tolist()}})
    return {"n": n, "choice_maps": maps, "updates": update_inputs()}


UPDATE_CHAINS = 4000
"""The update functions are called once with this many chains (rows) of the same state: the
rows are independent draws from the conditional, tested against its exact form."""
UPDATE_Z = 5.0
"""Tests of the update functions: within UPDATE_Z Monte Carlo standard errors (moments), or"""
UPDATE_P = 1e-7
"""a two-sided binomial tail probability of at least UPDATE_P (the counts of sampled labels)."""


PROBE_EXTREME_CHAINS = 50
"""Chains of each extreme state sample_z is called on."""
PROBE_EXTREME_ATOL = 1e-3
"""On the extreme states, sample_z's probabilities within this of the exact ones (float32
computations of log densities near -800 are accurate to about 1e-4)."""
PROBE_Z_RESOLUTION = 2.0 ** -24
"""The labels sample_z draws are tested against its probabilities give or take this: the
resolution of a float32 uniform number (measured: a correct float32 sample_z failed 1 seed in
1,000 without it)."""
PROBE_SEED = 20261126
"""The seed of the generator the grader passes to the update functions."""


def update_inputs() -> dict:
    """One state of the sampler (not the course data), repeated over UPDATE_CHAINS chains: 15
    points with unequal counts per component (one empty), overlapping components for sample_z;
    and, for sample_z, an extreme state where every density is below 1e-340 (log densities
    -800 to -960, their differences of order 1): probabilities computed in linear space, or
    exponentiated without subtracting the maximum, underflow to 0/0 in float32 and float64.

    No state makes them overflow fairly: a density above 1e308 needs sd < 1e-308, where sd^2,
    which correct code computes, is 0."""
    x = [80.0, 95.0, 100.0, 104.0, 110.0, 115.0, 120.0, 121.0, 124.0, 150.0, 152.0, 155.0, 158.0, 160.0, 161.0]
    z = [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]  # counts (0, 3, 12)
    extreme = [{"name": "underflow", "chains": PROBE_EXTREME_CHAINS, "weights": [0.2, 0.5, 0.3],
                "means": [1000.0, 1000.5, 1001.0], "sds": [21.0, 21.0, 21.0]}]
    return {"chains": UPDATE_CHAINS, "x": x, "z": z, "k": K,
            "weights": [0.2, 0.5, 0.3], "means": [100.0, 112.0, 150.0], "sds": [8.0, 12.0, 6.0],
            "mean_loc": float(np.asarray(prior().mean_loc)[0]), "mean_scale": float(prior().mean_scale),
            "extreme": extreme}


@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The reference model's log densities, the reference posterior summary and assignment probabilities."""
    import jax.numpy as jnp
    from genjax import const

    from gmmcourse.models import gmm

    inp = inputs()
    assess = []
    for m in inp["choice_maps"]:
        chm = {"weights": jnp.asarray(m["weights"], jnp.float32), "means": jnp.asarray(m["means"], jnp.float32),
               "sds": jnp.asarray(m["sds"], jnp.float32),
               "points": {"z": jnp.asarray(m["points"]["z"], jnp.int32), "x": jnp.asarray(m["points"]["x"], jnp.float32)}}
        assess.append(float(gmm.assess(chm, const(inp["n"]), prior())[0]))
    from gmmcourse.data import COFFEE_CAFFEINE
    from gmmcourse.gibbs import draw_assignment_probs

    post = R.posterior("coffee")
    p = draw_assignment_probs(COFFEE_CAFFEINE, post)
    return {"k": K, "n": inp["n"], "assess": assess, "posterior": R.posterior_summary(post),
            "x": COFFEE_CAFFEINE.tolist(), "assignment_probs": p.mean(axis=(0, 1)).tolist(),
            "assignment_se": D.probs_se(p).tolist()}


# ----------------------------------------------------------------------------- exports (in the kernel)


def export_assess(student, inputs):
    """``coffee_gmm.assess`` on each reference choice map (None where it raised)."""
    import jax.numpy as jnp
    from genjax import const

    model = var(student, "coffee_gmm")
    out = []
    for m in inputs["choice_maps"]:
        try:
            chm = {"weights": jnp.asarray(m["weights"], jnp.float32), "means": jnp.asarray(m["means"], jnp.float32),
                   "sds": jnp.asarray(m["sds"], jnp.float32),
                   "points": {"z": jnp.asarray(m["points"]["z"], jnp.int32),
                              "x": jnp.asarray(m["points"]["x"], jnp.float32)}}
            out.append(float(np.sum(floats(model.assess(chm, const(int(inputs["n"])))[0]))))
        except Exception:
            out.append(None)
    return out


def export_simulate(student, inputs):
    """Three simulated choice maps in full, and 400 (or 100, without vmap) as raw data."""
    import genjax
    import jax

    model = var(student, "coffee_gmm")
    n = int(inputs["n"])
    sim = genjax.seed(model.simulate)

    def flat(ch):
        return {"weights": np.asarray(ch["weights"]), "means": np.asarray(ch["means"]), "sds": np.asarray(ch["sds"]),
                "points": {"z": np.asarray(ch["points"]["z"]), "x": np.asarray(ch["points"]["x"])}}

    sims = [flat(sim(jax.random.key(7 + i), genjax.const(n)).get_choices()) for i in range(3)]
    keys = jax.random.split(jax.random.key(4242), 400)
    try:
        every = flat(jax.vmap(lambda k: sim(k, genjax.const(n)).get_choices())(keys))
    except Exception:
        some = [flat(sim(k, genjax.const(n)).get_choices()) for k in keys[:100]]
        every = {name: np.stack([s[name] for s in some]) for name in ("weights", "means", "sds")}
        every["points"] = {a: np.stack([s["points"][a] for s in some]) for a in ("z", "x")}
    return {"sims": sims,
            "all": {"weights": raw(every["weights"]), "means": raw(every["means"]), "sds": raw(every["sds"]),
                    "z": raw(every["points"]["z"]), "x": raw(every["points"]["x"])}}


def export_draws(student, inputs, reported=None):
    """The draws of ``coffee_draws`` (and ``coffee_summary[reported]``)."""
    d = var(student, "coffee_draws")
    out = {k: draws(d[k]) for k in ("weights", "means", "sds")}
    if reported is not None:
        out["reported"] = floats(var(student, "coffee_summary")[reported])
    return out


def export_update(student, inputs, name, reported=None, probe_seed=20261126):
    """``{"draws": ..., "update": ...}``: what `export_draws` exports (for sample_z, the draws and
    the assignment probabilities), and the student's update function `name` called on the probe
    state of ``inputs["updates"]`` repeated over many chains (sample_z also on each extreme
    state): its raw output, or why there is none ("missing", "not implemented", or the error).
    Each half, and each state, may fail alone."""
    try:
        d = var(student, "coffee_draws")
        got = {key: draws(d[key]) for key in ("weights", "means", "sds")}
        if name == "sample_z":
            got["probs"] = floats(var(student, "coffee_assignment_probs"))
        else:
            got["reported"] = floats(var(student, "coffee_summary")[reported])
    except Exception as e:
        got = {"error": (type(e).__name__ + ": " + str(e))[:300]}
    out = {"draws": got}
    u = inputs["updates"]
    fn = student.get(name)
    if not callable(fn):
        out["update"] = {"status": "missing"}
        return out
    x = floats(u["x"])
    states = [dict(u, name="probe")] + (list(u["extreme"]) if name == "sample_z" else [])
    results = []
    for st in states:
        c = int(st.get("chains", u["chains"]))
        z = np.repeat(np.asarray(u["z"], dtype=np.int64)[None, :], c, axis=0)
        par = {key: np.repeat(floats(st[key])[None, :], c, axis=0) for key in ("weights", "means", "sds")}
        rng = np.random.default_rng(probe_seed)
        try:
            if name == "sample_weights":
                res = {"weights": raw(fn(rng, z, int(u["k"])))}
            elif name == "sample_means":
                res = {"means": raw(fn(rng, x, z, par["sds"], float(u["mean_loc"]), float(u["mean_scale"])))}
            else:
                with np.errstate(all="ignore"):
                    zz, probs = fn(rng, x, par["weights"], par["means"], par["sds"])
                    res = {"z": raw(zz), "probs": raw(probs)}
            res["status"] = "ok"
        except NotImplementedError:
            res = {"status": "not implemented"}
        except Exception as e:
            res = {"status": "error", "error": (type(e).__name__ + ": " + str(e))[:200]}
        results.append(res)
    out["update"] = dict(results[0], extreme=results[1:])
    return out


# ----------------------------------------------------------------------------- checks (trusted)


@guarded
def check_assess(answer, context):
    """The student's model's log density on reference choice maps equals the reference model's."""
    ref = np.asarray(context["assess"], dtype=np.float64)
    if not isinstance(answer, list) or len(answer) != len(ref):
        raise BadAnswer("expected one log density per choice map")
    ok = 0
    for got, r in zip(answer, ref):
        try:
            g = float(as_array(got, (), name="log density"))
        except BadAnswer:
            continue
        if abs(g - r) <= ASSESS_ATOL + ASSESS_RTOL * abs(r):
            ok += 1
    n = len(ref)
    if ok == n:
        return Verdict(1.0, "Your model's log density matches the specification on all test choice maps.")
    if ok == 0:
        return Verdict(0.0, f"Your model's log density differs from the specification. Check the priors "
                            f"({prior_text()}), that Normal takes a standard deviation, and the addresses.")
    return Verdict(0.0, f"Your model's log density matches the specification on {ok} of {n} test choice "
                        "maps only (all must match).")


@guarded
def check_simulate(answer, context):
    """Simulated choices have the right shapes, support and prior moments (computed here)."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    k, n = K, context["n"]
    sims = answer.get("sims")
    if not isinstance(sims, list) or len(sims) < 1:
        raise BadAnswer("no simulations")
    support = Verdict(0.0, "Simulated choices are outside their support (weights on the simplex, "
                           "sds > 0, z in {0, 1, 2}).")
    for s in sims:
        if not isinstance(s, dict) or not isinstance(s.get("points"), dict):
            raise BadAnswer("a simulated choice map lacks the addresses 'weights', 'means', 'sds', 'points'")
        w = as_array(s.get("weights"), (k,), name="weights")
        as_array(s.get("means"), (k,), name="means")
        sd = as_array(s.get("sds"), (k,), name="sds")
        z = as_array(s["points"].get("z"), (n,), name="points/z", integer=True)
        as_array(s["points"].get("x"), (n,), name="points/x")
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-4 or np.any(sd <= 0) or np.any((z < 0) | (z >= k)):
            return support
    every = answer.get("all")
    if not isinstance(every, dict):
        raise BadAnswer("no simulations")
    w = raw_array(every.get("weights"), "simulated weights", 2)
    mu = raw_array(every.get("means"), "simulated means", 2)
    sd = raw_array(every.get("sds"), "simulated sds", 2)
    z = raw_array(every.get("z"), "simulated points/z", 2)
    x = raw_array(every.get("x"), "simulated points/x", 2)
    m = mu.shape[0]
    if m < 100:
        raise BadAnswer("too few simulations")
    if w.shape != (m, k) or sd.shape != (m, k) or mu.shape != (m, k) or z.shape != (m, n) or x.shape != (m, n):
        raise BadAnswer("simulated choices have inconsistent shapes")
    if not all(np.all(np.isfinite(a)) for a in (w, mu, sd, z, x)):
        return Verdict(0.0, "Simulated choices contain NaN or infinite values.")
    if (np.any(w < 0) or np.any(np.abs(w.sum(axis=1) - 1) > 1e-4) or np.any(sd <= 0)
            or np.any(z != np.round(z)) or np.any((z < 0) | (z >= k))):
        return support
    zi = z.astype(np.int64)
    resid = (x - np.take_along_axis(mu, zi, axis=1)) / np.take_along_axis(sd, zi, axis=1)
    p = prior()
    loc, scale = float(np.asarray(p.mean_loc)[0]), float(p.mean_scale)
    sd_mean, sd_sd = p.sd_shape / p.sd_rate, math.sqrt(p.sd_shape) / p.sd_rate  # Gamma(shape, rate)
    moments = {  # (value, prior target, Monte Carlo se) for m data sets of K components, n points
        "mean_of_means": (mu.mean(), loc, scale / math.sqrt(m * k)),
        "sd_of_means": (mu.std(ddof=1), scale, scale / math.sqrt(2 * m * k)),
        "mean_of_sds": (sd.mean(), sd_mean, sd_sd / math.sqrt(m * k)),
        "mean_std_resid": (resid.mean(), 0.0, 1.0 / math.sqrt(m * n)),
        "var_std_resid": (resid.var(), 1.0, math.sqrt(2.0 / (m * n)) * 1.5),
    }
    if any(abs(v - target) > SIMULATE_Z * se + 1e-6 for v, target, se in moments.values()):
        return Verdict(0.0, "Data simulated from your model do not follow the specified prior and likelihood.")
    return Verdict(1.0, "Simulations have the right shapes, support and distribution.")


def _draws(answer, k) -> dict:
    """The three parameters' `draws.Draws` (all of the same size), or BadAnswer."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    got = {}
    for name in ("weights", "means", "sds"):
        try:
            got[name] = D.decode(answer.get(name), k, f"coffee_draws['{name}']")
        except BadAnswer as e:
            if "shape" in str(e):
                raise BadAnswer(f"coffee_draws arrays must all have shape (chains, samples, {k})") from None
            raise
    if len({(g.chains, g.samples) for g in got.values()}) != 1:
        raise BadAnswer(f"coffee_draws arrays must all have shape (chains, samples, {k})")
    return got



@guarded
def check_draws(answer, context):
    """coffee_draws has the required format: >= 4 chains x >= 1000 draws, valid, sorted by mean
    (over ALL draws: the kernel's statistics of every chain, checked on the raw chains)."""
    got = _draws(answer, context["k"])
    few = D.too_few(got["means"])
    if few is not None:
        return few
    w, mu, sd = got["weights"], got["means"], got["sds"]
    valid = bool(np.all(sd.min > 0) and np.all(w.min >= 0) and w.max_sum_error <= SIMPLEX_ATOL)
    if not (valid and mu.min_gap >= 0):
        return Verdict(0.5, "Draws must be finite, with weights on the simplex, sds > 0, and components sorted by "
                            "mean in every draw.")
    return Verdict(1.0, "Draws have the required format.")


def _permutation(got: dict, ref: dict) -> list:
    """The component order of the student's draws that best matches the reference, chosen jointly
    on the three parameters in units of the reference posterior sd ("any component order")."""
    names = ("weights", "means", "sds")
    s_all = np.stack([got[n].mean for n in names])
    r_all = np.stack([np.asarray(ref[n]["mean"]) for n in names])
    scale = np.stack([np.maximum(np.asarray(ref[n]["sd"]), 1e-6) for n in names])
    return list(best_permutation(s_all, r_all, scale))


def _posterior_param(answer, context, target, what):
    """Posterior summaries: validate, size, converge (all chains), permute, summary = the draws'
    mean, compare with the reference."""
    k = context["k"]
    got = _draws(answer, k)
    d = got[target]
    few = D.too_few(d)
    if few is not None:
        return few
    reported = as_array(answer.get("reported"), (k,), name=f"your reported posterior {target}")
    ref = context["posterior"]
    perm = _permutation(got, ref)
    mean, sd, se, reported = d.mean[perm], d.sd[perm], d.se[perm], reported[perm]
    bad = not_converged(np.maximum(d.rhat, d.rhat_raw), what)
    if bad is not None:
        return bad
    rmean, rsd, rse = (np.asarray(ref[target][key]) for key in ("mean", "sd", "se"))
    chains, samples = d.chains, d.samples
    # the reported summary must be the mean of ALL the draws: within SUMMARY_Z standard errors of
    # a run of this size, plus the rounding of the draws' precision
    allowed = D.summary_allowance(d, mean, rsd / math.sqrt(d.size), SUMMARY_Z)
    off = np.abs(reported - mean) > allowed
    if np.any(off):
        return Verdict(0.0, f"Your reported posterior {what} (coffee_summary['{target}']) is not the average of "
                            f"your draws coffee_draws['{target}'] over all chains and samples, for "
                            f"{int(off.sum())} component(s): compute it with coffee_draws['{target}'].mean(axis=(0, 1)).")
    se = capped_se(se, rsd, chains, samples)
    within = mc_compare(mean, se, rmean, rse, 0.0)
    if np.all(within) and not np.all(sd_ok(sd, ref[target], chains, samples)):
        return Verdict(0.0, f"The average of your draws of the {what} is right, but their spread is not the "
                            "posterior's: a sampler that does not draw from the exact conditionals (check "
                            "your updates).")
    if np.all(within):
        return Verdict(1.0, f"Posterior {what} agree with the reference within Monte Carlo error.")
    frac = float(np.mean(within))
    return Verdict(0.5 * frac if frac >= 2 / 3 else 0.0,
                   f"Posterior {what} differ from the reference for {int((~within).sum())} component(s) "
                   "by more than Monte Carlo error.")


@guarded
def check_means(answer, context):
    """Posterior means of the blend means within MC tolerance (any component order)."""
    return _posterior_param(answer, context, "means", "caffeine means")


@guarded
def check_weights(answer, context):
    """Posterior means of the blend proportions within MC tolerance (any component order)."""
    return _posterior_param(answer, context, "weights", "blend proportions")


@guarded
def check_sds(answer, context):
    """Posterior means of the blend sds within MC tolerance (any component order)."""
    return _posterior_param(answer, context, "sds", "standard deviations")


@guarded
def check_assignments(answer, context):
    """P(z_i = k | data) for the 30 cups (any component order), within the Monte Carlo error of
    the student's draws and of the reference."""
    ref = np.asarray(context["assignment_probs"])
    n, k = ref.shape
    got = _draws(answer, k)
    few = D.too_few(got["means"])
    if few is not None:
        return few
    probs = as_array(answer.get("probs"), (n, k), name="coffee_assignment_probs")
    if np.any(probs < -D.PROB_ATOL) or np.any(np.abs(probs.sum(axis=1) - 1) > D.PROB_SUM_ATOL):
        return Verdict(0.0, "Rows of coffee_assignment_probs must be probability vectors (non-negative, summing to 1).")
    tol = D.probs_allowance(context["x"], got["weights"], got["means"], got["sds"], context["assignment_se"],
                            MAX_IAT, Z_MC)
    perm = list(best_permutation(probs, ref))
    ok = np.all(np.abs(probs[:, perm] - ref) <= tol[:, perm], axis=1)
    if np.all(ok):
        return Verdict(1.0, "Assignment probabilities agree with the reference posterior within Monte Carlo error.")
    if np.mean(ok) >= 0.8:
        return Verdict(0.5, f"Assignment probabilities are off for {int((~ok).sum())} cup(s).")
    return Verdict(0.0, "Assignment probabilities do not agree with the posterior.")


def _probe_shape_error(name, c, k, n) -> Verdict:
    if name == "sample_weights":
        return Verdict(0.0, f"sample_weights must return ({c}, {k}) weights on the simplex for {c} chains "
                            "(got other shapes or values; an empty component must still get a weight).")
    if name == "sample_means":
        return Verdict(0.0, f"sample_means must return ({c}, {k}) finite means for {c} chains.")
    return Verdict(0.0, f"sample_z must return z ({c}, {n}) with entries in 0..{k - 1} and probs ({c}, {n}, {k}).")


def _exact_z_probs(x, weights, means, sds) -> np.ndarray:
    from scipy.special import logsumexp
    from scipy.stats import norm

    with np.errstate(all="ignore"):
        lj = np.log(np.asarray(weights))[None, :] + norm.logpdf(np.asarray(x)[:, None], np.asarray(means),
                                                                  np.asarray(sds))
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def probe_verdict(upd, name) -> Verdict | None:
    """None when the student's update function `name` passes its test on the probe state(s)
    (``upd`` is what `export_update` exported under "update"); else a zero Verdict saying what
    is wrong (not completed, an error, or not the exact conditional)."""
    from scipy.stats import binom

    if not isinstance(upd, dict) or upd.get("status") in ("missing", "not implemented"):
        return Verdict(0.0, f"{name} is not completed: half of this part grades that function itself.")
    if upd.get("status") != "ok":
        return Verdict(0.0, f"Your {name} raised an error when the grader called it on a test state "
                            f"({sanitize(str(upd.get('error', '')), 120)}).")
    u = update_inputs()
    c, k = u["chains"], u["k"]
    x, z = np.asarray(u["x"]), np.asarray(u["z"])
    n = x.shape[0]
    counts = np.bincount(z, minlength=k)
    if name == "sample_weights":
        w = raw_array(upd.get("weights"), "sample_weights(...)", 2)
        if (w.shape != (c, k) or not np.all(np.isfinite(w)) or np.any(w < 0)
                or np.any(np.abs(w.sum(1) - 1) > SIMPLEX_ATOL)):
            return _probe_shape_error(name, c, k, n)
        a = prior().concentration + counts  # the weights' marginals are Beta(a_k, a0 - a_k)
        b = a.sum() - a
        mean, var_ = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        excess = 6 * ((a - b) ** 2 * (a + b + 1) - a * b * (a + b + 2)) / (a * b * (a + b + 2) * (a + b + 3))
        ok = np.all(np.abs(w.mean(0) - mean) <= UPDATE_Z * np.sqrt(var_ / c))
        ok &= np.all(np.abs(w.var(0) / var_ - 1) <= UPDATE_Z * np.sqrt((excess + 2) / c))
        return None if ok else Verdict(0.0, "Your sample_weights does not draw from the weights' conditional "
                                            "Dirichlet(1 + n_1, ..., 1 + n_K) (the prior adds 1 to each count).")
    if name == "sample_means":
        m = raw_array(upd.get("means"), "sample_means(...)", 2)
        if m.shape != (c, k) or not np.all(np.isfinite(m)):
            return _probe_shape_error(name, c, k, n)
        sds = np.asarray(u["sds"])
        prec = 1 / u["mean_scale"] ** 2 + counts / sds ** 2
        post_mean = (u["mean_loc"] / u["mean_scale"] ** 2 + np.bincount(z, weights=x, minlength=k) / sds ** 2) / prec
        post_sd = 1 / np.sqrt(prec)
        ok = np.all(np.abs(m.mean(0) - post_mean) <= UPDATE_Z * post_sd / math.sqrt(c))
        ok &= np.all(np.abs(m.std(0, ddof=1) / post_sd - 1) <= UPDATE_Z / math.sqrt(2 * c))
        return None if ok else Verdict(0.0, "Your sample_means does not draw from the means' conditional Normal "
                                            "(posterior precision 1/scale^2 + n_k/sd_k^2; check the prior term, "
                                            "sd versus variance, and empty components).")
    zz = raw_array(upd.get("z"), "sample_z(...) z", 2)
    probs = raw_array(upd.get("probs"), "sample_z(...) probs", 3)
    if zz.shape != (c, n) or probs.shape != (c, n, k) or np.any(~np.isfinite(zz) | (zz < 0) | (zz >= k) | (zz != np.round(zz))):
        return _probe_shape_error(name, c, k, n)
    exact = _exact_z_probs(x, u["weights"], u["means"], u["sds"])  # (n, k)
    if not np.all(np.abs(probs - exact[None]) <= 1e-6 + 1e-4 * exact[None]):
        return Verdict(0.0, "The probabilities sample_z returns are not P(z_i = k | x_i, parameters) "
                            "(proportional to pi_k N(x_i; mu_k, sigma_k), normalised over k).")
    # counts of each z_i = k against Binomial(c, p): exact two-sided tails (rare outcomes too)
    hits = (zz.astype(np.int64)[..., None] == np.arange(k)).sum(0)
    # (against probabilities within PROBE_Z_RESOLUTION: a float32 uniform number picks a label of
    # probability 1e-13 with probability 2^-24)
    tail = np.minimum(binom.cdf(hits, c, np.maximum(exact - PROBE_Z_RESOLUTION, 0.0)),
                      binom.sf(hits - 1, c, np.minimum(exact + PROBE_Z_RESOLUTION, 1.0)))
    if np.any(tail < UPDATE_P / 2):
        return Verdict(0.0, "The z that sample_z draws do not follow the probabilities it returns.")
    extremes = upd.get("extreme") if isinstance(upd.get("extreme"), list) else []
    for st, res in zip(u["extreme"], extremes + [None] * (len(u["extreme"]) - len(extremes))):
        what = {"underflow": "every density N(x_i; mu_k, sigma_k) is below 1e-340"}[st["name"]]
        ce = st["chains"]
        good = isinstance(res, dict) and res.get("status") == "ok"
        if good:
            pz = raw_array(res.get("probs"), "sample_z(...) probs", 3)
            zz = raw_array(res.get("z"), "sample_z(...) z", 2)
            ex = _exact_z_probs(x, st["weights"], st["means"], st["sds"])
            good = (pz.shape == (ce, n, k) and zz.shape == (ce, n) and bool(np.all(np.isfinite(pz)))
                    and bool(np.all(np.abs(pz - ex[None]) <= PROBE_EXTREME_ATOL)))
        if not good:
            return Verdict(0.0, f"Your sample_z fails on a state where {what}: its probabilities are not "
                                "P(z_i = k | x_i, parameters) there (NaN, or an error). Work in log space: "
                                "log pi_k + log N(x_i; mu_k, sigma_k), subtract the maximum over k, then exponentiate "
                                "and normalise.")
    return None


def _with_update(verdict: Verdict, answer, name) -> Verdict:
    """Half of the part for the draws' verdict, half for the update function's own test."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    u = probe_verdict(answer.get("update"), name)
    if u is None:
        return Verdict(0.5 * verdict.fraction + 0.5, verdict.message + f" Your {name} draws from its exact conditional.")
    return Verdict(0.5 * verdict.fraction, f"{verdict.message} {u.message}")


@guarded
def check_means_and_update(answer, context):
    """Posterior means of the blend means (half), and sample_means on a test state (half)."""
    return _with_update(check_means(answer.get("draws"), context), answer, "sample_means")


@guarded
def check_weights_and_update(answer, context):
    """Posterior means of the blend proportions (half), and sample_weights on a test state (half)."""
    return _with_update(check_weights(answer.get("draws"), context), answer, "sample_weights")


@guarded
def check_assignments_and_update(answer, context):
    """P(z_i = k | data) for the 30 cups (half), and sample_z on test states (half)."""
    return _with_update(check_assignments(answer.get("draws"), context), answer, "sample_z")


# ----------------------------------------------------------------------------- what the notebook states

PROBE_RATES = {"seeds": 1000, "loop_seeds": 50, "false_fail_upper95": 0.003, "power_seeds": 100, "power_min": 1.0}
"""What benchmarks/probe_rates.py measured (results/probe_rates.json; a test keeps them in step)."""


def draws_rules(k: int) -> str:
    """The rules on a student's draws and the summaries reported from them (both notebooks)."""
    return (
        f"Every part that uses your draws needs at least {MIN_CHAINS} chains x {MIN_SAMPLES} kept draws (any number of "
        f"chains up to {MAX_CHAINS:,}); your chains must agree: split R-hat over all chains at most "
        f"{RHAT_MAX}. Summaries are compared with a reference posterior within {Z_MC:g} combined Monte Carlo standard "
        f"errors (yours from batch means of all your chains, capped at that of draws 1/{MAX_IAT:g} as informative as "
        f"independent ones: a run that has not mixed does not widen its own tolerance); the spread of your draws must "
        f"match the posterior sd within the same error. A summary you report must be that statistic of all your draws, "
        f"to {SUMMARY_Z:g} Monte Carlo standard errors plus rounding: {D.FLOAT64_SUMMARY_RTOL:g} relative for float64 "
        f"draws, 4 x 2^-24 x sqrt(number of draws) relative for float32 draws (e.g. {4 * D.FLOAT32_U * math.sqrt(12000):.1e} "
        f"at 12,000 draws). Assignment probabilities must agree with the reference within {Z_MC:g} combined Monte "
        f"Carlo standard errors (yours estimated from the conditional probabilities of your own draws, the same cap, "
        f"plus the noise of counting sampled labels) plus {D.PROB_ATOL:g}; their rows must sum to 1 within "
        f"{D.PROB_SUM_ATOL:g}.")


def precision_text() -> str:
    r = PROBE_RATES
    return (
        f"**Precision.** Model log densities are compared at float32 precision. Posterior summaries are compared in "
        f"any component order. {draws_rules(K)} Weights must sum to 1 within {SIMPLEX_ATOL:g}. Half of the points "
        f"for the posterior means, the weights and the assignments grade your `sample_means`, `sample_weights` and "
        f"`sample_z` themselves: each is called once on a test state of its own ({UPDATE_CHAINS} chains at once), "
        f"and its draws must follow the exact conditional (moments within {UPDATE_Z:g} Monte Carlo standard errors, "
        f"label counts by a binomial tail of at least {UPDATE_P:g}, probabilities give or take 2^-24); `sample_z` is also called on a state where every "
        f"density N(x_i; mu_k, sigma_k) is below 1e-340, where probabilities computed outside log space are 0/0 "
        f"(its probabilities must be within {PROBE_EXTREME_ATOL:g} of the exact ones there). Measured over "
        f"{r['seeds']:,} seeds, these tests fail a correct function in less than {100 * r['false_fail_upper95']:.1f} % "
        f"of cases (95 % bound; no failure seen; per-cup loop versions: none in {r['loop_seeds']} seeds), and catch each mistake we list (Dirichlet(n_k), a missing prior term, "
        f"variance for sd, no noise, linear space, ignored weights, labels not drawn) in "
        f"{100 * r['power_min']:.0f} % of {r['power_seeds']} seeds (benchmarks/probe_rates.py).")


# ----------------------------------------------------------------------------- the assignment

ASSIGNMENT = Assignment(
    id="coffee_blends",
    notebook="coffee_blends.ipynb",
    parts=(
        Part("coffee_model_density", 3.0, export_assess, check_assess,
             "the GenJAX model's log density matches the specification"),
        Part("coffee_model_simulate", 1.0, export_simulate, check_simulate,
             "simulating the model gives choices of the right shape, support and distribution"),
        Part("coffee_draws_format", 1.0, export_draws, check_draws,
             "posterior draws: enough chains and samples, sorted by mean"),
        Part("coffee_posterior_means", 2.0, functools.partial(export_update, name="sample_means", reported="means"),
             check_means_and_update, "posterior means of the blend caffeine levels (and sample_means)"),
        Part("coffee_posterior_weights", 1.0,
             functools.partial(export_update, name="sample_weights", reported="weights"),
             check_weights_and_update, "posterior means of the blend proportions (and sample_weights)"),
        Part("coffee_posterior_sds", 2.0, functools.partial(export_draws, reported="sds"), check_sds,
             "posterior means of the blend standard deviations"),
        Part("coffee_assignments", 2.0, functools.partial(export_update, name="sample_z"),
             check_assignments_and_update, "per-cup assignment probabilities (and sample_z)"),
    ),
    reference=reference,
    inputs=inputs,
    sandbox_offers=("numpy", "scipy", "jax", "genjax"),  # the allow-list: the model and the sampler are the student's to write
    packages="`numpy`, `scipy`, `jax` and `genjax`; the course package `gmmcourse` is not available "
             "(the model and the sampler are yours to write)",
    precision=precision_text(),
)
