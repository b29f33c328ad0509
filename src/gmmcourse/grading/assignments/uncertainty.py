"""Assignment ``uncertainty``: P(z_i | data) for the bentos, posterior versus point estimate.

The student writes EM (graded against the maximum-likelihood fit), hard labels, and summaries
of the posterior drawn by the given reference sampler (graded within Monte Carlo error).
Component 0 is the lighter one everywhere: order is checked, not forgiven.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from gmmcourse.grading import reference as R
from gmmcourse.grading.checks import (MAX_IAT, MIN_CHAINS, MIN_SAMPLES, ORDER_ADVICE, RHAT_MAX, SUMMARY_Z, Z_MC,
                                      BadAnswer, as_array, capped_se, close, guarded, mc_compare, not_converged,
                                      probs_check, sd_ok, summary_arrays)
from gmmcourse.grading.kernel_side import draws, floats, var
from gmmcourse.grading.spec import Assignment, Part, Verdict

__all__ = ["ASSIGNMENT", "K", "EM_RTOL", "PLUGIN_RTOL", "HIDE", "reference"]

K = 2
EM_RTOL = {"weights": 1e-3, "means": 2e-6, "sds": 2e-3}
"""EM stops at a tolerance: relative agreement with the maximum-likelihood fit per parameter
(2e-6 of ~500 g is 1e-3 g for the means, far below the posterior-vs-MLE difference)."""
PLUGIN_RTOL = 1e-2
"""Plug-in log-odds from the student's own EM fit (within EM_RTOL): relative tolerance."""

HIDE = tuple(f"gmmcourse/{m}.py" for m in ("categorize", "selection", "exact", "importance", "plain"))
"""The notebook gives the reference sampler (gmmcourse.gibbs, which needs data, models, em,
precision and validation); what the student computes by hand is hidden."""


@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The maximum-likelihood fit (sorted by mean), its labels and log-odds, and the reference posterior."""
    from gmmcourse.categorize import categorize, log_joint_by_component
    from gmmcourse.data import BENTO_WEIGHTS
    from gmmcourse.em import em

    fit = em(BENTO_WEIGHTS, K, dtype=np.float64)
    w, m, s = (np.asarray(a, float) for a in (fit.weights, fit.means, fit.sds))
    order = np.argsort(m)
    w, m, s = w[order], m[order], s[order]
    probs = R.f64(categorize, BENTO_WEIGHTS, w, m, s)
    lj = R.f64(log_joint_by_component, BENTO_WEIGHTS, w, m, s)  # (K, N)
    lj425 = R.f64(log_joint_by_component, [425.0], w, m, s)
    post = R.posterior("bento")
    return {
        "k": K,
        "em": [w.tolist(), m.tolist(), s.tolist()],
        "labels": np.argmax(probs, axis=1).tolist(),
        "log_odds_425": float(lj425[1, 0] - lj425[0, 0]),
        "most_ambiguous": int(np.argmin(np.abs(lj[1] - lj[0]))),
        "posterior": R.posterior_summary(post),
        "assignment_probs": np.asarray(post.assignment_probs, float).tolist(),
    }


# ----------------------------------------------------------------------------- exports (in the kernel)


def export_em(student, inputs):
    fit = var(student, "bento_em")
    return {k: floats(fit[k]) for k in ("weights", "means", "sds")}


def export_value(student, inputs, name):
    return np.asarray(var(student, name))


def export_means(student, inputs):
    return {"means": draws(var(student, "bento_draws")["means"]),
            "reported_mean": floats(var(student, "bento_means_mean")),
            "reported_sd": floats(var(student, "bento_means_sd"))}


def export_ambiguity(student, inputs):
    return {"log_odds_425": var(student, "log_odds_425"), "most_ambiguous": var(student, "most_ambiguous")}


# ----------------------------------------------------------------------------- checks (trusted)


@guarded
def check_em(answer, context):
    """EM point estimate (weights, means, sds) equals the maximum-likelihood fit."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    k = context["k"]
    got = np.stack([as_array(answer.get(n), (k,), name=f"bento_em['{n}']") for n in ("weights", "means", "sds")])
    ref = np.asarray(context["em"])  # (3, K), sorted by mean as the notebook asks
    tol = [EM_RTOL[n] for n in ("weights", "means", "sds")]
    ok = [close(got[i], ref[i], tol[i], 0.0) for i in range(3)]
    if not all(ok) and all(close(got[i, ::-1], ref[i], tol[i], 0.0) for i in range(3)):
        return Verdict(0.0, "The EM fit is right but not sorted by mean: component 0 must be the lighter one.")
    if all(ok):
        return Verdict(1.0, "The EM estimate is the maximum-likelihood fit.")
    if ok[1] and (ok[0] or ok[2]):
        return Verdict(0.5, "The EM means are right but not all of weights and sds; check the M-step.")
    return Verdict(0.0, "The EM estimate is not the maximum-likelihood fit.")


