"""Helpers that run inside the student's kernel, in the sandbox: student values to plain data.

This module is never imported there. Its source, and the source of a part's export function,
is sent into the kernel by `gmmcourse.grading.spec.export_code` and executed in a private
namespace, so it may use only the Python standard library, NumPy, and what the notebook
itself offers. Nothing computed here is trusted: arrays travel as raw float64 data and every
statistic is computed on the trusted side (`gmmcourse.grading.checks`).

The same functions run in-process on the trusted side in tests and in `grading.local`.
"""

import base64

import numpy as np

EXPORT_MAX_CHAINS = 16
EXPORT_MAX_VALUES = 65536
"""Draws travel raw: at most EXPORT_MAX_CHAINS chains and EXPORT_MAX_VALUES numbers per
parameter (more samples are thinned evenly, by a rule the trusted side re-checks)."""
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


def draws(a):
    """Draws (chains, samples, K): the first EXPORT_MAX_CHAINS chains, thinned evenly if needed."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError("draws must have shape (chains, samples, K)")
    c, s, k = a.shape
    kept = a[:EXPORT_MAX_CHAINS]
    step = max(1, -(-kept.shape[0] * s * k // EXPORT_MAX_VALUES))
    return {"shape": [int(c), int(s), int(k)], "step": int(step), "raw": raw(kept[:, ::step])}


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
