"""Assignment ``categorization``: Bayes' rule for one observation, in log space.

The student writes ``categorize(x, weights, means, sds)`` (numpy and scipy only: the course
package is hidden) and answers three questions about a 425 g bento. Every answer is exact.
"""

from __future__ import annotations

import functools

import numpy as np

from gmmcourse.grading.checks import (EXACT_ATOL, EXACT_RTOL, BadAnswer, as_array, close, exact_close, guarded,
                                      scalar)
from gmmcourse.grading.kernel_side import floats, to_json, var
from gmmcourse.grading.reference import f64, fresh_inputs
from gmmcourse.grading.spec import Assignment, Part, Verdict

__all__ = ["ASSIGNMENT", "MISTAKES", "ADVICE", "FIXED_INPUTS", "mistake", "inputs", "reference"]

BENTO_RECIPE = {"weights": [0.7, 0.3], "means": [500.0, 350.0], "sds": [2.0, 2.0]}
UNEQUAL_RECIPE = {"weights": [0.7, 0.3], "means": [500.0, 350.0], "sds": [2.0, 4.0]}

# ----------------------------------------------------------------------------- inputs, reference


FIXED_INPUTS = {
    # the templates of the drawn cases (and, until issue 23, the cases themselves): every basic
    # case has overlapping components, unequal weights and sds != 1; the stable ones sit far in
    # the tails, where the densities underflow
    "categorize_basic": [
        dict(x=[380.0, 410.0, 425.0, 440.0, 470.0], weights=[0.7, 0.3], means=[500.0, 350.0], sds=[30.0, 30.0]),
        dict(x=[95.0, 100.0, 105.0, 135.0, 140.0, 145.0], weights=[0.2, 0.5, 0.3],
             means=[80.0, 120.0, 157.0], sds=[12.0, 15.0, 10.0]),
        dict(x=[-1.0, 0.0, 0.4, 1.0, 2.5], weights=[0.9, 0.1], means=[0.0, 1.0], sds=[1.0, 0.5]),
        dict(x=[400.0, 425.0, 450.0], weights=[0.7, 0.3], means=[500.0, 350.0], sds=[20.0, 40.0]),
    ],
    "categorize_stable": [
        dict(x=[0.0, 300.0, 1000.0], **BENTO_RECIPE),
        dict(x=[-50.0, 250.0], weights=[0.2, 0.5, 0.3], means=[80.0, 120.0, 157.0], sds=[0.5, 0.5, 0.5]),
        dict(x=[40.0, -40.0], weights=[0.5, 0.5], means=[0.0, 0.05], sds=[1.0, 1.0]),
    ],
}
"""Fixed cases of earlier runs: the shapes the drawn cases follow (tests check that a lookup
table on them earns nothing)."""


def _r(v) -> list[float]:
    return [float(round(float(a), 6)) for a in np.atleast_1d(v)]


def _basic_case(rng: np.random.Generator, t: dict) -> dict:
    """One moderate case shaped like template ``t``: K, the order of the means and the spread
    kept; means shifted and stretched, sds and weights perturbed, observations drawn anew over
    the components' overlap."""
    m, s, w = (np.asarray(t[k], dtype=np.float64) for k in ("means", "sds", "weights"))
    scale = rng.uniform(0.6, 1.6)
    shift = rng.uniform(-3.0, 3.0) * s.max()
    means = m * scale + shift + rng.normal(0.0, 0.05, m.size) * s
    sds = s * scale * rng.uniform(0.8, 1.25, s.size)
    weights = rng.dirichlet(w * 40.0)
    lo, hi = (means - 1.5 * sds).min(), (means + 1.5 * sds).max()
    x = np.sort(rng.uniform(lo, hi, len(t["x"])))
    return dict(x=_r(x), weights=_r(weights / weights.sum()), means=_r(means), sds=_r(sds))


