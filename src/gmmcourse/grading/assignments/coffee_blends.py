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
from gmmcourse.grading.checks import (MAX_IAT, MIN_CHAINS, MIN_SAMPLES, RHAT_MAX, SUMMARY_Z, Z_MC, BadAnswer,
                                      as_array, best_permutation, capped_se, draws_from_export, guarded,
                                      mc_compare, not_converged, probs_check, raw_array, sd_ok, summary_arrays)
from gmmcourse.grading.kernel_side import draws, floats, raw, var
from gmmcourse.grading.spec import Assignment, Part, Verdict

__all__ = ["ASSIGNMENT", "K", "N_CHOICE_MAPS", "inputs", "reference", "prior"]

K = 3
N_CHOICE_MAPS = 6
ASSESS_RTOL, ASSESS_ATOL = 2e-4, 1e-3
"""Model log densities: float32 precision (a sum of ~100 float32 terms of size ~1e2)."""
SIMULATE_Z = 6.0
"""Prior moments of simulations: within SIMULATE_Z Monte Carlo standard errors."""


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
    return {"n": n, "choice_maps": maps}


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
    post = R.posterior("coffee")
    return {"k": K, "n": inp["n"], "assess": assess, "posterior": R.posterior_summary(post),
            "assignment_probs": np.asarray(post.assignment_probs, float).tolist()}


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
    """The raw draws of ``coffee_draws`` (and ``coffee_summary[reported]``)."""
    d = var(student, "coffee_draws")
    out = {k: draws(d[k]) for k in ("weights", "means", "sds")}
    if reported is not None:
        out["reported"] = floats(var(student, "coffee_summary")[reported])
    return out


def export_array(student, inputs, name):
    """One of the student's arrays, as float64."""
    return floats(var(student, name))


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


@guarded
def check_draws(answer, context):
    """coffee_draws has the required format: >= 4 chains x >= 1000 draws, valid, sorted by mean
    (all computed here from the exported draws)."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    got = {}
    for name in ("weights", "means", "sds"):
        try:
            got[name] = draws_from_export(answer.get(name), k, f"coffee_draws['{name}']")
        except BadAnswer as e:
            if "shape" in str(e):
                return Verdict(0.0, f"coffee_draws arrays must all have shape (chains, samples, {k}).")
            raise
    dims = {(g[1], g[2]) for g in got.values()}
    if len(dims) != 1:
        return Verdict(0.0, f"coffee_draws arrays must all have shape (chains, samples, {k}).")
    c, s = dims.pop()
    if c < MIN_CHAINS or s < MIN_SAMPLES:
        return Verdict(0.0, f"Too few draws: {c} chains x {s} samples; at least {MIN_CHAINS} x {MIN_SAMPLES} are required.")
    w, mu, sd = got["weights"][0], got["means"][0], got["sds"][0]
    valid = bool(np.all(sd > 0) and np.all(w >= 0) and np.allclose(w.sum(axis=-1), 1.0, atol=1e-4))
    ordered = bool(np.all(np.diff(mu, axis=-1) >= 0))
    if not (valid and ordered):
        return Verdict(0.5, "Draws must be finite, with weights on the simplex, sds > 0, and components sorted by mean in every draw.")
    return Verdict(1.0, "Draws have the required format.")


def _posterior_param(answer, context, target, what):
    """Posterior summaries: validate, converge, permute (jointly), compare."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    names = ("weights", "means", "sds")
    stud = {name: summary_arrays(answer.get(name), k, name) for name in names}
    chains = min(stud[n][3] for n in names)
    samples = min(stud[n][4] for n in names)
    if chains < MIN_CHAINS or samples < MIN_SAMPLES:
        return Verdict(0.0, f"Too few draws ({chains} chains x {samples} samples); at least "
                            f"{MIN_CHAINS} x {MIN_SAMPLES} are required for this part.")
    reported = as_array(answer.get("reported"), (k,), name=f"your reported posterior {target}")
    ref = context["posterior"]
    # permutation chosen jointly on the three parameters, in units of the reference posterior sd
    # (the notebook promises "any component order")
    s_all = np.stack([stud[n][0] for n in names])
    r_all = np.stack([np.asarray(ref[n]["mean"]) for n in names])
    scale = np.stack([np.maximum(np.asarray(ref[n]["sd"]), 1e-6) for n in names])
    perm = list(best_permutation(s_all, r_all, scale))
    mean, sd, se, _, _, step, rhat = stud[target]
    mean, sd, se, reported = mean[perm], sd[perm], se[perm], reported[perm]
    bad = not_converged(rhat, what)
    if bad is not None:
        return bad
    rmean, rsd, rse = (np.asarray(ref[target][key]) for key in ("mean", "sd", "se"))
    n_draws = chains * samples
    # the reported summary must be the mean of the draws: within SUMMARY_Z standard errors of
    # a run of this size (Z_MC of them when the export had to thin a very long run)
    z_rep = Z_MC if step > 1 else SUMMARY_Z
    if not np.all(np.abs(reported - mean) <= z_rep * rsd / math.sqrt(n_draws) + 1e-6 * np.abs(mean)):
        return Verdict(0.0, f"Your reported posterior {what} is not the average of your draws.")
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
    """P(z_i = k | data) for the 30 cups (any component order)."""
    return probs_check(answer, np.asarray(context["assignment_probs"]), "coffee_assignment_probs")


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
        Part("coffee_posterior_means", 2.0, functools.partial(export_draws, reported="means"), check_means,
             "posterior means of the blend caffeine levels"),
        Part("coffee_posterior_weights", 1.0, functools.partial(export_draws, reported="weights"), check_weights,
             "posterior means of the blend proportions"),
        Part("coffee_posterior_sds", 2.0, functools.partial(export_draws, reported="sds"), check_sds,
             "posterior means of the blend standard deviations"),
        Part("coffee_assignments", 2.0, functools.partial(export_array, name="coffee_assignment_probs"),
             check_assignments, "per-cup assignment probabilities"),
    ),
    reference=reference,
    inputs=inputs,
    sandbox_hide=("gmmcourse",),  # the model and the sampler are the student's to write
    packages="`numpy`, `scipy`, `jax` and `genjax`; the course package `gmmcourse` is not available "
             "(the model and the sampler are yours to write)",
    precision=(
        f"**Precision.** Model log densities are compared at float32 precision. Posterior summaries are "
        f"compared with a reference posterior within Monte Carlo error, in any component order: your "
        f"chains must agree (split R-hat at most {RHAT_MAX}), and the tolerance is that of draws at least "
        f"1/{MAX_IAT:g} as informative as independent ones; a summary you report must be the "
        f"statistic of your draws (to {SUMMARY_Z:g} Monte Carlo standard errors)."),
)
