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
           "fresh_inputs", "inputs_key", "Hidden"]

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


def _code_key(a: Assignment) -> str:
    """The version of the code that computes ``a``'s inputs and reference: the course
    package's sources, the reference function and the numerical libraries' versions (files
    read, nothing imported)."""
    import importlib.metadata

    code = hashlib.sha256(a.id.encode())
    for f in sorted(Path(REPO_ROOT / "src" / "gmmcourse").rglob("*.py")):
        code.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    code.update(source_of(a.reference).encode())
    for name in ("numpy", "jax", "jaxlib", "genjax"):
        try:
            code.update(f"{name}={importlib.metadata.version(name)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            code.update(f"{name}=none\0".encode())
    return code.hexdigest()


def _read(path: Path) -> str | None:
    try:
        text = path.read_text()
        json.loads(text)
        return text
    except (OSError, ValueError):
        return None


def _keep(path: Path, prefix: str, text: str) -> None:
    """Write ``text`` to the cache (replacing older versions); a cache that cannot be
    written only costs a recomputation next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"{prefix}-*.json"):
            old.unlink(missing_ok=True)
        atomic_write(path, text)
    except OSError:
        pass


_UNSET = object()


class Hidden:
    """An assignment's hidden inputs and reference for one grading run.

    The keys (what the regrade fingerprint hashes) are cheap where the course's cache holds
    this version of the code's values: a run that grades nothing computes nothing (no JAX,
    no sampler). The values come on first use: `inputs_json` for the sandboxes, `reference`
    for the checks. Where the inputs are drawn fresh each run (`fresh_inputs`), nothing is
    cached and the keys are those of the code."""

    def __init__(self, a: Assignment, course: Path):
        self.assignment = a
        code = _code_key(a)
        self._inputs_text: str | None = None
        self._reference: Any = _UNSET
        if _fresh(a) is not None:
            self.inputs_key = inputs_key(a)
            self.reference_key = "fresh-" + hashlib.sha256((code + self.inputs_key).encode()).hexdigest()
            self._reference = _Deferred(a.reference)
            return
        cache = Path(course) / ".cache"
        ipath = cache / f"inputs-{a.id}-{code[:20]}.json"
        self._inputs_text = _read(ipath)
        if self._inputs_text is None:
            self._inputs_text = json.dumps(a.inputs(), allow_nan=False)
            _keep(ipath, f"inputs-{a.id}", self._inputs_text)
        # the inputs' own JSON with sorted keys, as `inputs_key` writes it
        self.inputs_key = json.dumps(json.loads(self._inputs_text), sort_keys=True, allow_nan=False)
        rpath = cache / f"reference-{a.id}-{code[:20]}.json"
        text = _read(rpath)
        if text is None:
            value = a.reference()
            try:
                text = json.dumps(value, sort_keys=True, allow_nan=False)
            except (TypeError, ValueError):  # not plain data: not cached, keyed by its repr
                self._reference = value
                self.reference_key = hashlib.sha256(repr(value).encode()).hexdigest()
                return
            _keep(rpath, f"reference-{a.id}", text)
        self._reference_text = text
        self.reference_key = hashlib.sha256(text.encode()).hexdigest()

    def inputs_json(self) -> str:
        """The inputs sent into every sandbox (JSON text)."""
        if self._inputs_text is None:  # drawn fresh: this run's draw
            self._inputs_text = json.dumps(self.assignment.inputs(), allow_nan=False)
        return self._inputs_text

    def reference(self) -> Any:
        """The reference values the checks compare with."""
        if self._reference is _UNSET:
            self._reference = json.loads(self._reference_text)
        return self._reference


def cached(a: Assignment, course: Path) -> tuple[Any, str]:
    """The assignment's reference (`Hidden`: cached in ``<course>/.cache/`` by the version of
    the code that computes it) and its key: the sha256 of its values, or for inputs drawn
    fresh each run the key of the code (the same in every run with no change)."""
    h = Hidden(a, course)
    return h.reference(), h.reference_key
