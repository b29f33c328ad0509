"""Trusted reference answers: shared computations, and the on-disk cache of each assignment's
reference (keyed by the version of the code that computes it)."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gmmcourse.grading import checks as C
from gmmcourse.grading.files import atomic_write
from gmmcourse.grading.sandbox import REPO_ROOT
from gmmcourse.grading.spec import Assignment, GradingError

__all__ = ["REF_CHAINS", "REF_SAMPLES", "REF_WARMUP", "REF_SEED", "f64", "posterior", "posterior_summary", "cached",
           "fresh_inputs", "inputs_key"]

REF_CHAINS = 8
REF_SAMPLES = 2500
REF_WARMUP = 500
REF_SEED = 20240917
"""The reference posteriors: 8 chains x 2500 kept draws of the course's Gibbs sampler."""


def f64(fn, *args) -> np.ndarray:
    """``fn(*args)`` evaluated in float64 (JAX's x64 mode), as a NumPy float64 array."""
    from gmmcourse.precision import x64_context

    with x64_context(np.float64):
        return np.asarray(fn(*(np.asarray(a, dtype=np.float64) for a in args)), dtype=np.float64)


@functools.lru_cache(maxsize=4)
def posterior(data: str):
    """The reference posterior of a course data set (``"coffee"``, K = 3, or ``"bento"``, K = 2)
    under its prior from `gmmcourse.models`."""
    from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
    from gmmcourse.gibbs import posterior as gibbs_posterior
    from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR

    x, k, prior = {"coffee": (COFFEE_CAFFEINE, 3, COFFEE_PRIOR), "bento": (BENTO_WEIGHTS, 2, BENTO_PRIOR)}[data]
    return gibbs_posterior(x, k, prior=prior, num_chains=REF_CHAINS, num_samples=REF_SAMPLES,
                           num_warmup=REF_WARMUP, seed=REF_SEED, dtype=np.float64)


def posterior_summary(post, batches: int = C.BATCHES) -> dict:
    """Mean, sd, batch-means se and ESS of each parameter of a `gmmcourse.gibbs.Posterior`."""
    out = {}
    for name in ("weights", "means", "sds"):
        s = C.batch_summary(getattr(post, name), batches)
        bm = np.asarray(s["batch_means"])
        se = bm.std(axis=0, ddof=1) / math.sqrt(bm.shape[0])
        sd = np.asarray(s["sd"])
        out[name] = {"mean": s["mean"], "sd": s["sd"], "se": se.tolist(),
                     "ess": (sd ** 2 / np.maximum(se, 1e-12) ** 2).tolist()}
    return out


def source_of(fn) -> str:
    """The source of a function (its repr if it has none), for fingerprints and cache keys."""
    fn = getattr(fn, "__wrapped__", fn)
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return repr(fn)


def fresh_inputs(generator):
    """An assignment's ``inputs`` drawn fresh in every grading run (decorator).

    ``generator(rng)`` (a `numpy.random.Generator`) returns the inputs; the decorated
    function draws them once per process from an OS-random seed and returns the same draw
    on every call, so that the reference (computed from ``inputs()`` in the same process),
    the data sent into every sandbox and the checks agree within a run, while no two runs
    use the same hidden cases: a lookup table built from inputs seen once (a leak, or an
    earlier run) matches none of the next run's. ``.generator`` is the generator (hashed by
    `inputs_key`: a run with no change is no reason to regrade); ``.redraw()`` draws anew
    (tests, or a long-lived process starting another run)."""

    state: dict[str, Any] = {}

    @functools.wraps(generator)
    def inputs() -> dict:
        if "value" not in state:
            import secrets

            state["value"] = generator(np.random.default_rng(secrets.randbits(128)))
        return state["value"]

    def redraw() -> None:
        state.clear()

    inputs.generator = generator
    inputs.redraw = redraw
    return inputs


def _fresh(a: Assignment):
    return getattr(a.inputs, "generator", None)


def inputs_key(a: Assignment) -> str:
    """What decides an assignment's inputs, for the regrade fingerprint: the generator's
    module source when they are drawn fresh each run (`fresh_inputs`; the draw itself changes
    every run), else the inputs themselves (JSON)."""
    gen = _fresh(a)
    if gen is None:
        return json.dumps(a.inputs(), sort_keys=True, allow_nan=False)
    module = inspect.getmodule(gen)
    try:
        text = inspect.getsource(module) if module is not None else source_of(gen)
    except (OSError, TypeError):
        text = source_of(gen)
    return "fresh\0" + hashlib.sha256(text.encode()).hexdigest()


class _Deferred(Mapping):
    """A reference computed on first use: a run with nothing to grade (every submission
    unchanged) never computes a fresh draw's reference."""

    def __init__(self, compute):
        self._compute, self._value = compute, None

    def _get(self) -> Mapping:
        if self._value is None:
            try:
                self._value = self._compute()
            except Exception as e:  # never mistaken by a check for a malformed answer
                raise GradingError(f"the reference could not be computed: {type(e).__name__}: {e}") from e
        return self._value

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def cached(a: Assignment, course: Path) -> tuple[Any, str]:
    """The assignment's reference, cached in ``<course>/.cache/`` by the version of the code
    that computes it (the course package's sources), and the sha256 of its values.

    Where the inputs are drawn fresh each run (`fresh_inputs`), the reference of this run's
    draw is computed, never cached, and its key is that of the code (`inputs_key` and the
    sources): the same in every run with no change."""
    code = hashlib.sha256(a.id.encode())
    for f in sorted(Path(REPO_ROOT / "src" / "gmmcourse").rglob("*.py")):
        code.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    code.update(source_of(a.reference).encode())
    if _fresh(a) is not None:
        code.update(inputs_key(a).encode())
        return _Deferred(a.reference), "fresh-" + code.hexdigest()
    path = course / ".cache" / f"reference-{a.id}-{code.hexdigest()[:20]}.json"
    try:
        text = path.read_text()
        return json.loads(text), hashlib.sha256(text.encode()).hexdigest()
    except (OSError, ValueError):
        pass
    value = a.reference()
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not plain data: not cached, keyed by its repr
        return value, hashlib.sha256(repr(value).encode()).hexdigest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"reference-{a.id}-*.json"):
            old.unlink(missing_ok=True)
        atomic_write(path, text)
    except OSError:
        pass
    return json.loads(text), hashlib.sha256(text.encode()).hexdigest()