@guarded
def check_labels(answer, context):
    """Point-estimate (hard) assignment of the 20 bentos (0 = lighter component, as stated)."""
    ref = np.asarray(context["labels"], dtype=np.int64)
    got = as_array(answer, ref.shape, name="bento_point_labels", integer=True)
    k = context["k"]
    if np.any((got < 0) | (got >= k)):
        return Verdict(0.0, f"Labels must be integers in 0..{k - 1}.")
    if np.array_equal(got, ref):
        return Verdict(1.0, "Correct hard assignment.")
    for p in itertools.permutations(range(k)):
        if np.array_equal(np.asarray(p)[got], ref):
            return Verdict(0.0, ORDER_ADVICE.format(what="labels"))
    return Verdict(0.0, "The hard assignment does not match the point estimate's most likely components.")


@guarded
def check_posterior_probs(answer, context):
    """P(z_i = k | data) for the 20 bentos (component 0 = lighter, as the notebook states)."""
    return probs_check(answer, np.asarray(context["assignment_probs"]), "bento_assignment_probs", any_order=False)


@guarded
def check_posterior_means(answer, context):
    """Posterior mean and posterior sd of the two component means (component 0 = lighter)."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    mean, sd, se, chains, samples, step, rhat = summary_arrays(answer.get("means"), k, "means")
    if chains < MIN_CHAINS or samples < MIN_SAMPLES:
        return Verdict(0.0, f"Too few draws ({chains} chains x {samples} samples); at least "
                            f"{MIN_CHAINS} x {MIN_SAMPLES} are required.")
    rep_mean = as_array(answer.get("reported_mean"), (k,), name="bento_means_mean")
    rep_sd = as_array(answer.get("reported_sd"), (k,), name="bento_means_sd")
    ref = context["posterior"]["means"]
    rmean, rsd, rse = (np.asarray(ref[key]) for key in ("mean", "sd", "se"))
    n_draws = chains * samples
    if not np.all(np.diff(mean) > 0) and np.all(np.diff(mean[::-1]) > 0):
        return Verdict(0.0, ORDER_ADVICE.format(what="draws"))
    bad = not_converged(rhat, "component means")
    if bad is not None:
        return bad
    # reported = statistics of the draws, within SUMMARY_Z Monte Carlo standard errors
    z_rep = Z_MC if step > 1 else SUMMARY_Z
    mc_mean = rsd / math.sqrt(n_draws)
    mc_sd = rsd * math.sqrt(MAX_IAT / (2 * n_draws)) if step > 1 else rsd / math.sqrt(2 * n_draws)
    if not (np.all(np.abs(rep_mean - mean) <= z_rep * mc_mean + 1e-6 * np.abs(mean))
            and np.all(np.abs(rep_sd - sd) <= z_rep * mc_sd + 1e-6 * sd)):
        return Verdict(0.0, "The reported posterior mean/sd are not those of your draws (compute them from "
                            "bento_draws['means'], not from another estimate).")
    ok_mean = mc_compare(mean, capped_se(se, rsd, chains, samples), rmean, rse, 0.0)
    ok_sd = sd_ok(sd, ref, chains, samples)
    score = 0.5 * float(np.all(ok_mean)) + 0.5 * float(np.all(ok_sd))
    if score == 1.0:
        return Verdict(1.0, "Posterior mean and uncertainty of the component means agree with the reference.")
    if score == 0.5:
        which = "posterior sds" if np.all(ok_mean) else "posterior means"
        return Verdict(0.5, f"The {which} of the component means differ from the reference.")
    return Verdict(0.0, "Posterior mean and sd of the component means differ from the reference.")


@guarded
def check_ambiguity(answer, context):
    """Plug-in log-odds at 425 g and the most ambiguous of the 20 bentos under the EM fit."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    lo = float(as_array(answer.get("log_odds_425"), (), name="log_odds_425"))
    idx = int(as_array(answer.get("most_ambiguous"), (), name="most_ambiguous", integer=True))
    ref_lo = context["log_odds_425"]
    ok_lo = abs(lo - ref_lo) <= PLUGIN_RTOL * max(1.0, abs(ref_lo))
    ok_idx = idx == context["most_ambiguous"]
    score = 0.5 * ok_lo + 0.5 * ok_idx
    msgs = []
    if not ok_lo:
        msgs.append("log_odds_425 is not the plug-in log-odds (heavier vs lighter component) at 425 g")
    if not ok_idx:
        msgs.append("most_ambiguous is not the index of the least certain bento under the EM fit")
    return Verdict(score, "Correct." if score == 1.0 else "; ".join(msgs) + ".")


