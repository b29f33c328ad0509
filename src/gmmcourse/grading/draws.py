"""Trusted statistics of a student's exported draws (`gmmcourse.grading.kernel_side.draws`).

The export carries statistics of EVERY chain (computed in the kernel over all draws) and the
raw draws of at most ``EXPORT_MAX_CHAINS`` chains (all of them when there are that few, else a
subset ranked by a hash of all the draws). Here the statistics of the chains that travel raw
are recomputed from the raw draws and must agree (an export that does not is refused), then:
the posterior mean and sd over all draws, the batch-means standard error over all chains,
split R-hat over all chains (from the halves' means and sums of squares: the same number as
`checks.split_rhat` on all the draws) and split R-hat on the raw chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gmmcourse.grading.checks import MIN_CHAINS, MIN_SAMPLES, BadAnswer, raw_array, split_rhat
from gmmcourse.grading.kernel_side import EXPORT_MAX_CHAINS, EXPORT_MAX_VALUES, STAT_BATCHES, batches_per_chain

__all__ = ["Draws", "decode", "FLOAT32_U", "FLOAT64_SUMMARY_RTOL", "CROSS_RTOL", "summary_allowance", "PROB_ATOL",
           "PROB_SUM_ATOL", "conditional_probs", "probs_se", "probs_allowance"]

FLOAT32_U = 2.0 ** -24
"""Unit roundoff of float32."""
FLOAT64_SUMMARY_RTOL = 1e-9
"""A float64 summary of float64 draws: relative rounding allowance."""
CROSS_RTOL = 1e-9
"""The kernel's statistics of a raw chain and the same statistics recomputed here must agree to
this relative precision (both are float64 computations of the same numbers)."""


@dataclass(frozen=True)
class Draws:
    """One parameter's draws, as the trusted side sees them.

    Attributes:
        raw: the raw draws of the chains in `raw_chains` (every `step`-th sample), (c', s', K).
        chains, samples: the size of the whole run.
        step: thinning of `raw`.
        raw_chains: indices of the chains in `raw`.
        mean, sd: over all draws (K,).
        se: batch-means Monte Carlo standard error of `mean` over all chains (K,).
        rhat: split R-hat over all chains (K,); `rhat_raw` on the raw chains.
        float32: every raw value is a float32 number (the sampler works in float32).
        min, max: extremes over all draws (K,); min_gap: smallest difference between
            consecutive components in any draw; max_sum_error: largest |sum - 1| of a draw.
    """

    raw: np.ndarray
    chains: int
    samples: int
    step: int
    raw_chains: tuple
    mean: np.ndarray
    sd: np.ndarray
    se: np.ndarray
    rhat: np.ndarray
    rhat_raw: np.ndarray
    float32: bool
    min: np.ndarray
    max: np.ndarray
    min_gap: float
    max_sum_error: float

    @property
    def size(self) -> int:
        return self.chains * self.samples


def _int(v) -> bool:
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def _agree(got, want) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    return bool(np.all(np.abs(got - want) <= CROSS_RTOL * (np.abs(want) + 1e-300) + 1e-12 * (1 + np.abs(want))))


def _rhat_from_halves(half_mean: np.ndarray, half_ss: np.ndarray, h: int) -> np.ndarray:
    """Split R-hat from each half-chain's mean and sum of squared deviations ((c, 2, K) each)."""
    k = half_mean.shape[-1]
    if h < 2:
        return np.full(k, np.inf)
    means = half_mean.reshape(-1, k)
    w = (half_ss.reshape(-1, k) / (h - 1)).mean(axis=0)
    b_over_n = means.var(axis=0, ddof=1) if means.shape[0] > 1 else np.zeros(k)
    var_hat = (h - 1) / h * w + b_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(var_hat / w)
    return np.where(w > 0, r, np.where(b_over_n > 0, np.inf, 1.0))


