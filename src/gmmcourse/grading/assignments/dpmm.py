"""Assignment ``dpmm``: the Chinese restaurant process and Neal's collapsed Gibbs sampler.

The student writes ``crp_probs`` (where the next customer sits) and ``log_conditional`` (the
collapsed-Gibbs conditional of one point's cluster, in log space: the posterior predictive of
each cluster of the other points, the prior predictive of a new one), runs the given sampler
with it, and reports the posterior over the number of occupied clusters of ten Old Faithful
eruptions. The grader calls both functions on probe states of its own, drawn fresh in every
run, against the exact conditionals (`conditional`), and compares the reported posterior with
the exact one, by enumeration of all 115,975 partitions (`gmmcourse.dpmm.exact_posterior`),
within the Monte Carlo error of the student's own draws. Only label-free quantities are graded.
The course package is hidden.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gmmcourse.grading import draws as D
from gmmcourse.grading.checks import (MAX_IAT, MIN_CHAINS, MIN_SAMPLES, RHAT_MAX, SUMMARY_Z, Z_MC, BadAnswer,
                                      as_array, guarded, not_converged, raw_array)
from gmmcourse.grading.kernel_side import MAX_CHAINS, batches_per_chain, draws, floats, raw, var
from gmmcourse.grading.reference import fresh_inputs
from gmmcourse.grading.spec import Assignment, Part, Verdict

__all__ = ["ASSIGNMENT", "X", "ALPHA", "PRIOR", "CRP_MISTAKES", "COND_MISTAKES", "ADVICE", "FIXED_INPUTS",
           "crp", "conditional", "log_predictive", "inputs", "reference", "exact_k_posterior", "cells", "CELLS",
           "COND_RTOL", "COND_ATOL", "STABLE_ATOL", "P_CELL", "REPORT_ATOL", "PROBE_RATES",
           "POSTERIOR_RATES"]

X = (3.6, 1.8, 3.333, 2.283, 4.533, 2.883, 4.7, 3.6, 1.95, 4.35)
"""The first ten Old Faithful eruption durations (minutes), as the notebook states them."""
ALPHA = 1.0
PRIOR = (3.5, 0.1, 2.0, 0.2)
"""(m0, k0, a0, b0): sigma^2 ~ InverseGamma(a0, b0), mu | sigma^2 ~ Normal(m0, sigma^2 / k0)."""

COND_RTOL, COND_ATOL = 1e-3, 1e-4
"""The conditional's probabilities: float32 precision of log densities of order 10 (a mistake
changes some probability of every probe state by more than 0.01: `_fair`)."""
STABLE_ATOL = 1e-3
"""On the state where every density underflows (log densities below -750, float32 computes
them to about 1e-4)."""
REPORT_ATOL = 1e-6
"""The reported shares: rounding (float32 shares are within 1e-7 of the exact fractions)."""
P_CELL = 0.01
"""Each K with exact probability at least P_CELL is compared on its own; the others together,
as one cell (a rare K is seen a handful of times, where a normal approximation to its Monte
Carlo error does not hold)."""


# ----------------------------------------------------------------------------- the exact answers


def crp(kind: str, counts, alpha) -> np.ndarray:
    """Where the next customer sits given the other customers' table sizes `counts`: the
    correct probabilities (``kind="correct"``) or a typical mistake (`CRP_MISTAKES`)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    a = float(alpha)
    if kind == "alpha_on_tables":  # alpha added to every table, not given to the new one alone
        w = np.append(c + a, a)
    elif kind == "no_new_table":
        w = c
    else:
        w = np.append(c, a)
    return w / w.sum()