def _stable_case(rng: np.random.Generator, kind: int) -> dict:
    """A case far in the tails (every density underflows in float64: at least 40 sds from every
    mean), decided by the tails alone: equal sds, so that neither the weights nor sd-vs-variance
    changes it; the last kind has equal weights and unit sds and a moderate log-odds."""
    if kind == 0:  # two components, equal sds, observations below, between-the-far-sides and above
        sd = rng.uniform(1.5, 3.0)
        m1 = rng.uniform(300.0, 400.0)
        means = [m1 + rng.uniform(100.0, 200.0), m1]
        x = [m1 - rng.uniform(60.0, 150.0) * sd, m1 - rng.uniform(45.0, 55.0) * sd,
             means[0] + rng.uniform(60.0, 250.0) * sd]
        w = rng.uniform(0.6, 0.8)
        return dict(x=_r(x), weights=_r([w, 1.0 - w]), means=_r(means), sds=_r([sd, sd]))
    if kind == 1:  # three components, equal small sds, observations far outside
        sd = rng.uniform(0.3, 0.7)
        means = np.cumsum([rng.uniform(60.0, 100.0), rng.uniform(25.0, 50.0), rng.uniform(25.0, 50.0)])
        x = [means[0] - rng.uniform(80.0, 150.0), means[-1] + rng.uniform(80.0, 150.0)]
        weights = rng.dirichlet([4.0, 10.0, 6.0])
        return dict(x=_r(x), weights=_r(weights / weights.sum()), means=_r(means), sds=_r([sd] * 3))
    m0 = rng.uniform(-20.0, 20.0)  # equal weights, unit sds: only the (moderate) log-odds counts
    d = rng.uniform(0.03, 0.07)
    x = [m0 + rng.uniform(40.0, 45.0), m0 - rng.uniform(40.0, 45.0)]
    return dict(x=_r(x), weights=[0.5, 0.5], means=_r([m0, m0 + d]), sds=[1.0, 1.0])


def _fair(case: dict, stable: bool) -> bool:
    """The case tells a correct `categorize` from every mistake (basic), or only from an
    unstable one (stable); `tests/test_hidden_inputs.py` checks it on many draws."""
    from scipy.stats import norm

    args = (case["x"], case["weights"], case["means"], case["sds"])
    ref = mistake("correct", *args)
    if not np.all(np.isfinite(ref)):
        return False
    if stable:
        x, m, s = (np.asarray(case[k])[:, None] if k == "x" else np.asarray(case[k])[None, :]
                   for k in ("x", "means", "sds"))
        if np.any(norm.pdf(x, m, s) > 0):  # a naive categorize would not fail
            return False
        return all(exact_close(mistake(k, *args), ref) for k in ("ignores_weights", "variance_as_sd", "sd_as_variance"))
    if not np.any((ref > 0.02) & (ref < 0.98)):
        return False
    return all(np.max(np.abs(mistake(k, *args) - ref)) > 0.01 for k in MISTAKES)


@fresh_inputs
def inputs(rng: np.random.Generator) -> dict:
    """The test cases sent into the sandbox: drawn fresh in every grading run (`fresh_inputs`)
    in the shapes of `FIXED_INPUTS`, each checked to tell a correct `categorize` from every
    mistake in `ADVICE` (basic) or from an unstable one only (stable)."""
    out = {"categorize_basic": [], "categorize_stable": []}
    for t in FIXED_INPUTS["categorize_basic"]:
        case = next((c for c in (_basic_case(rng, t) for _ in range(200)) if _fair(c, False)), t)
        out["categorize_basic"].append(case)
    for kind, t in enumerate(FIXED_INPUTS["categorize_stable"]):
        case = next((c for c in (_stable_case(rng, kind) for _ in range(200)) if _fair(c, True)), t)
        out["categorize_stable"].append(case)
    return out


MISTAKES = ("ignores_weights", "variance_as_sd", "sd_as_variance", "normalised_over_observations",
            "unnormalised", "log_probs")
"""Typical wrong `categorize`s: each has its own advice, and each changes every basic case."""