def decode(obj, k: int, name: str) -> Draws:
    """Validate and decode one parameter's exported draws (untrusted JSON) into `Draws`.

    Raises:
        BadAnswer: malformed data, or statistics that do not match the raw draws.
    """
    if not isinstance(obj, dict):
        raise BadAnswer(f"{name}: draws are missing")
    shape, step, idx, stats = obj.get("shape"), obj.get("step"), obj.get("chains"), obj.get("stats")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_int(d) and d > 0 for d in shape) or not _int(step):
        raise BadAnswer(f"{name}: draws must have shape (chains, samples, K)")
    c, s, kk = (int(d) for d in shape)
    step = int(step)
    if kk != k:
        raise BadAnswer(f"{name}: draws must have shape (chains, samples, {k}), got {tuple(shape)}")
    kept = min(c, EXPORT_MAX_CHAINS)
    if (not isinstance(idx, list) or len(idx) != kept or not all(_int(i) and 0 <= i < c for i in idx)
            or sorted(set(int(i) for i in idx)) != [int(i) for i in idx]):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    idx = [int(i) for i in idx]
    if step != max(1, -(-kept * s * k // EXPORT_MAX_VALUES)):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    arr = raw_array(obj.get("raw"), f"{name} draws", ndim=3)
    if arr.shape != (kept, -(-s // step), k) or not np.all(np.isfinite(arr)):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    if not isinstance(stats, dict):
        raise BadAnswer(f"{name}: the exported draws are inconsistent")
    h, b = s // 2, batches_per_chain(c, s)
    want = {"mean": (c, k), "ss": (c, k), "half_mean": (c, 2, k), "half_ss": (c, 2, k), "batch_means": (c, b, k),
            "min": (c, k), "max": (c, k), "min_gap": (c,), "max_sum_error": (c,)}
    st = {}
    for key, shp in want.items():
        a = raw_array(stats.get(key), f"{name} {key}")
        if a.shape != shp or not np.all(np.isfinite(a)):
            raise BadAnswer(f"{name}: the exported draws are inconsistent")
        st[key] = a
    # the statistics of the raw chains, recomputed here, must be the exported ones
    sub = {key: v[idx] for key, v in st.items()}
    if step == 1:
        from gmmcourse.grading.kernel_side import chain_stats

        mine = chain_stats(arr, b)
        for key in want:
            if not _agree(raw_array(mine[key], key), sub[key]):
                raise BadAnswer(f"{name}: the exported draws are inconsistent")
    else:  # thinned: the raw chains' means within their Monte Carlo error, extremes within range
        cm = arr.mean(axis=1)
        csd = arr.std(axis=1) + 1e-12
        if (np.any(np.abs(cm - sub["mean"]) > 10 * csd / math.sqrt(arr.shape[1]) * math.sqrt(step))
                or np.any(arr.min(axis=1) < sub["min"]) or np.any(arr.max(axis=1) > sub["max"])):
            raise BadAnswer(f"{name}: the exported draws are inconsistent")
    n = c * s
    mean = st["mean"].mean(axis=0)
    total_ss = st["ss"].sum(axis=0) + s * ((st["mean"] - mean) ** 2).sum(axis=0)
    sd = np.sqrt(total_ss / max(1, n - 1))
    bm = st["batch_means"].reshape(-1, k)
    se = bm.std(axis=0, ddof=1) / math.sqrt(bm.shape[0]) if bm.shape[0] > 1 else np.full(k, np.inf)
    return Draws(
        raw=arr, chains=c, samples=s, step=step, raw_chains=tuple(idx), mean=mean, sd=sd, se=se,
        rhat=_rhat_from_halves(st["half_mean"], st["half_ss"], h), rhat_raw=split_rhat(arr),
        float32=bool(np.all(arr.astype(np.float32).astype(np.float64) == arr)),
        min=st["min"].min(axis=0), max=st["max"].max(axis=0), min_gap=float(st["min_gap"].min()),
        max_sum_error=float(st["max_sum_error"].max()),
    )


def too_few(d: Draws, name: str | None = None):
    """The zero `Verdict` of a part that uses draws when the run is below the stated minimum
    (`MIN_CHAINS` x `MIN_SAMPLES`), else None. ``name``: the answer's variable, for the message."""
    from gmmcourse.grading.spec import Verdict

    if d.chains < MIN_CHAINS or d.samples < MIN_SAMPLES:
        where = f" in {name}" if name else ""
        return Verdict(0.0, f"Too few draws{where} ({d.chains} chains x {d.samples} samples); at least "
                            f"{MIN_CHAINS} x {MIN_SAMPLES} are required (this part uses your draws).")
    return None


def summary_allowance(d: Draws, value, mc_se, z: float) -> np.ndarray:
    """How far a reported statistic of the draws may be from `value`, the same statistic computed
    here: `z` Monte Carlo standard errors `mc_se` of that statistic, plus the rounding of the
    precision the draws were made in (float32: 4 u sqrt(draws) relative, four times the spread
    of the rounding errors of a sequential float32 sum; float64: 1e-9 relative)."""
    rel = 4 * FLOAT32_U * math.sqrt(max(1, d.size)) if d.float32 else FLOAT64_SUMMARY_RTOL
    return z * np.asarray(mc_se, dtype=float) + rel * np.abs(np.asarray(value, dtype=float))


# ----------------------------------------------------------------------------- assignment probabilities

PROB_ATOL = 1e-4
"""Assignment probabilities: allowance for rounding (float32 computations), added to the Monte
Carlo allowance."""
PROB_SUM_ATOL = 1e-3
"""Rows of assignment probabilities must sum to 1 within this."""


def conditional_probs(x, weights, means, sds) -> np.ndarray:
    """P(z_i = k | x_i, parameters) for every draw: (..., K) parameters -> (..., N, K)."""
    from scipy.special import logsumexp

    w, m, s = (np.asarray(a, dtype=np.float64) for a in (weights, means, sds))
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lj = np.log(w)[..., None, :] - 0.5 * ((x[:, None] - m[..., None, :]) / s[..., None, :]) ** 2 - np.log(s)[..., None, :]
    return np.exp(lj - logsumexp(lj, axis=-1, keepdims=True))


def probs_se(p: np.ndarray, batches: int = STAT_BATCHES) -> np.ndarray:
    """Batch-means standard error of the average of per-draw probabilities p (chains, samples, N, K)."""
    c, s = p.shape[:2]
    b = min(batches, s)
    usable = (s // b) * b
    bm = p[:, :usable].reshape(c, b, usable // b, *p.shape[2:]).mean(axis=2).reshape(c * b, *p.shape[2:])
    return bm.std(axis=0, ddof=1) / math.sqrt(bm.shape[0])


def probs_allowance(x, w: Draws, m: Draws, s: Draws, ref_se, max_iat: float, z: float) -> np.ndarray:
    """Allowance (N, K) on an estimate of P(z_i = k | data) from the student's draws against the
    reference: `z` combined Monte Carlo standard errors (the student's from the conditional
    probabilities of their raw draws, capped at what draws `max_iat` times less informative than
    independent ones give, plus the noise of counting sampled labels; the reference's own) plus
    PROB_ATOL."""
    p = conditional_probs(x, w.raw, m.raw, s.raw)  # (c', s', N, K)
    n = max(1, w.size)
    se = probs_se(p) * math.sqrt(p.shape[0] / max(1, w.chains))  # the raw chains' se, for all chains
    spread = p.reshape(-1, *p.shape[2:]).std(axis=0)
    se = np.minimum(se, math.sqrt(max_iat) * spread / math.sqrt(n))
    counting = (p * (1 - p)).reshape(-1, *p.shape[2:]).mean(axis=0) * max_iat / n
    return z * np.sqrt(se ** 2 + counting + np.asarray(ref_se) ** 2) + PROB_ATOL
