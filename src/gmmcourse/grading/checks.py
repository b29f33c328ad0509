"""Trusted checks: validate exported (untrusted) answers and compare them with the reference.

Every check has the signature ``(answer, context) -> Verdict`` (see `gmmcourse.grading.spec`).
``answer`` is plain JSON data produced by a part's export code in the student's kernel; it is
never trusted: every check validates types, shapes and finiteness itself before comparing.
``context`` is the dict returned by the assignment's ``reference()`` (computed from the
`gmmcourse` reference package, outside the sandbox).

Exact answers (categorize, the 425 g questions) are compared at one named tolerance,
``|got - ref| <= EXACT_ATOL + EXACT_RTOL * |ref|``: float32 precision, stated in every notebook.

Posterior summaries are compared within Monte Carlo tolerance, with no fixed floor:
``|student - reference| <= Z_MC * sqrt(se_student^2 + se_reference^2)``, where the student's
standard error comes from batch means (``BATCHES`` batches per chain) computed here from the raw
exported draws (the kernel never reports a statistic) and is *capped* by what a converged run
of that size gives, ``sqrt(MAX_IAT) * posterior sd / sqrt(draws)``: a bad run cannot widen its
own tolerance. Draws whose chains disagree (split R-hat above ``RHAT_MAX``) fail with a
non-convergence message, and the spread of the draws must match the posterior sd.
Components are matched permutation-invariantly only where the notebook promises it
(``coffee_blends``); ``uncertainty`` fixes component 0 = lighter, and order is checked.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from gmmcourse.grading.spec import Verdict

try:
    from gmmcourse.grading.spec import sanitize
except ImportError:  # older spec.py: sanitize lived in the executor
    from gmmcourse.grading.executor import sanitize

__all__ = [
    "Z_MC",
    "BATCHES",
    "MIN_CHAINS",
    "MIN_SAMPLES",
    "as_array",
    "raw_array",
    "draws_from_export",
    "batch_summary",
    "mc_compare",
    "best_permutation",
    # categorization
    "check_categorize_basic",
    "check_categorize_stable",
    "check_425_equal",
    "check_425_unequal",
    "check_425_outlier",
    # coffee_blends
    "check_coffee_assess",
    "check_coffee_simulate",
    "check_coffee_draws",
    "check_coffee_means",
    "check_coffee_weights",
    "check_coffee_sds",
    "check_coffee_assignments",
    # uncertainty
    "check_bento_em",
    "check_bento_labels",
    "check_bento_posterior_probs",
    "check_bento_posterior_means",
    "check_bento_ambiguity",
]

Z_MC = 4.5
"""z multiplier of the Monte Carlo tolerance (per compared number)."""
BATCHES = 20
"""Batches per chain for batch-means standard errors (computed in the export code)."""
MIN_CHAINS = 4
MIN_SAMPLES = 1000
"""The notebooks ask for at least MIN_CHAINS chains of MIN_SAMPLES kept draws each."""
EXPORT_MAX_CHAINS = 16
EXPORT_MAX_VALUES = 65536
"""Exports carry raw draws: at most EXPORT_MAX_CHAINS chains and EXPORT_MAX_VALUES numbers per
parameter (more samples are thinned evenly in the kernel, by a rule this module re-checks).
Every statistic (means, sds, batch means, chain counts, validity) is computed here."""
MAX_RAW = 10**6
PROB_TOL = 0.05
"""Absolute tolerance on posterior assignment probabilities (Monte Carlo + estimator choice)."""
EXACT_RTOL = 1e-4
EXACT_ATOL = 1e-6
"""Exact answers: float32 precision (relative 1e-4, absolute 1e-6 near 0), stated in the notebooks."""
EM_RTOL = {"weights": 1e-3, "means": 2e-6, "sds": 2e-3}
"""EM stops at a tolerance: relative agreement with the maximum-likelihood fit per parameter
(2e-6 of ~500 g is 1e-3 g for the means, far below the posterior-vs-MLE difference)."""
PLUGIN_RTOL = 1e-2
"""Plug-in log-odds from the student's own EM fit (within EM_RTOL): relative tolerance."""
MAX_IAT = 10.0
"""Stated inefficiency factor: the student's Monte Carlo standard error is capped at
sqrt(MAX_IAT) * posterior sd / sqrt(draws), i.e. draws at least as informative as 1/MAX_IAT as many
independent ones (the course's samplers have 1-3)."""
RHAT_MAX = 1.05
"""Split R-hat above this (any compared number) means the chains did not converge (correct
samplers at the minimum size give at most about 1.01)."""
SUMMARY_Z = 0.1
"""A reported summary must equal the statistic of the draws within SUMMARY_Z Monte Carlo
standard errors (it is the same number, up to rounding; another estimate is ~1 se away)."""