ADVICE = {
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


def mistake(kind: str, x, weights, means, sds) -> np.ndarray:
    """A typical wrong `categorize` (computed stably, so that only the mistake differs)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    x, w, m, s = (np.asarray(a, dtype=np.float64) for a in (x, weights, means, sds))
    if kind == "ignores_weights":
        w = np.full_like(w, 1.0 / w.size)
    elif kind == "variance_as_sd":
        s = s ** 2
    elif kind == "sd_as_variance":
        s = np.sqrt(s)
    lj = np.log(w)[None, :] + norm.logpdf(x[:, None], m[None, :], s[None, :])
    if kind == "normalised_over_observations":
        return np.exp(lj - logsumexp(lj, axis=0, keepdims=True))
    if kind == "unnormalised":
        return np.exp(lj)
    lp = lj - logsumexp(lj, axis=1, keepdims=True)
    return lp if kind == "log_probs" else np.exp(lp)


_REFERENCE: dict = {}


def reference() -> dict:
    """Exact answers (float64) from `gmmcourse.categorize`, for this run's draw of `inputs`."""
    inp = inputs()
    if _REFERENCE.get("inputs") is not inp:
        _REFERENCE.clear()
        _REFERENCE.update(inputs=inp, value=_reference(inp))
    return _REFERENCE["value"]


FLOAT32_LOG_ROUNDINGS = 8
"""Far in the tails a correct float32 `categorize` rounds log densities of several hundred or
thousand before it subtracts them: its log-odds can be off by a few float32 roundings of the
largest log density. The stable cases' relative tolerance is this many such roundings (never
less than `EXACT_RTOL`), so a correct float32 answer passes; only a NaN or a wrong answer fails."""


def stable_rtol(case: dict) -> float:
    """The relative tolerance of one stable case (`FLOAT32_LOG_ROUNDINGS`)."""
    from gmmcourse.categorize import log_joint_by_component

    lj = f64(log_joint_by_component, case["x"], case["weights"], case["means"], case["sds"])
    return max(EXACT_RTOL, FLOAT32_LOG_ROUNDINGS * float(np.finfo(np.float32).eps) * float(np.max(np.abs(lj))))


def _reference(inp: dict) -> dict:
    from gmmcourse.categorize import categorize, log_joint_by_component, log_predictive

    run = lambda c: f64(categorize, c["x"], c["weights"], c["means"], c["sds"]).tolist()  # noqa: E731
    lj = f64(log_joint_by_component, [425.0], *UNEQUAL_RECIPE.values())
    return {
        "categorize_basic": [run(c) for c in inp["categorize_basic"]],
        "categorize_stable": [run(c) for c in inp["categorize_stable"]],
        "categorize_stable_rtol": [stable_rtol(c) for c in inp["categorize_stable"]],
        "categorize_mistakes": {kind: [mistake(kind, c["x"], c["weights"], c["means"], c["sds"]).tolist()
                                       for c in inp["categorize_basic"]] for kind in MISTAKES},
        "p_tonkatsu_425": float(f64(categorize, [425.0], *BENTO_RECIPE.values())[0, 0]),
        "log_odds_425_unequal": float(lj[0, 0] - lj[1, 0]),
        "log_pred_425": float(f64(log_predictive, [425.0], *BENTO_RECIPE.values())[0]),
        "log_pred_500": float(f64(log_predictive, [500.0], *BENTO_RECIPE.values())[0]),
    }


# ----------------------------------------------------------------------------- exports (in the kernel)


def export_categorize(student, inputs, key):
    """The student's ``categorize`` on each test case of ``inputs[key]`` (None where it raised)."""
    out = []
    for c in inputs[key]:
        try:
            r = var(student, "categorize")(floats(c["x"]), floats(c["weights"]), floats(c["means"]), floats(c["sds"]))
            out.append(to_json(floats(r)))
        except Exception:
            out.append(None)
    return out


def export_names(student, inputs, names):
    """The student's variables ``names``, as a dict."""
    return {n: var(student, n) for n in names}


# ----------------------------------------------------------------------------- checks (trusted)


def _cases(answer, cases_ref, rtols=None) -> int:
    """How many cases `answer` gets right: exactly (`exact_close`), or within each case's own
    relative tolerance where `rtols` gives one (the stable cases, `stable_rtol`)."""
    if not isinstance(answer, list) or len(answer) != len(cases_ref):
        raise BadAnswer("expected one result per test case")
    ok = 0
    for i, (got, ref) in enumerate(zip(answer, cases_ref)):
        ref = np.asarray(ref)
        try:
            arr = as_array(got, ref.shape, name="categorize(...)")
        except BadAnswer:
            continue
        if exact_close(arr, ref) if rtols is None else close(arr, ref, rtols[i], EXACT_ATOL):
            ok += 1
    return ok


@guarded
def check_categorize_basic(answer, context):
    """categorize() on moderate inputs (several K, weights, sds) equals the exact posterior.

    Every case is chosen so that each mistake in ADVICE changes it (a test checks it); a
    function that reproduces a mistake on every case gets that mistake's advice."""
    ok = _cases(answer, context["categorize_basic"])
    n = len(context["categorize_basic"])
    if ok == n:
        return Verdict(1.0, "categorize returns the exact P(z | x) on all test cases.")
    for kind, outputs in context.get("categorize_mistakes", {}).items():
        if _cases(answer, outputs) == n:
            return Verdict(0.0, ADVICE.get(kind, "categorize is not P(z | x)."))
    return Verdict(ok / n, f"categorize is correct on {ok} of {n} test cases (at relative tolerance {EXACT_RTOL:g}).")


@guarded
def check_categorize_stable(answer, context):
    """categorize() on observations far in the tails (needs log-sum-exp). The cases do not
    depend on the weights or on sd-vs-variance, so only instability loses this part."""
    ok = _cases(answer, context["categorize_stable"], context["categorize_stable_rtol"])
    if ok == len(context["categorize_stable"]):
        return Verdict(1.0, "categorize is numerically stable far from every component.")
    return Verdict(0.0, "categorize fails (NaN or wrong values) for observations far from every component, "
                        "where the densities underflow to 0. Work with log densities (norm.logpdf, logsumexp).")


@guarded
def check_425_equal(answer, context):
    """P(tonkatsu | 425 g) with the shop's recipe (equal sds): set by the weights alone."""
    if exact_close(scalar(answer, "p_tonkatsu_425"), context["p_tonkatsu_425"]):
        return Verdict(1.0, "Correct.")
    return Verdict(0.0, "Not the posterior probability for 425 g under the shop's recipe.")


@guarded
def check_425_unequal(answer, context):
    """log-odds tonkatsu vs hamburger at 425 g with unequal sds: decided by the tails."""
    got = scalar(answer, "log_odds_425_unequal")
    ref = context["log_odds_425_unequal"]
    if exact_close(got, ref):
        return Verdict(1.0, "Correct.")
    if exact_close(-got, ref):
        return Verdict(0.5, "Right magnitude, but the sign is flipped: log P(tonkatsu|x) - log P(hamburger|x).")
    return Verdict(0.0, "Not the log-odds for 425 g with unequal sds.")


@guarded
def check_425_outlier(answer, context):
    """log predictive density at 425 g and 500 g (425 g is an outlier)."""
    ok = [exact_close(scalar(answer, key), context[key]) for key in ("log_pred_425", "log_pred_500")]
    if all(ok):
        return Verdict(1.0, "Correct log predictive densities.")
    if any(ok):
        return Verdict(0.5, "One of the two log predictive densities is correct.")
    return Verdict(0.0, "The log predictive densities are not correct (natural log, density in 1/g).")


# ----------------------------------------------------------------------------- the assignment

ASSIGNMENT = Assignment(
    id="categorization",
    notebook="categorization.ipynb",
    parts=(
        Part("categorize_basic", 3.0, functools.partial(export_categorize, key="categorize_basic"),
             check_categorize_basic, "categorize(x, weights, means, sds) returns P(z | x)"),
        Part("categorize_stable", 1.0, functools.partial(export_categorize, key="categorize_stable"),
             check_categorize_stable, "categorize is stable far from every component"),
        Part("bento_425_equal", 1.0, functools.partial(export_names, names=["p_tonkatsu_425"]),
             check_425_equal, "P(tonkatsu | 425 g) with equal sds"),
        Part("bento_425_unequal", 1.0, functools.partial(export_names, names=["log_odds_425_unequal"]),
             check_425_unequal, "log-odds at 425 g with unequal sds"),
        Part("bento_425_outlier", 2.0, functools.partial(export_names, names=["log_pred_425", "log_pred_500"]),
             check_425_outlier, "log predictive density: 425 g is an outlier"),
    ),
    reference=reference,
    inputs=inputs,
    sandbox_offers=("numpy", "scipy"),  # the allow-list: categorize is the student's to write
    packages="`numpy` and `scipy`; the course package `gmmcourse` is not available (`categorize` is yours to write)",
    precision=(f"**Precision.** Every answer here is exact: it is compared with the exact value at relative "
               f"tolerance {EXACT_RTOL:g} (absolute {EXACT_ATOL:g} near 0), so float64 and float32 both pass. Far in "
               f"the tails (the stability part), where float32 rounds log densities of hundreds or thousands, "
               f"the relative tolerance is {FLOAT32_LOG_ROUNDINGS} float32 roundings of the case's largest log "
               f"density (never less than {EXACT_RTOL:g})."),
)
