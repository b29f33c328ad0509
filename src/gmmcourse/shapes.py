"""Shape buckets: compile each kernel once for many data sizes, K, restarts, chains and draws.

XLA compiles one program per array shape, and compiling the Gibbs scan or the EM loop takes
seconds, far longer than running them on the course's data (20-2,000 points). So
`gmmcourse.em.em` and `gmmcourse.gibbs.posterior` never hand XLA the caller's shapes:

* **data size N** is padded up to a bucket (`bucket_size`): one of `N_BUCKETS` for small
  data (32 points, then 2,048), beyond the last one a multiple of 1/8 of the power of two
  below N (at most 12.5 % padding, where the run time dominates). Padded points repeat
  x[0] and are masked out of every sum, count and density (exact maths: they contribute
  zeros); the true N is a traced argument. **EM** pads all small data to the last bucket
  (one program for N = 1..2,048) and runs each E-step on the first 32 points when they hold
  the data, else on all 2,048 (`gmmcourse.em.PREFIXES`, a `lax.switch` on N), so data
  of up to 32 points run as fast as in a program of their own; on data above the last
  small bucket it keeps the exact shape and no mask (its E-step is memory-bound there and
  the run time dominates). The Gibbs sampler's trace holds every point, so it compiles
  once per bucket.
* **K in EM** is padded to `K_PAD` components for small data (inactive components have
  weight 0: their responsibilities are exactly 0), so K = 1..8 share one program.
  The Gibbs sampler keeps the true K (its relabelling enumerates K! permutations and the
  model's Dirichlet has K entries), one program per K.
* **EM restarts** run in groups of `RESTART_GROUP` for small data; **Gibbs chains** run in
  groups of `chain_group` for small data (4 chains in the 32-point bucket, 2 in the
  2,048-point one; the groups run in threads, on separate cores);
  **Gibbs sweeps** run in chunks of `SWEEP_CHUNK`
  (a compiled scan resumed from its state), so `num_samples`, `num_warmup` and
  `num_chains` do not change any compiled shape.

**XLA's optimisation level** follows the bucket on CPU (`bucket_jit`): the programs for the
small-data buckets compile with `SMALL_DATA_COMPILER_OPTIONS` (XLA -O1: about a third
less compile time, and the course's runs there take a fraction of a second either way),
larger data with XLA's defaults (the run time dominates). A program that runs once per call
(the chains' start: k-means++ seeds and the first trace) compiles with
`RUN_ONCE_COMPILER_OPTIONS` (-O0) for small data: it compiles in about two thirds of the
time and its run time is negligible either way. Accelerators keep their defaults.

Random numbers do not depend on the padding: JAX's threefry generator (partitionable) draws
element i of an array from the counter i, so keys split for 5 restarts, 4 chains or 1,200
sweeps are prefixes of those for more, and per-point noise is drawn in (N, K) layout, a
prefix of the padded (B, K) one. Padded and unpadded runs give the same draws up to
floating-point summation order (tests/test_compile.py).
"""

from __future__ import annotations

import functools
import inspect

import jax
import numpy as np

__all__ = [
    "N_BUCKETS",
    "K_PAD",
    "RESTART_GROUP",
    "CHAIN_GROUP",
    "THREADED_CHAIN_GROUP",
    "chain_group",
    "SWEEP_CHUNK",
    "SMALL_DATA_COMPILER_OPTIONS",
    "RUN_ONCE_COMPILER_OPTIONS",
    "XLA_DEFAULT_OPTIONS",
    "bucket_jit",
    "bucket_size",
    "is_small",
    "pad",
    "pad_em",
]

N_BUCKETS = (32, 2048)
"""Padded data sizes for small data; above the last, geometric buckets 8 per octave."""

K_PAD = 8
"""EM on small data fits K <= K_PAD components in one K_PAD-component program."""

RESTART_GROUP = 5
"""EM restarts per compiled call on small data (more restarts: several calls)."""

CHAIN_GROUP = 4
"""Gibbs chains per compiled call in the smallest bucket, where the per-call overhead
dominates (more chains: several calls, run in threads)."""

THREADED_CHAIN_GROUP = 2
"""Gibbs chains per compiled call in the other small buckets, where the per-point work
dominates: the default 4 chains run as two groups in threads, on two cores."""