def log_predictive(x_new, xs, prior) -> float:
    """log p(x_new | xs) under the Normal-Inverse-Gamma prior (m0, k0, a0, b0): a Student-t
    with 2 a_n degrees of freedom, location m_n and scale sqrt(b_n (k_n + 1) / (a_n k_n));
    with no xs, the prior predictive."""
    from scipy.stats import t

    from gmmcourse.dpmm import DPPrior, nig_posterior

    m0, k0, a0, b0 = (float(v) for v in prior)
    xs = np.asarray(xs, dtype=np.float64)
    n = float(xs.size)
    mean = float(xs.mean()) if xs.size else 0.0
    ss = float(((xs - mean) ** 2).sum())  # centred: no cancellation
    kn, mn, an, bn = nig_posterior(n, n * mean, ss + n * mean * mean, DPPrior(1.0, m0, k0, a0, b0))
    return float(t.logpdf(float(x_new), 2.0 * an, mn, math.sqrt(bn * (kn + 1.0) / (an * kn))))


def conditional(kind: str, i, x, z, alpha, prior) -> np.ndarray:
    """log P(z_i = c | z_-i, x) for each cluster c of the other points (in increasing label
    order), then a new cluster: the correct conditional (``kind="correct"``), computed in log
    space in float64, or a typical mistake (`COND_MISTAKES`, each computed in log space too,
    so that only the mistake differs)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.int64)
    i = int(i)
    m0, k0, a0, b0 = (float(v) for v in prior)
    others = np.arange(x.size) != i
    keep = np.ones_like(others) if kind == "counts_include_i" else others  # n instead of n - 1
    lw = []
    for c in np.unique(z[keep]):
        xs = x[keep & (z == c)]
        lp = log_predictive(x[i], [] if kind == "prior_predictive_for_existing" else xs, prior)
        lw.append(math.log(xs.size) + lp + (math.log(alpha) if kind == "alpha_swapped" else 0.0))
    if kind != "no_new_cluster":
        if kind == "plugin_for_new":  # the prior's mean parameters plugged in, not integrated out
            new = float(norm.logpdf(x[i], m0, math.sqrt(b0 / (a0 - 1.0))))
        else:
            new = log_predictive(x[i], [], prior)
        lw.append(new + (0.0 if kind == "alpha_swapped" else math.log(alpha)))
    lw = np.asarray(lw)
    if kind == "linear_space":
        with np.errstate(all="ignore"):
            p = np.exp(lw)
            return np.log(p / p.sum())
    return lw if kind == "unnormalised" else lw - logsumexp(lw)


CRP_MISTAKES = ("alpha_on_tables", "no_new_table")
COND_MISTAKES = ("counts_include_i", "alpha_swapped", "no_new_cluster", "prior_predictive_for_existing",
                 "plugin_for_new", "unnormalised")
"""Typical wrong functions; each has its own advice, and each changes every probe state."""

ADVICE = {
    "alpha_on_tables": "crp_probs puts alpha in the wrong place: an occupied table weighs its count n_c alone; "
                       "alpha is the new table's weight (P = n_c / (n + alpha) and alpha / (n + alpha)).",
    "no_new_table": "crp_probs forgets the new table: its last entry is alpha / (n + alpha), after one entry per "
                    "occupied table.",
    "counts_include_i": "log_conditional counts point i in its own cluster (n_c instead of n_c - 1): remove "
                        "point i from its cluster (its count and its points) before weighing the clusters; a "
                        "cluster of point i alone is then no cluster of the other points.",
    "alpha_swapped": "log_conditional puts alpha in the wrong place: an existing cluster weighs n_c p(x_i | its "
                     "points), the new cluster alpha p(x_i).",
    "no_new_cluster": "log_conditional forgets the new cluster: its last entry is log(alpha) + log p(x_i), the "
                      "prior predictive.",
    "prior_predictive_for_existing": "log_conditional scores existing clusters with the prior predictive p(x_i): "
                                     "an existing cluster's term is the posterior predictive p(x_i | the "
                                     "cluster's other points).",
    "plugin_for_new": "log_conditional scores the new cluster with a Normal at the prior's mean parameters: its "
                      "term is the prior predictive p(x_i), the Student-t with the cluster's parameters "
                      "integrated out.",
    "unnormalised": "log_conditional returns unnormalised log weights: subtract their logsumexp so that the "
                    "probabilities sum to 1.",
}


# ----------------------------------------------------------------------------- inputs (fresh each run)


FIXED_INPUTS = {
    "crp": [dict(counts=[3, 1, 2], alpha=0.5), dict(counts=[6], alpha=2.0), dict(counts=[1, 1, 1, 1, 4], alpha=1.7),
            dict(counts=[2, 9], alpha=0.3)],
    "conditional": [
        dict(i=2, x=[1.0, 1.3, 1.2, 4.0, 4.4, 3.9, 2.6, 7.0], z=[0, 0, 0, 1, 1, 1, 2, 2], alpha=0.4,
             prior=[3.0, 0.2, 2.0, 0.3]),
        dict(i=5, x=[10.0, 11.0, 10.5, 14.0, 13.5, 12.2, 14.2], z=[4, 4, 4, 1, 1, 7, 1], alpha=2.5,
             prior=[12.0, 0.1, 3.0, 1.5]),
        dict(i=0, x=[-2.0, -1.0, -1.5, -0.5, -1.2, -0.8], z=[2, 2, 2, 2, 2, 2], alpha=3.0,
             prior=[0.0, 0.5, 2.5, 0.8]),
        dict(i=3, x=[50.0, 52.0, 55.0, 58.0, 60.0, 61.0, 49.0, 63.0, 57.0], z=[3, 3, 8, 8, 0, 0, 3, 0, 8], alpha=0.6,
             prior=[55.0, 0.05, 2.0, 8.0]),
    ],
}
"""The shapes the drawn probe states follow: the fallback where no fair draw is found."""


def _r(v) -> list[float]:
    return [float(round(float(a), 6)) for a in np.atleast_1d(v)]


def _crp_case(rng: np.random.Generator) -> dict:
    m = int(rng.integers(1, 6))
    alpha = float(rng.choice([rng.uniform(0.2, 0.7), rng.uniform(1.5, 6.0)]))
    return dict(counts=[int(c) for c in rng.integers(1, 9, m)], alpha=round(alpha, 4))


def cond_case(rng: np.random.Generator, shape: int) -> dict:
    """One probe state: 2-4 clusters of 1-4 points around centres a few cluster sds apart, on a
    random scale and location; labels arbitrary non-negative integers (with gaps, in any
    order). Shapes: 0, point i in a cluster of 3 or more; 1, point i alone in its cluster (its
    label is no cluster of the others); 2, one cluster among the others; 3, any."""
    scale, loc = float(rng.uniform(0.3, 20.0)), float(rng.uniform(-50.0, 100.0))
    k = 1 if shape == 2 else int(rng.integers(2, 5))
    sizes = rng.integers(1, 5, k)
    if shape == 0:
        sizes[0] = max(3, sizes[0])
    centres = np.cumsum(rng.uniform(1.5, 4.0, k)) * scale
    x = np.concatenate([c + scale * 0.5 * rng.standard_normal(s) for c, s in zip(centres, sizes)]) + loc
    names = rng.choice(12, k, replace=False)
    z = np.repeat(names, sizes)
    if shape == 1:
        x = np.append(x, loc + centres.mean() + scale * rng.uniform(-1.0, 1.0))
        z = np.append(z, int(np.setdiff1d(np.arange(12), names)[0]))
    order = rng.permutation(x.size)
    x, z = x[order], z[order]
    if shape == 1:
        i = int(np.flatnonzero(order == x.size - 1)[0])
    elif shape == 0:
        i = int(rng.choice(np.flatnonzero(z == names[0])))
    else:
        i = int(rng.integers(0, x.size))
    a0 = float(rng.uniform(1.5, 4.0))
    prior = [loc + float(centres.mean()) + scale * float(rng.uniform(-1, 1)), float(rng.uniform(0.05, 1.0)), a0,
             (a0 - 1.0) * (scale * float(rng.uniform(0.3, 1.5))) ** 2]
    alpha = float(rng.choice([rng.uniform(0.2, 0.6), rng.uniform(1.8, 5.0)]))
    return dict(i=i, x=_r(x), z=[int(v) for v in z], alpha=round(alpha, 4), prior=_r(prior))


def _stable_case(rng: np.random.Generator) -> dict:
    """A state where every density underflows in float64 (log weights below -750, their
    differences of order 1): two or three single-point clusters within 1.5 sds of the prior
    mean, point i 130 to 200 sds away. a0 = 200 makes the Student-t's tails steep (log density
    about -200 log(1 + d^2 / (400 sd^2))), k0 = 100 gives the new cluster about the scale of
    the others (log densities of about -800 move by ~400 nats per 1 % of scale)."""
    s = float(rng.uniform(0.5, 5.0))
    m0 = float(rng.uniform(-100.0, 100.0))
    k = int(rng.integers(2, 4))
    x = m0 + s * rng.uniform(0.3, 1.5, k) * rng.choice([-1.0, 1.0], k)
    x = np.append(x, m0 + float(rng.choice([-1.0, 1.0])) * s * float(rng.uniform(130.0, 200.0)))
    z = np.append(rng.choice(12, k, replace=False), 12)
    order = rng.permutation(x.size)
    i = int(np.flatnonzero(order == x.size - 1)[0])
    return dict(i=i, x=_r(x[order]), z=[int(v) for v in z[order]], alpha=round(float(rng.uniform(0.3, 3.0)), 4),
                prior=_r([m0, 100.0, 200.0, 199.0 * s * s]))


def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return True
    with np.errstate(all="ignore"):
        return bool(np.max(np.abs(np.exp(a) - np.exp(b))) > 0.01)


def fair_crp(case: dict) -> bool:
    ref = crp("correct", case["counts"], case["alpha"])
    return all(_changed(np.log(crp(k, case["counts"], case["alpha"])), np.log(ref)) for k in CRP_MISTAKES)


def cond_args(case: dict) -> tuple:
    return case["i"], case["x"], case["z"], case["alpha"], case["prior"]


def fair_cond(case: dict) -> bool:
    """Every mistake changes some probability by more than 0.01 (or the length), and the state
    has some uncertainty (a probability between 0.02 and 0.98)."""
    ref = conditional("correct", *cond_args(case))
    p = np.exp(ref)
    if not np.all(np.isfinite(ref)) or not np.any((p > 0.02) & (p < 0.98)):
        return False
    return all(_changed(conditional(k, *cond_args(case)), ref) for k in COND_MISTAKES)


def fair_stable(case: dict) -> bool:
    ref = conditional("correct", *cond_args(case))
    raw_w = conditional("unnormalised", *cond_args(case))
    p = np.exp(ref)
    return bool(np.all(raw_w < -750.0) and np.any((p > 0.02) & (p < 0.98)))


@fresh_inputs
def inputs(rng: np.random.Generator) -> dict:
    """The probes sent into the sandbox, drawn fresh in every grading run (`fresh_inputs`):
    four `crp_probs` cases, four `log_conditional` states (each checked to tell the correct
    function from every mistake in `ADVICE`) and one state where every density underflows;
    and the data and the cells of K of the posterior part (fixed)."""
    out = {"crp": [], "conditional": [], "stable": [], "n": len(X), "cells": CELLS}
    for t in FIXED_INPUTS["crp"]:
        out["crp"].append(next((c for c in (_crp_case(rng) for _ in range(200)) if fair_crp(c)), t))
    for shape, t in enumerate(FIXED_INPUTS["conditional"]):
        out["conditional"].append(next((c for c in (cond_case(rng, shape) for _ in range(200)) if fair_cond(c)), t))
    out["stable"].append(next(c for c in (_stable_case(rng) for _ in range(1000)) if fair_stable(c)))
    return out


# ----------------------------------------------------------------------------- the reference


@functools.lru_cache(maxsize=1)
def exact_k_posterior() -> tuple:
    """Exact P(K = k | x), k = 0..n, for the notebook's data and prior (all 115,975 partitions)."""
    from gmmcourse.dpmm import DPPrior, exact_posterior

    m0, k0, a0, b0 = PRIOR
    return tuple(float(v) for v in exact_posterior(np.asarray(X), DPPrior(ALPHA, m0, k0, a0, b0)).num_clusters)


