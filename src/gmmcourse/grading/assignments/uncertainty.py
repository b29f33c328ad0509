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

from gmmcourse.grading import draws as D
from gmmcourse.grading import reference as R
from gmmcourse.grading.checks import (EXACT_ATOL, EXACT_RTOL, MAX_IAT, ORDER_ADVICE,
                                      SUMMARY_Z, Z_MC, BadAnswer, as_array, best_permutation, capped_se,
                                      close, exact_close, guarded, mc_compare, not_converged, sd_ok)
from gmmcourse.grading.kernel_side import draws, floats, var
from gmmcourse.grading.assignments.coffee_blends import draws_rules
from gmmcourse.grading.spec import Assignment, Part, Verdict

__all__ = ["ASSIGNMENT", "K", "EM_RTOL", "HIDE", "reference", "plugin_log_odds"]

K = 2
EM_RTOL = {"weights": 1e-3, "means": 2e-6, "sds": 2e-3}
"""EM stops at a tolerance: relative agreement with the maximum-likelihood fit per parameter
(2e-6 of ~500 g is 1e-3 g for the means, far below the posterior-vs-MLE difference)."""

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
    from gmmcourse.exact import enumerate_exact
    from gmmcourse.models import BENTO_PRIOR

    post = R.posterior("bento")
    # P(z_i = k | data) exactly, by enumeration (2^19 assignments), the heaviest bento in component
    # 1: with these well-separated data, the labelling "component 0 = lighter" up to ~1e-20
    exact = enumerate_exact(BENTO_WEIGHTS, BENTO_PRIOR, anchor=int(np.argmax(BENTO_WEIGHTS)))
    p = np.asarray(exact.assignment_probs, dtype=np.float64)
    return {
        "k": K,
        "em": [w.tolist(), m.tolist(), s.tolist()],
        "labels": np.argmax(probs, axis=1).tolist(),
        "log_odds_425": float(lj425[1, 0] - lj425[0, 0]),
        "most_ambiguous": int(np.argmin(np.abs(lj[1] - lj[0]))),
        "posterior": R.posterior_summary(post),
        "x": np.asarray(BENTO_WEIGHTS, float).tolist(),
        "assignment_probs": p.tolist(),
        "assignment_se": np.zeros_like(p).tolist(),  # exact
    }


def plugin_log_odds(v: float, weights, means, sds) -> float:
    """log P(z = 1 | v) - log P(z = 0 | v) under the parameters (heavier versus lighter)."""
    from scipy.stats import norm

    w, m, s = (np.asarray(a, dtype=np.float64) for a in (weights, means, sds))
    order = np.argsort(m)
    lj = np.log(w[order]) + norm.logpdf(v, m[order], s[order])
    return float(lj[1] - lj[0])


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


def export_probs(student, inputs):
    d = var(student, "bento_draws")
    out = {"probs": floats(var(student, "bento_assignment_probs"))}
    out.update({k: draws(d[k]) for k in ("weights", "means", "sds")})
    return out


def export_ambiguity(student, inputs):
    out = {"log_odds_425": var(student, "log_odds_425"), "most_ambiguous": var(student, "most_ambiguous")}
    try:
        fit = var(student, "bento_em")
        out["em"] = {k: floats(fit[k]) for k in ("weights", "means", "sds")}
    except Exception:
        out["em"] = None
    return out


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
    """P(z_i = k | data) for the 20 bentos (component 0 = lighter, as the notebook states), within
    the Monte Carlo error of the student's draws and of the reference."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    ref = np.asarray(context["assignment_probs"])
    n, k = ref.shape
    got = {name: D.decode(answer.get(name), k, f"bento_draws['{name}']") for name in ("weights", "means", "sds")}
    if len({(g.chains, g.samples) for g in got.values()}) != 1:
        raise BadAnswer(f"bento_draws arrays must all have shape (chains, samples, {k})")
    few = D.too_few(got["means"], "bento_draws")
    if few is not None:
        return few
    probs = as_array(answer.get("probs"), (n, k), name="bento_assignment_probs")
    if np.any(probs < -D.PROB_ATOL) or np.any(np.abs(probs.sum(axis=1) - 1) > D.PROB_SUM_ATOL):
        return Verdict(0.0, "Rows of bento_assignment_probs must be probability vectors (non-negative, summing to 1).")
    tol = D.probs_allowance(context["x"], got["weights"], got["means"], got["sds"], context["assignment_se"],
                            MAX_IAT, Z_MC)
    ok = np.all(np.abs(probs - ref) <= tol, axis=1)
    if not np.all(ok):
        perm = list(best_permutation(probs, ref))
        if perm != list(range(k)) and np.all(np.abs(probs[:, perm] - ref) <= tol):
            return Verdict(0.0, ORDER_ADVICE.format(what="probability columns"))
    if np.all(ok):
        return Verdict(1.0, "Assignment probabilities agree with the reference posterior within Monte Carlo error.")
    if np.mean(ok) >= 0.8:
        return Verdict(0.5, f"Assignment probabilities are off for {int((~ok).sum())} bento(s).")
    return Verdict(0.0, "Assignment probabilities do not agree with the posterior.")


@guarded
def check_posterior_means(answer, context):
    """Posterior mean (half) and posterior sd (half) of the two component means (component 0 =
    lighter): each reported number must be that statistic of ALL the draws, and the draws' must
    agree with the reference."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    d = D.decode(answer.get("means"), k, "bento_draws['means']")
    few = D.too_few(d, "bento_draws")
    if few is not None:
        return few
    rep_mean = as_array(answer.get("reported_mean"), (k,), name="bento_means_mean")
    rep_sd = as_array(answer.get("reported_sd"), (k,), name="bento_means_sd")
    ref = context["posterior"]["means"]
    rmean, rsd, rse = (np.asarray(ref[key]) for key in ("mean", "sd", "se"))
    mean, sd = d.mean, d.sd
    if not np.all(np.diff(mean) > 0) and np.all(np.diff(mean[::-1]) > 0):
        return Verdict(0.0, ORDER_ADVICE.format(what="draws"))
    bad = not_converged(np.maximum(d.rhat, d.rhat_raw), "component means")
    if bad is not None:
        return bad
    # each reported number = that statistic of all the draws, within SUMMARY_Z Monte Carlo
    # standard errors of a run of this size (and the rounding of the draws' precision)
    mean_is_draws = np.all(np.abs(rep_mean - mean) <= D.summary_allowance(d, mean, rsd / math.sqrt(d.size), SUMMARY_Z))
    sd_is_draws = np.all(np.abs(rep_sd - sd) <= D.summary_allowance(d, sd, rsd / math.sqrt(2 * d.size), SUMMARY_Z))
    ok_mean = np.all(mc_compare(mean, capped_se(d.se, rsd, d.chains, d.samples), rmean, rse, 0.0))
    ok_sd = np.all(sd_ok(sd, ref, d.chains, d.samples))
    msgs = []
    if not mean_is_draws:
        msgs.append("bento_means_mean is not the mean of your draws bento_draws['means'] over all chains and samples "
                    "(compute it from the draws, not from another estimate such as EM)")
    elif not ok_mean:
        msgs.append("the mean of your draws of the component means differs from the reference posterior mean")
    if not sd_is_draws:
        msgs.append("bento_means_sd is not the standard deviation of your draws bento_draws['means'] (a standard "
                    "deviation, not a variance, over all chains and samples)")
    elif not ok_sd:
        msgs.append("the standard deviation of your draws of the component means differs from the reference "
                    "posterior sd")
    score = 0.5 * float(mean_is_draws and ok_mean) + 0.5 * float(sd_is_draws and ok_sd)
    if score == 1.0:
        return Verdict(1.0, "Posterior mean and uncertainty of the component means agree with the reference.")
    return Verdict(score, "; ".join(msgs) + ".")


