"""Shared trusted helpers of the checks: validation, named tolerances, Monte Carlo comparisons.

Each assignment's own checks live in its module (`gmmcourse.grading.assignments`). Every
check has the signature ``(answer, context) -> Verdict`` (see `gmmcourse.grading.spec`) and is
wrapped in `guarded`, which turns malformed data into a zero verdict with a format message.
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

import numpy as np

from gmmcourse.grading.spec import Verdict

from gmmcourse.grading.kernel_side import MAX_RAW
from gmmcourse.grading.spec import sanitize

__all__ = [
    "Z_MC", "BATCHES", "MIN_CHAINS", "MIN_SAMPLES", "EXACT_RTOL", "EXACT_ATOL", "MAX_IAT",
    "RHAT_MAX", "SUMMARY_Z", "ORDER_ADVICE", "BadAnswer", "guarded", "as_array", "scalar", "close",
    "exact_close", "time_limit_note", "batch_summary", "raw_array", "split_rhat",
    "capped_se", "sd_ok", "not_converged", "mc_compare", "best_permutation",
]

Z_MC = 4.5
"""z multiplier of the Monte Carlo tolerance (per compared number)."""
BATCHES = 20
"""Batches per chain for batch-means standard errors (computed in the export code)."""
MIN_CHAINS = 4
MIN_SAMPLES = 1000
"""The notebooks ask for at least MIN_CHAINS chains of MIN_SAMPLES kept draws each."""
"""Absolute tolerance on posterior assignment probabilities (Monte Carlo + estimator choice)."""
EXACT_RTOL = 1e-4
EXACT_ATOL = 1e-6
"""Exact answers: float32 precision (relative 1e-4, absolute 1e-6 near 0), stated in the notebooks."""
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


def guarded(fn):
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


def close(a, b, rtol, atol) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= atol + rtol * np.abs(np.asarray(b))))


def scalar(answer, key) -> float:
    """A finite number under `key` of an exported dict."""
    if not isinstance(answer, dict):
        raise BadAnswer("expected a dict")
    return float(as_array(answer.get(key), (), name=key))


def exact_close(got, ref) -> bool:
    """The one exact-answer comparison (EXACT_RTOL, EXACT_ATOL)."""
    return close(got, ref, EXACT_RTOL, EXACT_ATOL)


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


def not_converged(rhat, what) -> Verdict | None:
    worst = float(np.max(rhat))
    if not worst <= RHAT_MAX:
        # as many digits as it takes for the printed value to exceed the printed limit
        digits = next((d for d in range(2, 17) if float(f"{worst:.{d}f}") > RHAT_MAX), 17)
        shown = "infinite" if not np.isfinite(worst) else f"{worst:.{digits}f}"
        return Verdict(0.0, f"Your chains have not converged: they disagree about the {what} (split R-hat "
                            f"{shown}, above the limit {RHAT_MAX}; R-hat compares the spread between chains and "
                            "halves of chains with the spread within them, and is 1 when they agree). Add "
                            "warm-up, start the chains sensibly, and check your updates; no tolerance is widened "
                            "for a run that has not converged.")
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


# ----------------------------------------------------------------------------- probabilities


ORDER_ADVICE = "Component 0 must be the lighter one (the notebook fixes the order): your {what} are in another order."