CELLS = [[2], [3], [4], [5], [6], [7], [1, 8, 9, 10]]
"""`cells()` for the notebook's data, written out (the notebook states them; a test keeps them equal)."""


def cells() -> list[list[int]]:
    """The cells of K compared: each k with exact probability at least P_CELL alone, the others together."""
    p = np.asarray(exact_k_posterior())
    big = [[int(k)] for k in range(1, p.size) if p[k] >= P_CELL]
    rest = [int(k) for k in range(1, p.size) if p[k] < P_CELL]
    return big + ([rest] if rest else [])


_REFERENCE: dict = {}


def reference() -> dict:
    """The exact answers for this run's draw of `inputs`: crp_probs and log_conditional on every
    probe (and each mistake's output there, for the advice), and the exact posterior over K."""
    inp = inputs()
    if _REFERENCE.get("inputs") is not inp:
        _REFERENCE.clear()
        _REFERENCE.update(inputs=inp, value=reference_for(inp))
    return _REFERENCE["value"]


def reference_for(inp: dict) -> dict:
    """The exact answers (as `reference`) for the probes of `inp`, any draw of `inputs`."""
    p = np.asarray(exact_k_posterior())
    return {
        "crp": [crp("correct", c["counts"], c["alpha"]).tolist() for c in inp["crp"]],
        "crp_mistakes": {k: [crp(k, c["counts"], c["alpha"]).tolist() for c in inp["crp"]] for k in CRP_MISTAKES},
        "conditional": [conditional("correct", *cond_args(c)).tolist() for c in inp["conditional"]],
        "conditional_mistakes": {k: [conditional(k, *cond_args(c)).tolist() for c in inp["conditional"]]
                                 for k in COND_MISTAKES},
        "stable": [conditional("correct", *cond_args(c)).tolist() for c in inp["stable"]],
        "stable_mistakes": [[conditional(k, *cond_args(c)).tolist() for k in COND_MISTAKES] for c in inp["stable"]],
        "k_posterior": p.tolist(),
        "n": len(X),
        "cells": inp["cells"],
    }