# ----------------------------------------------------------------------------- the assignment

ASSIGNMENT = Assignment(
    id="uncertainty",
    notebook="uncertainty.ipynb",
    parts=(
        Part("bento_em_fit", 2.0, export_em, check_em, "EM point estimate of the bento mixture"),
        Part("bento_point_labels", 1.0, functools.partial(export_value, name="bento_point_labels"),
             check_labels, "hard assignment from the point estimate"),
        Part("bento_posterior_probs", 2.0, functools.partial(export_value, name="bento_assignment_probs"),
             check_posterior_probs, "posterior assignment probabilities"),
        Part("bento_posterior_means", 2.0, export_means, check_posterior_means,
             "posterior mean and sd of the component means"),
        Part("bento_ambiguity", 2.0, export_ambiguity, check_ambiguity,
             "plug-in log-odds at 425 g and the most ambiguous bento"),
    ),
    reference=reference,
    inputs=dict,
    sandbox_offers=("numpy", "scipy", "jax", "genjax") + tuple(f"gmmcourse.{m}" for m in ("gibbs", "models", "data", "em", "gamma", "precision", "shapes", "validation", "programs")),  # the allow-list: what the reference sampler needs
    packages="`numpy`, `scipy` and the parts of `gmmcourse` that the reference sampler needs "
             "(`gmmcourse.gibbs`, `gmmcourse.models`, `gmmcourse.data`); `gmmcourse.categorize` is not "
             "available, and EM is yours to write (do not call `gmmcourse.em`)",
    precision=(
        f"**Precision.** The EM fit is compared with the maximum-likelihood fit at relative tolerance "
        f"{EM_RTOL['weights']:g} (weights), {EM_RTOL['means']:g} (means), {EM_RTOL['sds']:g} (sds). "
        f"Component 0 is the lighter one everywhere, and order is checked. Posterior summaries are "
        f"compared within Monte Carlo error: your chains must agree (split R-hat at most {RHAT_MAX}), and "
        f"a summary you report must be the statistic of your draws (to {SUMMARY_Z:g} Monte Carlo "
        "standard errors)."),
)