_FAIL_EXPORT = "Your answer could not be read: "


class BadAnswer(ValueError):
    """The exported answer has the wrong type, shape or contains non-finite numbers."""


def _err(answer) -> str | None:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return sanitize(answer["error"])
    return None


def as_array(value, shape=None, *, name="value", integer=False, allow_none=False) -> np.ndarray:
    """Validate untrusted JSON data as a finite float (or integer) array of `shape`.

    Args:
        value: nested lists of numbers (never trusted).
        shape: expected shape; ``None`` in a position means any size.
        name: used in the error message.
        integer: require integral values (returned as int64).

    Raises:
        BadAnswer: on wrong type, shape, or non-finite entries.
    """
    if isinstance(value, bool) or value is None:
        raise BadAnswer(f"{name} is missing")
    if isinstance(value, (int, float)):
        pass
    elif not isinstance(value, list):
        raise BadAnswer(f"{name} should be a number or an array, got {type(value).__name__}")
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise BadAnswer(f"{name} is not a rectangular array of numbers") from None
    if arr.dtype != np.float64:
        raise BadAnswer(f"{name} is not numeric")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise BadAnswer(f"{name} should have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadAnswer(f"{name} contains NaN or infinite values")
    if integer:
        if not np.all(arr == np.round(arr)):
            raise BadAnswer(f"{name} should contain integers")
        return arr.astype(np.int64)
    return arr


def _guard(fn):
    """Turn validation errors (and any crash on malformed data) into a zero verdict."""

    def wrapped(answer, context):
        err = _err(answer)
        if err is not None:
            return Verdict(0.0, _FAIL_EXPORT + err)
        try:
            verdict = fn(answer, context)
        except BadAnswer as exc:
            return Verdict(0.0, f"Format problem: {exc}.")
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):
            return Verdict(0.0, "Your answer has an unexpected structure; re-read the instructions of this part.")
        fraction = float(verdict.fraction)
        if not math.isfinite(fraction):
            fraction = 0.0
        return Verdict(min(1.0, max(0.0, fraction)), verdict.message)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    wrapped.__wrapped__ = fn
    return wrapped


def _close(a, b, rtol, atol) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= atol + rtol * np.abs(np.asarray(b))))


def exact_close(got, ref) -> bool:
    """The one exact-answer comparison (EXACT_RTOL, EXACT_ATOL)."""
    return _close(got, ref, EXACT_RTOL, EXACT_ATOL)


def time_limit_note(events, message: str) -> str:
    """Feedback of a part that lost points after a cell was stopped at a time limit: the stop
    (with its limit, as the executor words it) comes first, then the check's own message, so
    the student does not chase a NameError or a prior when the cause was the clock."""
    stops = [str(e) for e in (events or []) if "time limit" in str(e)]
    if not stops:
        return message
    return ("First: " + " ".join(stops) + " This part needs what that cell computes, so it may have lost its "
            "points because of it; make the cell faster (fewer draws or a vectorised update) and re-run. "
            "Check's message: " + message)


# ----------------------------------------------------------------------------- MC helpers