@guarded
def check_ambiguity(answer, context):
    """Plug-in log-odds at 425 g under the student's own EM fit (a wrong fit is charged once, in
    bento_em_fit), and the most ambiguous of the 20 bentos under the EM fit."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    lo = float(as_array(answer.get("log_odds_425"), (), name="log_odds_425"))
    idx = int(as_array(answer.get("most_ambiguous"), (), name="most_ambiguous", integer=True))
    targets = [context["log_odds_425"]]  # under the maximum-likelihood fit, or under the student's own
    em = answer.get("em")
    if isinstance(em, dict):
        try:
            fit = [as_array(em.get(n), (context["k"],), name=n) for n in ("weights", "means", "sds")]
            if np.all(fit[0] > 0) and np.all(fit[2] > 0):
                targets.append(plugin_log_odds(425.0, *fit))
        except BadAnswer:
            pass
    ok_lo = any(np.isfinite(t) and exact_close(lo, t) for t in targets)
    ok_idx = idx == context["most_ambiguous"]
    score = 0.5 * ok_lo + 0.5 * ok_idx
    msgs = []
    if not ok_lo:
        msgs.append("log_odds_425 is not the plug-in log-odds (heavier vs lighter component) at 425 g under your "
                    "bento_em")
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
        Part("bento_posterior_probs", 2.0, export_probs, check_posterior_probs, "posterior assignment probabilities"),
        Part("bento_posterior_means", 2.0, export_means, check_posterior_means,
             "posterior mean and sd of the component means"),
        Part("bento_ambiguity", 2.0, export_ambiguity, check_ambiguity,
             "plug-in log-odds at 425 g and the most ambiguous bento"),
    ),
    reference=reference,
    inputs=dict,
    sandbox_offers=("numpy", "scipy", "jax", "genjax", "flatbuffers") + tuple(f"gmmcourse.{m}" for m in ("gibbs", "sweep", "chains", "summaries", "models", "data", "em", "gamma", "precision", "shapes", "validation", "programs", "codeversion", "atomic")),  # the allow-list: what the reference sampler needs (flatbuffers: its exported programs)
    packages="`numpy`, `scipy`, `jax`, `genjax` and the parts of `gmmcourse` that the reference sampler "
             "needs (`gmmcourse.gibbs`, `gmmcourse.models`, `gmmcourse.data`, and with them `gmmcourse.em` "
             "and the sampler's helpers; `flatbuffers` loads its compiled programs); `gmmcourse.categorize` "
             "is not available. Because the sampler needs it, `gmmcourse.em` can be imported: the EM part is "
             "graded on your fit whichever way you compute it, but write the E- and M-steps yourself to learn "
             "them",
    precision=(
        f"**Precision.** The EM fit is compared with the maximum-likelihood fit at relative tolerance "
        f"{EM_RTOL['weights']:g} (weights), {EM_RTOL['means']:g} (means), {EM_RTOL['sds']:g} (sds). "
        f"Component 0 is the lighter one everywhere, and order is checked. {draws_rules(K)} The posterior mean and "
        f"the posterior sd of the component means are worth half of their part each. `log_odds_425` is compared, at "
        f"relative tolerance {EXACT_RTOL:g} (absolute {EXACT_ATOL:g}), with the plug-in log-odds under your own "
        f"`bento_em` (or the maximum-likelihood fit): a wrong EM fit costs points once, in its own part."),
)
