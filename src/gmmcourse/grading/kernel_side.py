"""Helpers that run inside the student's kernel, in the sandbox: student values to plain data.

This module is never imported there. Its source, and the source of a part's export function,
is sent into the kernel by `gmmcourse.grading.protocol.function_export` and executed in a private
namespace, so it may use only the Python standard library, NumPy, and what the notebook
itself offers. Nothing computed here is trusted: arrays travel as raw float64 data and every
statistic is computed on the trusted side (`gmmcourse.grading.checks`).

The same functions run in-process on the trusted side in tests and in `grading.local`.
"""

import base64

import numpy as np

EXPORT_MAX_CHAINS = 16
EXPORT_MAX_VALUES = 65536
"""Draws travel raw for at most EXPORT_MAX_CHAINS chains and EXPORT_MAX_VALUES numbers per
parameter (more samples are thinned evenly, by a rule the trusted side re-checks); with more
chains, which ones travel raw is decided by a hash of all the draws (`raw_chains`), not by
their order. Statistics of EVERY chain travel too (`chain_stats`), so that the trusted side
compares a summary with all the draws and computes R-hat over all chains."""
STAT_BATCHES = 20
STAT_TOTAL_BATCHES = 400
"""Batch means travel for every chain: STAT_BATCHES per chain, fewer when there are many chains
(at least one per chain, about STAT_TOTAL_BATCHES in all): `batches_per_chain`."""
MAX_CHAINS = 1000
"""Most chains an export carries (its size stays under the grader's 4 MiB per answer); the
notebooks state it."""


def batches_per_chain(chains, samples):
    """Batches per chain of the exported batch means (the trusted side expects the same)."""
    return max(1, min(STAT_BATCHES, STAT_TOTAL_BATCHES // max(1, chains), samples))
MAX_RAW = 10**6
"""Largest raw array (numbers) an export may carry."""
MAX_JSON = 200_000
"""Largest array an export may carry as JSON numbers."""


def raw(a):
    """Raw float64 data, base64 (the trusted side decodes it and computes every statistic)."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    if a.size > MAX_RAW:
        raise ValueError("array too large")
    return {"shape": [int(d) for d in a.shape], "f8": base64.b64encode(a.astype("<f8").tobytes()).decode("ascii")}


def raw_chains(a, limit=EXPORT_MAX_CHAINS):
    """Indices (sorted) of the chains of `a` (chains, samples, K) that travel raw: all of them up
    to `limit`, else `limit` chains ranked by a SHA-256 of all the draws and the chain's index
    (a choice the sampler cannot steer, and the same at every regrade)."""
    import hashlib

    c = a.shape[0]
    if c <= limit:
        return list(range(c))
    digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).digest()
    rank = sorted(range(c), key=lambda i: hashlib.sha256(digest + i.to_bytes(8, "little")).digest())
    return sorted(rank[:limit])


def chain_stats(a, b=None):
    """Per-chain statistics of ALL draws (chains, samples, K), in float64: means and sums of
    squared deviations of each chain and of its two halves (split R-hat), batch means, extremes,
    the smallest gap between consecutive components, the largest |sum - 1| of a draw. `b`
    batches per chain (default `batches_per_chain`)."""
    c, s, k = a.shape
    h = s // 2
    halves = np.stack([a[:, :h], a[:, h:2 * h]], axis=1)
    half_mean = halves.mean(axis=2)
    b = b or batches_per_chain(c, s)
    usable = (s // b) * b
    mean = a.mean(axis=1)
    return {
        "mean": raw(mean),
        "ss": raw(((a - mean[:, None]) ** 2).sum(axis=1)),
        "half_mean": raw(half_mean),
        "half_ss": raw(((halves - half_mean[:, :, None]) ** 2).sum(axis=2)),
        "batch_means": raw(a[:, :usable].reshape(c, b, usable // b, k).mean(axis=2)),
        "min": raw(a.min(axis=1)),
        "max": raw(a.max(axis=1)),
        "min_gap": raw(np.diff(a, axis=-1).min(axis=(1, 2)) if k > 1 else np.zeros(c)),
        "max_sum_error": raw(np.abs(a.sum(axis=-1) - 1.0).max(axis=1)),
    }


def draws(a):
    """Draws (chains, samples, K): statistics of every chain (`chain_stats`) and the raw draws of
    at most EXPORT_MAX_CHAINS chains (`raw_chains`), thinned evenly if needed."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError("draws must have shape (chains, samples, K)")
    c, s, k = a.shape
    if c > MAX_CHAINS:
        raise ValueError(f"at most {MAX_CHAINS} chains can be graded, got {c}")
    if not np.all(np.isfinite(a)):
        raise ValueError("draws contain NaN or infinite values")
    idx = raw_chains(a)
    step = max(1, -(-len(idx) * s * k // EXPORT_MAX_VALUES))
    return {"shape": [int(c), int(s), int(k)], "step": int(step), "chains": idx,
            "raw": raw(a[idx, ::step]), "stats": chain_stats(a)}


def to_json(v, _depth=0):
    """Plain JSON data of a value, never trusting its type (NaN and infinities become None)."""
    if _depth > 8:
        raise ValueError("nested too deeply")
    if isinstance(v, dict):
        return {str(k): to_json(x, _depth + 1) for k, x in list(v.items())[:64]}
    if isinstance(v, (list, tuple)) and not all(isinstance(x, (int, float)) for x in v):
        try:
            return to_json(np.asarray(v, dtype=float), _depth + 1)
        except Exception:
            return [to_json(x, _depth + 1) for x in list(v)[:4096]]
    if isinstance(v, str):
        return v[:8_000_000]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise ValueError("not numeric")
    if a.size > MAX_JSON:
        raise ValueError("array too large")
    a = a.astype(float)

    def conv(x):
        return float(x) if np.isfinite(x) else None

    if a.ndim == 0:
        return conv(a)
    return np.vectorize(conv, otypes=[object])(a).tolist()


def floats(v):
    """A float64 array of a student's value (for calling the student's functions)."""
    return np.asarray(v, dtype=float)


def var(student, name):
    """The student's variable `name` (a NameError, as in the notebook, if it is not defined)."""
    try:
        return student[name]
    except KeyError:
        raise NameError(f"name {name!r} is not defined") from None