def batch_summary(draws: np.ndarray, batches: int = BATCHES) -> dict:
    """Mean, sd and batch means of draws (chains, samples, K), computed on the trusted side.

    Returns a dict with ``mean`` (K,), ``sd`` (K,), ``batch_means`` (chains*batches, K),
    ``chains`` and ``samples``.
    """
    d = np.asarray(draws, dtype=np.float64)
    c, s, k = d.shape
    b = min(batches, s)
    usable = (s // b) * b
    bm = d[:, :usable].reshape(c, b, usable // b, k).mean(axis=2).reshape(c * b, k)
    return {
        "mean": d.reshape(-1, k).mean(axis=0).tolist(),
        "sd": d.reshape(-1, k).std(axis=0, ddof=1).tolist(),
        "batch_means": bm.tolist(),
        "chains": int(c),
        "samples": int(s),
    }


def _int(v) -> bool:
    """An integer in exported JSON (the export's converter may have written it as 5.0)."""
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2**53)


def raw_array(obj, name: str, ndim: int | None = None) -> np.ndarray:
    """Decode an exported raw array (``{"shape": [...], "f8": base64 of little-endian float64}``)."""
    import base64
    import binascii

    if not isinstance(obj, dict) or not isinstance(obj.get("f8"), str) or not isinstance(obj.get("shape"), list):
        raise BadAnswer(f"{name} is missing")
    shape = obj["shape"]
    if len(shape) > 4 or not all(_int(d) and 0 <= d <= MAX_RAW for d in shape):
        raise BadAnswer(f"{name} has an invalid shape")
    shape = [int(d) for d in shape]
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size > MAX_RAW:
        raise BadAnswer(f"{name} is too large")
    try:
        buf = base64.b64decode(obj["f8"], validate=True)
    except (binascii.Error, ValueError):
        raise BadAnswer(f"{name} could not be decoded") from None
    if len(buf) != 8 * size:
        raise BadAnswer(f"{name} could not be decoded")
    arr = np.frombuffer(buf, dtype="<f8").astype(np.float64).reshape(shape)
    if ndim is not None and arr.ndim != ndim:
        raise BadAnswer(f"{name} should have {ndim} dimensions, got shape {tuple(shape)}")
    return arr


def draws_from_export(obj, k: int, name: str) -> tuple[np.ndarray, int, int, int]:
    """Decode exported draws; returns (draws (chains', samples', k), chains, samples, step)
    where chains x samples is the student's full run and the array is what the export kept
    (first `EXPORT_MAX_CHAINS` chains, every `step`-th sample); the thinning rule is
    re-checked here, so the declared size must match the data."""
    if not isinstance(obj, dict):
        raise BadAnswer(f"{name}: draws are missing")
    shape, step = obj.get("shape"), obj.get("step")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_int(d) and d > 0 for d in shape) or not _int(step):
        raise BadAnswer(f"{name}: draws must have shape (chains, samples, K)")
    c, s, kk = (int(d) for d in shape)
    step = int(step)
    if kk != k:
        raise BadAnswer(f"{name}: draws must have shape (chains, samples, {k}), got {tuple(shape)}")
    kept = min(c, EXPORT_MAX_CHAINS)
    if step != max(1, -(-kept * s * kk // EXPORT_MAX_VALUES)):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    arr = raw_array(obj.get("raw"), f"{name} draws", ndim=3)
    if arr.shape != (kept, -(-s // step), kk):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    if not np.all(np.isfinite(arr)):
        raise BadAnswer(f"{name}: draws contain NaN or infinite values")
    return arr, c, s, step


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split R-hat (Gelman et al., BDA3) per component of draws (chains, samples, K)."""
    d = np.asarray(draws, dtype=np.float64)
    h = d.shape[1] // 2
    if h < 2:
        return np.full(d.shape[-1], np.inf)
    x = np.concatenate([d[:, :h], d[:, h:2 * h]], axis=0)
    w = x.var(axis=1, ddof=1).mean(axis=0)
    b_over_n = x.mean(axis=1).var(axis=0, ddof=1)
    var_hat = (h - 1) / h * w + b_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(var_hat / w)
    return np.where(w > 0, r, np.where(b_over_n > 0, np.inf, 1.0))


def _summary_arrays(obj, k, name):
    """Trusted statistics of exported draws → (mean, sd, se, chains, samples, step, rhat)."""
    draws, chains, samples, step = draws_from_export(obj, k, name)
    if draws.shape[1] < 2:
        raise BadAnswer(f"{name}: too few draws")
    summ = batch_summary(draws)
    bm = np.asarray(summ["batch_means"])
    se = bm.std(axis=0, ddof=1) / math.sqrt(bm.shape[0])
    return np.asarray(summ["mean"]), np.asarray(summ["sd"]), se, chains, samples, step, split_rhat(draws)


def capped_se(se_student, ref_sd, chains, samples) -> np.ndarray:
    """The student's MC standard error, at most what a converged run of this size gives
    (sqrt(MAX_IAT) * posterior sd / sqrt(chains * samples))."""
    cap = math.sqrt(MAX_IAT) * np.asarray(ref_sd, dtype=np.float64) / math.sqrt(max(1, chains * samples))
    return np.minimum(np.asarray(se_student, dtype=np.float64), cap)


def sd_ok(sd_student, ref, chains, samples) -> np.ndarray:
    """Spread of the draws vs the posterior sd: relative MC error of an sd is about
    sqrt(IAT / (2 draws)); IAT capped at MAX_IAT (student) and the reference's own."""
    rsd = np.asarray(ref["sd"])
    ess_r = np.maximum(np.asarray(ref["ess"]), 1.0)
    se = np.sqrt(rsd ** 2 * MAX_IAT / (2 * max(1, chains * samples)) + rsd ** 2 / (2 * ess_r))
    return np.abs(np.asarray(sd_student) - rsd) <= Z_MC * se


def _not_converged(rhat, what) -> Verdict | None:
    worst = float(np.max(rhat))
    if not worst <= RHAT_MAX:
        return Verdict(0.0, f"Your chains have not converged: they disagree about the {what} (split R-hat "
                            f"{worst:.2f} > {RHAT_MAX}). Add warm-up, start the chains sensibly, and check your "
                            "updates; no tolerance is widened for a run that has not converged.")
    return None


def mc_compare(student, se_student, ref, se_ref, floor, z=Z_MC) -> np.ndarray:
    """Per-component boolean: within ``z * sqrt(se_s^2 + se_r^2) + floor``."""
    tol = z * np.sqrt(np.asarray(se_student) ** 2 + np.asarray(se_ref) ** 2) + floor
    return np.abs(np.asarray(student) - np.asarray(ref)) <= tol


def best_permutation(student: np.ndarray, ref: np.ndarray, scale: np.ndarray | float = 1.0) -> tuple:
    """The permutation p (a tuple) minimising sum(((student[..., p] - ref) / scale)^2)."""
    k = ref.shape[-1]
    best, best_cost = None, np.inf
    for p in itertools.permutations(range(k)):
        cost = float(np.sum(((student[..., list(p)] - ref) / scale) ** 2))
        if cost < best_cost:
            best, best_cost = p, cost
    return best


# ----------------------------------------------------------------------------- categorization


def _categorize_cases(answer, cases_ref):
    if not isinstance(answer, list) or len(answer) != len(cases_ref):
        raise BadAnswer("expected one result per test case")
    ok = 0
    for got, ref in zip(answer, cases_ref):
        ref = np.asarray(ref)
        try:
            arr = as_array(got, ref.shape, name="categorize(...)")
        except BadAnswer:
            continue
        if exact_close(arr, ref):
            ok += 1
    return ok


CATEGORIZE_ADVICE = {
    "ignores_weights": "categorize ignores the weights: multiply each density by its weight pi_k "
                       "(add log pi_k in log space).",
    "variance_as_sd": "categorize uses the variance where a standard deviation is expected: norm.logpdf "
                      "takes the sd (scale), not sd**2.",
    "sd_as_variance": "categorize takes the square root of the sds: they already are standard deviations.",
    "normalised_over_observations": "categorize normalises over the observations: each row (one "
                                    "observation) must sum to 1 over the components.",
    "unnormalised": "categorize returns the joint pi_k N(x; mu_k, sigma_k), not the posterior: divide by "
                    "the sum over components.",
    "log_probs": "categorize returns log probabilities: exponentiate.",
}


@_guard
def check_categorize_basic(answer, context):
    """categorize() on moderate inputs (several K, weights, sds) equals the exact posterior.

    Every case is chosen so that each mistake in CATEGORIZE_ADVICE changes it (a test checks
    it); a function that reproduces a mistake on every case gets that mistake's advice."""
    ok = _categorize_cases(answer, context["categorize_basic"])
    n = len(context["categorize_basic"])
    if ok == n:
        return Verdict(1.0, "categorize returns the exact P(z | x) on all test cases.")
    for mistake, outputs in context.get("categorize_mistakes", {}).items():
        if _categorize_cases(answer, outputs) == n:
            return Verdict(0.0, CATEGORIZE_ADVICE.get(mistake, "categorize is not P(z | x)."))
    return Verdict(ok / n, f"categorize is correct on {ok} of {n} test cases (at relative tolerance "
                           f"{EXACT_RTOL:g}).")


@_guard
def check_categorize_stable(answer, context):
    """categorize() on observations far in the tails (needs log-sum-exp). The cases do not
    depend on the weights or on sd-vs-variance, so only instability loses this part."""
    ok = _categorize_cases(answer, context["categorize_stable"])
    n = len(context["categorize_stable"])
    if ok == n:
        return Verdict(1.0, "categorize is numerically stable far from every component.")
    return Verdict(0.0, "categorize fails (NaN or wrong values) for observations far from every component, "
                        "where the densities underflow to 0. Work with log densities (norm.logpdf, logsumexp).")


def _scalar(answer, key):
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    return float(as_array(answer.get(key), (), name=key))


@_guard
def check_425_equal(answer, context):
    """P(tonkatsu | 425 g) with the shop's recipe (equal sds): set by the weights alone."""
    got = _scalar(answer, "p_tonkatsu_425")
    if exact_close(got, context["p_tonkatsu_425"]):
        return Verdict(1.0, "Correct.")
    return Verdict(0.0, "Not the posterior probability for 425 g under the shop's recipe.")


@_guard
def check_425_unequal(answer, context):
    """log-odds tonkatsu vs hamburger at 425 g with unequal sds: decided by the tails."""
    got = _scalar(answer, "log_odds_425_unequal")
    ref = context["log_odds_425_unequal"]
    if exact_close(got, ref):
        return Verdict(1.0, "Correct.")
    if exact_close(-got, ref):
        return Verdict(0.5, "Right magnitude, but the sign is flipped: log P(tonkatsu|x) - log P(hamburger|x).")
    return Verdict(0.0, "Not the log-odds for 425 g with unequal sds.")


@_guard
def check_425_outlier(answer, context):
    """log predictive density at 425 g and 500 g (425 g is an outlier)."""
    got425 = _scalar(answer, "log_pred_425")
    got500 = _scalar(answer, "log_pred_500")
    ok = [exact_close(g, r) for g, r in
          ((got425, context["log_pred_425"]), (got500, context["log_pred_500"]))]
    if all(ok):
        return Verdict(1.0, "Correct log predictive densities.")
    if any(ok):
        return Verdict(0.5, "One of the two log predictive densities is correct.")
    return Verdict(0.0, "The log predictive densities are not correct (natural log, density in 1/g).")


# ----------------------------------------------------------------------------- coffee_blends


@_guard
def check_coffee_assess(answer, context):
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
        if abs(g - r) <= 1e-3 + 2e-4 * abs(r):
            ok += 1
    n = len(ref)
    if ok == n:
        return Verdict(1.0, "Your model's log density matches the specification on all test choice maps.")
    if ok == 0:
        return Verdict(0.0, "Your model's log density differs from the specification. Check the priors "
                            "(Dirichlet(1,1,1), Normal(125, 37.5), Gamma(shape 2, rate 1) on sds), "
                            "that Normal takes a standard deviation, and the addresses.")
    return Verdict(0.0, f"Your model's log density matches the specification on {ok} of {n} test choice "
                        "maps only (all must match).")


@_guard
def check_coffee_simulate(answer, context):
    """Simulated choices have the right shapes, support and prior moments (computed here)."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    k, n = 3, context["n"]
    sims = answer.get("sims")
    if not isinstance(sims, list) or len(sims) < 1:
        raise BadAnswer("no simulations")
    for s in sims:
        if not isinstance(s, dict) or not isinstance(s.get("points"), dict):
            raise BadAnswer("a simulated choice map lacks the addresses 'weights', 'means', 'sds', 'points'")
        w = as_array(s.get("weights"), (k,), name="weights")
        as_array(s.get("means"), (k,), name="means")
        sd = as_array(s.get("sds"), (k,), name="sds")
        z = as_array(s["points"].get("z"), (n,), name="points/z", integer=True)
        as_array(s["points"].get("x"), (n,), name="points/x")
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-4 or np.any(sd <= 0) or np.any((z < 0) | (z >= k)):
            return Verdict(0.0, "Simulated choices are outside their support (weights on the simplex, "
                                "sds > 0, z in {0, 1, 2}).")
    raw = answer.get("all")
    if not isinstance(raw, dict):
        raise BadAnswer("no simulations")
    w = raw_array(raw.get("weights"), "simulated weights", 2)
    mu = raw_array(raw.get("means"), "simulated means", 2)
    sd = raw_array(raw.get("sds"), "simulated sds", 2)
    z = raw_array(raw.get("z"), "simulated points/z", 2)
    x = raw_array(raw.get("x"), "simulated points/x", 2)
    m = mu.shape[0]
    if m < 100:
        raise BadAnswer("too few simulations")
    if w.shape != (m, k) or sd.shape != (m, k) or mu.shape != (m, k) or z.shape != (m, n) or x.shape != (m, n):
        raise BadAnswer("simulated choices have inconsistent shapes")
    if not all(np.all(np.isfinite(a)) for a in (w, mu, sd, z, x)):
        return Verdict(0.0, "Simulated choices contain NaN or infinite values.")
    if (np.any(w < 0) or np.any(np.abs(w.sum(axis=1) - 1) > 1e-4) or np.any(sd <= 0)
            or np.any(z != np.round(z)) or np.any((z < 0) | (z >= k))):
        return Verdict(0.0, "Simulated choices are outside their support (weights on the simplex, "
                            "sds > 0, z in {0, 1, 2}).")
    zi = z.astype(np.int64)
    resid = (x - np.take_along_axis(mu, zi, axis=1)) / np.take_along_axis(sd, zi, axis=1)
    moments = {
        "mean_of_means": mu.mean(), "sd_of_means": mu.std(ddof=1), "mean_of_sds": sd.mean(),
        "mean_std_resid": resid.mean(), "var_std_resid": resid.var(),
    }
    # prior moments with Monte Carlo tolerance (m simulated data sets, K components each)
    checks = {
        "mean_of_means": (125.0, 37.5 / math.sqrt(m * k)),
        "sd_of_means": (37.5, 37.5 / math.sqrt(2 * m * k)),
        "mean_of_sds": (2.0, math.sqrt(2.0) / math.sqrt(m * k)),
        "mean_std_resid": (0.0, 1.0 / math.sqrt(m * n)),
        "var_std_resid": (1.0, math.sqrt(2.0 / (m * n)) * 1.5),
    }
    bad = [key for key, (target, se) in checks.items() if abs(moments[key] - target) > 6 * se + 1e-6]
    if bad:
        return Verdict(0.0, "Data simulated from your model do not follow the specified prior "
                            "and likelihood.")
    return Verdict(1.0, "Simulations have the right shapes, support and distribution.")


def _draw_counts_ok(summaries):
    chains = min(s["chains"] for s in summaries)
    samples = min(s["samples"] for s in summaries)
    return chains >= MIN_CHAINS and samples >= MIN_SAMPLES, chains, samples


@_guard
def check_coffee_draws(answer, context):
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


def _posterior_param_check(answer, context, target, what):
    """Shared logic for posterior summaries: validate, converge, permute (jointly), compare."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    names = ("weights", "means", "sds")
    stud = {}
    for name in names:
        stud[name] = _summary_arrays(answer.get(name), k, name)
    ok, chains, samples = _draw_counts_ok([{"chains": stud[n][3], "samples": stud[n][4]} for n in names])
    if not ok:
        return Verdict(0.0, f"Too few draws ({chains} chains x {samples} samples); at least "
                            f"{MIN_CHAINS} x {MIN_SAMPLES} are required for this part.")
    reported = as_array(answer.get("reported"), (k,), name=f"your reported posterior {target}")
    ref = context["posterior"]
    # permutation chosen jointly on the three parameters, in units of the reference posterior sd
    # (the coffee notebook promises "any component order")
    s_all = np.stack([stud[n][0] for n in names])
    r_all = np.stack([np.asarray(ref[n]["mean"]) for n in names])
    scale = np.stack([np.maximum(np.asarray(ref[n]["sd"]), 1e-6) for n in names])
    perm = list(best_permutation(s_all, r_all, scale))
    mean, sd, se, _, _, step, rhat = stud[target]
    mean, sd, se, reported = mean[perm], sd[perm], se[perm], reported[perm]
    bad = _not_converged(rhat, what)
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


@_guard
def check_coffee_means(answer, context):
    """Posterior means of the blend means within MC tolerance (any component order)."""
    return _posterior_param_check(answer, context, "means", "caffeine means")


@_guard
def check_coffee_weights(answer, context):
    """Posterior means of the blend proportions within MC tolerance (any component order)."""
    return _posterior_param_check(answer, context, "weights", "blend proportions")


@_guard
def check_coffee_sds(answer, context):
    """Posterior means of the blend sds within MC tolerance (any component order)."""
    return _posterior_param_check(answer, context, "sds", "standard deviations")


ORDER_ADVICE = "Component 0 must be the lighter one (the notebook fixes the order): your {what} are in another order."


def _probs_check(answer, ref, name, any_order=True):
    n, k = ref.shape
    probs = as_array(answer, (n, k), name=name)
    if np.any(probs < -1e-6) or not _close(probs.sum(axis=1), np.ones(n), 0, 1e-3):
        return Verdict(0.0, f"Rows of {name} must be probability vectors (non-negative, summing to 1).")
    perm = list(best_permutation(probs, ref))
    if not any_order and perm != list(range(k)):
        if np.all(np.abs(probs[:, perm] - ref).max(axis=1) <= PROB_TOL):
            return Verdict(0.0, ORDER_ADVICE.format(what="probability columns"))
        perm = list(range(k))
    err = np.abs(probs[:, perm] - ref).max(axis=1)
    ok = err <= PROB_TOL
    if np.all(ok):
        return Verdict(1.0, "Assignment probabilities agree with the reference posterior.")
    share = float(np.mean(ok))
    if share >= 0.8:
        return Verdict(0.5, f"Assignment probabilities are off for {int((~ok).sum())} observation(s).")
    return Verdict(0.0, "Assignment probabilities do not agree with the posterior.")


@_guard
def check_coffee_assignments(answer, context):
    """P(z_i = k | data) for the 30 cups (any component order)."""
    return _probs_check(answer, np.asarray(context["assignment_probs"]), "coffee_assignment_probs")


# ----------------------------------------------------------------------------- uncertainty


@_guard
def check_bento_em(answer, context):
    """EM point estimate (weights, means, sds) equals the maximum-likelihood fit."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    k = context["k"]
    got = np.stack([as_array(answer.get(n), (k,), name=f"bento_em['{n}']") for n in ("weights", "means", "sds")])
    ref = np.asarray(context["em"])  # (3, K), sorted by mean as the notebook asks
    tol = [EM_RTOL[n] for n in ("weights", "means", "sds")]
    ok = [_close(got[i], ref[i], tol[i], 0.0) for i in range(3)]
    if not all(ok) and all(_close(got[i, ::-1], ref[i], tol[i], 0.0) for i in range(3)):
        return Verdict(0.0, "The EM fit is right but not sorted by mean: component 0 must be the lighter one.")
    if all(ok):
        return Verdict(1.0, "The EM estimate is the maximum-likelihood fit.")
    if ok[1] and (ok[0] or ok[2]):
        return Verdict(0.5, "The EM means are right but not all of weights and sds; check the M-step.")
    return Verdict(0.0, "The EM estimate is not the maximum-likelihood fit.")


@_guard
def check_bento_labels(answer, context):
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


@_guard
def check_bento_posterior_probs(answer, context):
    """P(z_i = k | data) for the 20 bentos (component 0 = lighter, as the notebook states)."""
    return _probs_check(answer, np.asarray(context["assignment_probs"]), "bento_assignment_probs", any_order=False)


@_guard
def check_bento_posterior_means(answer, context):
    """Posterior mean and posterior sd of the two component means (component 0 = lighter)."""
    k = context["k"]
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    mean, sd, se, chains, samples, step, rhat = _summary_arrays(answer.get("means"), k, "means")
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
    bad = _not_converged(rhat, "component means")
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


@_guard
def check_bento_ambiguity(answer, context):
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
