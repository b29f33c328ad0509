"""Input checks that turn bad input into a `ValueError` naming the argument."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_data", "check_dtype", "check_k", "check_non_negative", "check_non_negative_int", "check_params",
           "check_positive_int"]


def check_positive_int(value, name: str) -> int:
    """Return `value` as an int, or raise if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_non_negative_int(value, name: str) -> int:
    """Return `value` as an int, or raise if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_non_negative(value, name: str) -> float:
    """Return `value` as a float, or raise if it is not a finite real number >= 0."""
    try:
        number = float(value) if np.ndim(value) == 0 and not isinstance(value, (bool, str, complex)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not (np.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return number


def check_dtype(dtype) -> np.dtype:
    """Return `dtype` as a NumPy dtype, or raise if it is not float32 or float64 (the two
    precisions the samplers and EM compile for)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype if dt is None else dt}")
    return dt


def check_data(x, name: str = "x") -> np.ndarray:
    """Validate 1-D observations.

    Args:
        x: array-like of shape (N,) with N >= 1, all finite.
        name: the argument's name, for the message.

    Returns:
        ``x`` as a float numpy array (float64 unless it was float32).
    """
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} must be a 1-D array of numbers ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a 1-D array of numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (shape (N,)), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one observation")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued")
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s), e.g. at index {idx}")
    return arr


def check_k(k, n: int, name: str = "k") -> int:
    """Validate a number of components: an integer with 1 <= k <= n."""
    k = check_positive_int(k, name)
    if k > n:
        raise ValueError(f"{name}={k} components is more than the {n} data point(s)")
    return k


def check_params(weights, means, sds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate mixture parameters: three finite 1-D arrays of one length K >= 1,
    weights non-negative summing to 1 (within 1e-6), sds positive."""
    out = []
    for name, v in (("weights", weights), ("means", means), ("sds", sds)):
        arr = np.asarray(v, dtype=np.float64) if not hasattr(v, "dtype") else np.asarray(v)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array (shape (K,)), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values: {arr}")
        out.append(arr)
    w, m, s = out
    if not (w.shape == m.shape == s.shape):
        raise ValueError(f"weights, means and sds must have the same shape (K,), got {w.shape}, {m.shape}, {s.shape}")
    if np.any(w < 0) or abs(float(w.sum()) - 1.0) > 1e-5:
        raise ValueError(f"weights must be non-negative and sum to 1, got {w} (sum {float(w.sum())})")
    if np.any(s <= 0):
        raise ValueError(f"sds must be positive, got {s}")
    return w, m, s