def chain_group(n: int, num_chains: int) -> int:
    """Chains per compiled call of the Gibbs sampler on N points: `CHAIN_GROUP` in the
    smallest bucket, `THREADED_CHAIN_GROUP` in the other small ones, all `num_chains` on
    larger data (one program per number of chains there)."""
    if not is_small(n):
        return num_chains
    return CHAIN_GROUP if bucket_size(n) <= N_BUCKETS[0] else THREADED_CHAIN_GROUP


SWEEP_CHUNK = 100
"""Gibbs sweeps per compiled call (a scan resumed from its carried state)."""


def bucket_size(n: int) -> int:
    """The padded size of N points: the smallest of `N_BUCKETS` that holds them, else N
    rounded up to a multiple of 2^(floor(log2 N) - 3)."""
    n = int(n)
    for b in N_BUCKETS:
        if n <= b:
            return b
    step = 1 << max(int(n).bit_length() - 4, 0)
    return -(-n // step) * step


def is_small(n: int) -> bool:
    """Whether N points fall in one of the fixed `N_BUCKETS` (compilation dominates there,
    so K, restarts and chains are padded too)."""
    return int(n) <= N_BUCKETS[-1]


def pad(x, dtype, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x padded to `size` points (default `bucket_size(len(x))`) with copies of x[0], mask
    of the real points). Points are along the first axis: x is (N,) or (N, D)."""
    x = np.asarray(x)
    n = x.shape[0]
    size = bucket_size(n) if size is None else size
    xp = np.empty((size, *x.shape[1:]), dtype=dtype)
    xp[:] = x[0]
    xp[:n] = x
    return xp, np.arange(size) < n


def pad_em(x, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """EM's data (`gmmcourse.em`): small data padded to the last of `N_BUCKETS` with their
    mask (`pad`; one program for every N up to it), larger data as they are, in `dtype`,
    with no mask (the run time dominates there, and a mask costs time in every E-step)."""
    if is_small(len(x)):
        return pad(x, dtype, size=N_BUCKETS[-1])
    return np.asarray(x, dtype), None


SMALL_DATA_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
"""XLA options of the small-data programs on CPU (see the module docstring)."""

XLA_DEFAULT_OPTIONS: dict = {}
"""`bucket_jit`'s `small_options` for a program that keeps XLA's defaults on small data too:
the DP mixture's chains (thousands of sweeps: their run time dominates) and multivariate EM
(at -O1 its float32 fits differ in the last bits from the defaults' fits)."""

RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
"""XLA options, on small data on CPU, of a program that runs once per call (no loop over
sweeps or iterations): compile time is all its cost there."""


class bucket_jit:
    """`jax.jit` with XLA options chosen by the data bucket, through
    `gmmcourse.programs.exported_jit` (programs kept between processes):
    ``@bucket_jit(data_arg=2, static_argnames=(...))`` compiles with `small_options`
    (default `SMALL_DATA_COMPILER_OPTIONS`) for data (argument `data_arg`, N points along
    axis `data_axis`) in the small-data buckets on CPU, and with XLA's defaults otherwise.
    `_cache_size()` counts the programs of both."""

    def __init__(self, data_arg: int, static_argnames: tuple[str, ...] = (), small_options: dict | None = None,
                 data_axis: int = 0):
        self.data_arg = data_arg
        self.data_axis = data_axis
        self.static_argnames = tuple(static_argnames)
        self.small_options = SMALL_DATA_COMPILER_OPTIONS if small_options is None else small_options

    def __call__(self, fun):
        from gmmcourse.programs import exported_jit

        signature = inspect.signature(fun)
        static_names = self.static_argnames
        data_name = list(signature.parameters)[self.data_arg]

        def by_name(dynamic: dict, **static):
            return fun(**dynamic, **static)

        name = f"{fun.__module__}.{fun.__qualname__}"
        small = exported_jit(by_name, compiler_options=self.small_options, name=name + "[small]")
        large = exported_jit(by_name, name=name)

        def pick(args, kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            static = {k: arguments.pop(k) for k in static_names if k in arguments}  # an omitted static keeps its default
            n = arguments[data_name].shape[self.data_axis]
            use_small = is_small(n) and jax.default_backend() == "cpu"
            return (small if use_small else large), arguments, static

        @functools.wraps(fun)
        def call(*args, **kwargs):
            program, arguments, static = pick(args, kwargs)
            return program(arguments, **static)

        def prepare(*args, **kwargs):
            program, arguments, static = pick(args, kwargs)
            return program.prepare(arguments, **static)

        call._cache_size = lambda: small._cache_size() + large._cache_size()
        call.prepare = prepare  # build the program without running it (`exported_jit.prepare`)
        call.small, call.large = small, large
        return call