# ----------------------------------------------------------------------------- exports (in the kernel)


def export_crp(student, inputs):
    """``crp_probs(counts, alpha)`` on each probe (None where it raised)."""
    fn = var(student, "crp_probs")
    out = []
    for c in inputs["crp"]:
        try:
            with np.errstate(all="ignore"):
                out.append(raw(np.ravel(floats(fn(np.asarray(c["counts"], dtype=np.int64), float(c["alpha"]))))))
        except Exception:
            out.append(None)
    return out


def export_conditional(student, inputs, key):
    """``log_conditional(i, x, z, alpha, prior)`` on each probe state of ``inputs[key]`` (None
    where it raised), as raw float64 (a log probability of -inf travels as it is)."""
    fn = var(student, "log_conditional")
    out = []
    for c in inputs[key]:
        try:
            with np.errstate(all="ignore"):
                r = fn(int(c["i"]), floats(c["x"]), np.asarray(c["z"], dtype=np.int64), float(c["alpha"]),
                       tuple(float(v) for v in c["prior"]))
                out.append(raw(np.ravel(floats(r))))
        except Exception:
            out.append(None)
    return out


def export_num_clusters(student, inputs):
    """The number of clusters of every draw, as draws (chains, samples, 1); how many draws of
    each chain have K = 0..n, over the whole chain and in each of its batches (the batches of
    `kernel_side.chain_stats`); and the reported posterior."""
    k = floats(var(student, "dpmm_num_clusters"))
    if k.ndim != 2 or 0 in k.shape:
        raise ValueError("dpmm_num_clusters must have shape (chains, samples)")
    n = int(inputs["n"])
    c, s = k.shape
    b = batches_per_chain(c, s)
    usable = (s // b) * b
    values = np.arange(n + 1)
    totals = np.stack([(k == v).sum(axis=1) for v in values], axis=-1)
    parts = k[:, :usable].reshape(c, b, usable // b)
    batch_counts = np.stack([(parts == v).sum(axis=2) for v in values], axis=-1)
    return {"k": draws(k[..., None]), "totals": raw(totals), "batch_counts": raw(batch_counts),
            "reported": floats(var(student, "dpmm_k_posterior"))}


# ----------------------------------------------------------------------------- checks (trusted)


def _outputs(answer, refs, name) -> list:
    """The student's outputs, decoded (None where missing or malformed)."""
    if not isinstance(answer, list) or len(answer) != len(refs):
        raise BadAnswer("expected one result per probe")
    out = []
    for got in answer:
        try:
            out.append(raw_array(got, name, 1) if got is not None else None)
        except BadAnswer:
            out.append(None)
    return out


def _same(got, ref, rtol, atol, log=True) -> bool:
    ref = np.asarray(ref, dtype=np.float64)
    if got is None or got.shape != ref.shape or np.any(np.isnan(got)) or np.any(got == np.inf):
        return False
    with np.errstate(all="ignore"):
        g, r = (np.exp(got), np.exp(ref)) if log else (got, ref)
    return bool(np.all(np.isfinite(g)) and np.all(np.abs(g - r) <= atol + rtol * np.abs(r)))


def _graded(outs, refs, mistakes: dict, rtol, atol, log, what) -> Verdict:
    ok = sum(_same(g, r, rtol, atol, log) for g, r in zip(outs, refs))
    if ok == len(refs):
        return Verdict(1.0, f"{what} returns the exact probabilities on every test state.")
    for kind, outputs in mistakes.items():
        if all(_same(g, r, rtol, atol, log) for g, r in zip(outs, outputs)):
            return Verdict(0.0, ADVICE[kind])
    missing = sum(g is None for g in outs)
    extra = f" (it raised an error or returned no numbers on {missing})" if missing else ""
    return Verdict(0.0, f"{what} is right on {ok} of {len(refs)} test states{extra}; all are needed.")


@guarded
def check_crp(answer, context):
    """crp_probs on fresh probes equals the exact CRP predictive; a reproduced mistake gets its advice."""
    outs = _outputs(answer, context["crp"], "crp_probs(...)")
    return _graded(outs, context["crp"], context["crp_mistakes"], COND_RTOL, COND_ATOL, False, "crp_probs")


@guarded
def check_conditional(answer, context):
    """log_conditional on fresh probe states equals the exact collapsed-Gibbs conditional (in
    probability, float32 precision); a reproduced mistake gets its advice."""
    outs = _outputs(answer, context["conditional"], "log_conditional(...)")
    return _graded(outs, context["conditional"], context["conditional_mistakes"], COND_RTOL, COND_ATOL, True,
                   "log_conditional")


@guarded
def check_stable(answer, context):
    """log_conditional where every density underflows: the exact conditional, or one of the
    mistakes of `ADVICE` computed in log space (those are charged once, by check_conditional):
    only instability loses this part."""
    outs = _outputs(answer, context["stable"], "log_conditional(...)")
    for g, r, ms in zip(outs, context["stable"], context["stable_mistakes"]):
        if not any(_same(g, cand, 0.0, STABLE_ATOL, True) for cand in [r, *ms]):
            return Verdict(0.0, "log_conditional fails (NaN, or wrong values) for a point so far from every "
                                "cluster that every predictive density underflows to 0. Work in log space: add "
                                "log weights and log densities (scipy.stats.t.logpdf), then subtract their "
                                "logsumexp.")
    return Verdict(1.0, "log_conditional is numerically stable where every density underflows.")


@guarded
def check_num_clusters(answer, context):
    """The reported P(K = k | x) is the share of the student's draws with k clusters, and it
    agrees with the exact posterior (enumeration) within Z_MC Monte Carlo standard errors of
    those draws (batch means over all chains, at least the error of independent draws and at
    most that of draws MAX_IAT times less informative), cell by cell; chains must agree (split
    R-hat of K)."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    n, cells_ = int(context["n"]), context["cells"]
    kd = D.decode(answer.get("k"), 1, "dpmm_num_clusters")
    few = D.too_few(kd, "dpmm_num_clusters")
    if few is not None:
        return few
    if not (np.all(kd.raw == np.round(kd.raw)) and kd.min[0] >= 1 and kd.max[0] <= n):
        return Verdict(0.0, f"dpmm_num_clusters must hold the number of occupied clusters of each draw: integers "
                            f"from 1 to {n}.")
    c, s = kd.chains, kd.samples
    b = batches_per_chain(c, s)
    totals = raw_array(answer.get("totals"), "dpmm_num_clusters counts", 2)
    batch = raw_array(answer.get("batch_counts"), "dpmm_num_clusters counts", 3)
    if totals.shape != (c, n + 1) or batch.shape != (c, b, n + 1):
        raise BadAnswer("the exported draws are inconsistent")
    if np.any(totals.sum(axis=1) != s) or np.any(batch.sum(axis=2) != s // b):
        return Verdict(0.0, f"dpmm_num_clusters must hold the number of occupied clusters of each draw: integers "
                            f"from 1 to {n}.")
    share = totals.sum(axis=0) / kd.size
    if abs(float(share @ np.arange(n + 1)) - float(kd.mean[0])) > 1e-9 * n:
        raise BadAnswer("the exported draws are inconsistent")
    reported = as_array(answer.get("reported"), (n + 1,), name="dpmm_k_posterior")
    bad = not_converged(np.maximum(kd.rhat, kd.rhat_raw), "number of clusters")
    if bad is not None:
        return bad
    off = np.abs(reported - share) > SUMMARY_Z * np.sqrt(share * (1 - share) / kd.size) + REPORT_ATOL
    if np.any(off):
        ks = ", ".join(str(int(k)) for k in np.flatnonzero(off)[:4])
        return Verdict(0.0, f"dpmm_k_posterior is not the share of your draws dpmm_num_clusters with each number of "
                            f"clusters (k = {ks}): entry k must be np.mean(dpmm_num_clusters == k) over all chains "
                            f"and samples (entry 0 is 0).")
    size = kd.size
    means = np.array([share[cl].sum() for cl in cells_])
    bm = np.stack([batch[..., cl].sum(axis=-1) for cl in cells_], axis=-1).reshape(c * b, -1) / (s // b)
    se_batch = bm.std(axis=0, ddof=1) / math.sqrt(c * b) if c * b > 1 else np.full(len(cells_), np.inf)
    p = np.asarray(context["k_posterior"])
    exact = np.array([p[c].sum() for c in cells_])
    lo = np.sqrt(exact * (1 - exact) / size)
    se = np.clip(se_batch, lo, math.sqrt(MAX_IAT) * lo)
    far = np.abs(means - exact) > Z_MC * se
    if np.any(far):
        which = "; ".join(f"K in {{{', '.join(map(str, cells_[j]))}}}: yours {means[j]:.3f}"
                          for j in np.flatnonzero(far)[:3])
        return Verdict(0.0, f"Your posterior over the number of clusters differs from the exact one by more than "
                            f"Monte Carlo error ({which}). Check log_conditional (your draws come from it), and "
                            "that dpmm_num_clusters counts the distinct labels of each draw (labels may have gaps: "
                            "not the largest label + 1).")
    return Verdict(1.0, "Your posterior over the number of clusters agrees with the exact one within Monte Carlo error.")


# ----------------------------------------------------------------------------- what the notebook states

PROBE_RATES = {"draws": 1000, "false_fail_upper95": 0.003, "styles": 3, "mistakes": 9, "power_min": 1.0}
"""What benchmarks/dpmm_probe_rates.py measured (results/dpmm_probe_rates.json; a test keeps them in step)."""
POSTERIOR_RATES = {"seeds": 200, "styles": 4, "false_fail_upper95": 0.015, "mistake_seeds": 100,
                   "weak": "sampler_plugin_for_new", "weak_caught": 13}
"""What benchmarks/dpmm_probe_rates.py measured for the posterior part over seeds of the student's
sampler run (results/dpmm_posterior_rates.json; a test keeps them in step): no correct style
failed; every mistake but the weak one was caught at every seed."""


def precision_text() -> str:
    r, q = PROBE_RATES, POSTERIOR_RATES
    cells_text = ", ".join("{" + ", ".join(map(str, c)) + "}" if len(c) > 1 else str(c[0]) for c in CELLS)
    return (
        f"**Precision.** `crp_probs` and `log_conditional` are called on test states of the grader's own, drawn "
        f"afresh in every grading run (tables of several sizes, several values of alpha; clusters with arbitrary "
        f"integer labels, point i alone in its cluster or not, several priors), and compared with the exact "
        f"probabilities at relative tolerance {COND_RTOL:g} (absolute {COND_ATOL:g}): float32 and float64 both pass. "
        f"`log_conditional` is also called on a state where every predictive density is below 1e-320, where "
        f"probabilities computed outside log space are 0/0 (there within {STABLE_ATOL:g} of the exact ones). Measured "
        f"over {r['draws']:,} draws of these test states, a correct function ({r['styles']} styles: loops, "
        f"vectorised, float32) failed in less than {100 * r['false_fail_upper95']:.1f} % of them (95 % bound; no "
        f"failure seen), and each of {r['mistakes']} typical mistakes was caught, with its own advice, in "
        f"{100 * r['power_min']:.0f} % (alpha on every table, no new table; alpha in the wrong place, point i counted in "
        f"its own cluster, no new cluster, the prior predictive for an existing cluster, a plug-in Normal for the new "
        f"one, unnormalised; linear space) (benchmarks/dpmm_probe_rates.py). Your posterior over the number of clusters needs at least {MIN_CHAINS} "
        f"chains x {MIN_SAMPLES} kept draws (any number of chains up to {MAX_CHAINS:,}); split R-hat of K over all "
        f"chains at most {RHAT_MAX}. It is compared with the exact posterior (all 115,975 partitions of the ten "
        f"points) within {Z_MC:g} Monte Carlo standard errors of your draws, cell by cell (K = {cells_text}: each "
        f"value of probability at least {P_CELL:g} on its own, the rarer ones together); the standard error comes "
        f"from batch means of all your chains, at least that of independent draws and at most that of draws "
        f"1/{MAX_IAT:g} as informative (a run that has not mixed does not widen its own tolerance). "
        f"`dpmm_k_posterior` must be the share of your draws with each K, to rounding. Measured over "
        f"{q['seeds']} seeds of the sampler run, a correct answer ({q['styles']} styles: the given sampler with 4 "
        f"or 8 chains, float32 arrays, a blocked Gibbs sampler of one's own) failed this part at none (less than "
        f"{100 * q['false_fail_upper95']:.1f} %, 95 % bound); K as the largest label + 1, the share of one "
        f"chain reported, the shares shifted by one and too few draws lost it at every seed, and so did the given "
        f"sampler run with a wrong conditional (point i counted in its own cluster, the prior predictive for an "
        f"existing cluster, no new cluster) at each of {q['mistake_seeds']}; a plug-in Normal for the new cluster "
        f"moves the posterior over K so little that this part caught it at {q['weak_caught']} of "
        f"{q['mistake_seeds']} (the conditional's part always does).")


# ----------------------------------------------------------------------------- the assignment

ASSIGNMENT = Assignment(
    id="dpmm",
    notebook="dpmm.ipynb",
    parts=(
        Part("crp_predictive", 2.0, export_crp, check_crp,
             "crp_probs(counts, alpha): where the next customer sits"),
        Part("gibbs_conditional", 3.0, functools.partial(export_conditional, key="conditional"), check_conditional,
             "log_conditional(i, x, z, alpha, prior): the collapsed-Gibbs conditional of one point"),
        Part("gibbs_conditional_stable", 1.0, functools.partial(export_conditional, key="stable"), check_stable,
             "log_conditional is stable where every density underflows"),
        Part("dpmm_num_clusters", 3.0, export_num_clusters, check_num_clusters,
             "the posterior over the number of clusters, against the exact one"),
    ),
    reference=reference,
    inputs=inputs,
    sandbox_offers=("numpy", "scipy"),  # the allow-list: the conditionals are the student's to write
    packages="`numpy` and `scipy`; the course package `gmmcourse` is not available (`crp_probs` and "
             "`log_conditional` are yours to write)",
    precision=precision_text(),
)
