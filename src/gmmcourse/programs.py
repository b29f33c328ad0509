"""Compiled programs that outlive the process: the package's kernels kept as `jax.export`s.

JAX's persistent compilation cache keeps what XLA compiled, but it finds an entry by the
program's HLO, so a fresh process must first trace the Python code and lower it: for the
Gibbs sampler, GenJAX's traces, updates and `vmap`s take about 2 s per program, and
`loo_table` (10 programs) spent 12 of its 19 s there with every program already compiled
in the cache. `exported_jit` keeps the lowered program too: on CPU the first process that
needs a program exports it (`jax.export`, StableHLO) into ``gmmcourse-programs/`` inside
JAX's cache directory, and later processes deserialize it in milliseconds and hand it to
XLA, whose compilation the persistent cache then answers.

A program is filed under a digest of everything that decides it: the function, the
package's kernel sources (`code_version`), the jax, jaxlib and genjax versions, the
argument shapes, dtypes and tree, the static arguments, x64 mode and the XLA options. A
file that cannot be read or written is skipped (the student sandbox mounts the cache
read-only): the program is then exported again in memory, never wrong. Every call, first
or later, with or without a cache directory, runs the same exported program, so a result
does not depend on whether the file existed.

Accelerators use plain `jax.jit` (tracing is a small part of their first call, and
`jax.export` accepts only custom calls it knows to be stable).

The package's inference kernels compile here: EM and the Gibbs chains through
`gmmcourse.shapes.bucket_jit` (XLA options by data bucket), SMC and the exact enumeration
directly (`gmmcourse.smc`, `gmmcourse.exact`).

**The package's one thread pool.** Work that overlaps other work -- compiling a prepared
program (`exported_jit.prepare`), building the chains' programs while EM runs, chain groups
side by side (`gmmcourse.chains`), the K of `gmmcourse.selection.loo_table` -- runs in one
module-level pool, created on first use, of `pool_size` threads: the usable cores
(`os.sched_getaffinity`), at most `MAX_THREADS`. Every thread counts against the grading
sandbox's process limit (`max_pids` of its limits, 64 processes and
threads together, XLA's own threads included), so the pool is small and never grows.
Work is handed to it in two ways. `start` and `parallel_map` return what the caller waits
for; called from one of the pool's own threads they run the work at once in that thread
(a pool task that waited for a task queued behind it in a bounded pool would wait forever:
loo_table's K each call `posterior`, which builds and runs chains). `detach` submits work
nobody waits for (a compilation that a later call finds done, or does itself).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax

from gmmcourse.atomic import atomic_write
from gmmcourse.codeversion import code_version

__all__ = ["MAX_THREADS", "code_version", "detach", "exported_jit", "parallel_map", "pool_size", "program_dir",
           "start", "usable_cores"]

SUBDIR = "gmmcourse-programs"
_TRACE_LOCK = threading.RLock()
MAX_THREADS = 4
"""Most threads of the package's pool (the grading sandbox caps processes and threads)."""
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_WORKER = threading.local()  # .in_pool: set in the pool's own threads


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(os.cpu_count() or 1, 1)


def pool_size() -> int:
    """Threads of the package's pool: the usable cores, at most `MAX_THREADS`."""
    return min(usable_cores(), MAX_THREADS)


def _mark_worker() -> None:
    _WORKER.in_pool = True


def _pool() -> ThreadPoolExecutor:
    """The package's one thread pool, created on first use (see the module docstring)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=pool_size(), thread_name_prefix="gmmcourse",
                                           initializer=_mark_worker)
    return _POOL


def _in_pool() -> bool:
    return getattr(_WORKER, "in_pool", False)


def start(fn, *args) -> Future:
    """Run `fn(*args)` in the pool and return its future; in one of the pool's own threads,
    run it now, in that thread (its future is then done), so that waiting for it is safe."""
    if not _in_pool():
        return _pool().submit(fn, *args)
    done: Future = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as e:  # raised where the caller asks for the result, as from the pool
        done.set_exception(e)
    return done


def parallel_map(fn, items) -> list:
    """[fn(item) for item in items], in the pool's threads side by side (in order); one item,
    or a call from one of the pool's own threads, runs in the calling thread."""
    items = list(items)
    if len(items) <= 1 or _in_pool():
        return [fn(item) for item in items]
    return list(_pool().map(fn, items))


def detach(fn, *args) -> None:
    """Run `fn(*args)` in the pool, without waiting for it: nothing may wait for its result
    (it must not raise; a later caller redoes or finds its work)."""
    _pool().submit(fn, *args)


def program_dir() -> Path | None:
    """Where exported programs are kept: ``gmmcourse-programs/`` in JAX's persistent
    compilation cache directory, or None when no cache directory is configured."""
    root = jax.config.jax_compilation_cache_dir
    return Path(root) / SUBDIR if root else None


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _spec(leaf) -> jax.ShapeDtypeStruct:
    aval = leaf if isinstance(leaf, jax.ShapeDtypeStruct) else jax.typeof(leaf)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)  # no sharding: one key per shape


def _load(path: Path):
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # absent, unreadable, truncated or from another format: export again
        return None


def _save(path: Path, exported) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0644 whatever the umask, like JAX's cache entries: readable by the sandbox's kernels;
        # no fsync: a torn or missing entry is exported again (`_load`)
        atomic_write(path, exported.serialize(), 0o644, exact=True, durable=False)
    except OSError:  # read-only cache (the student sandbox), full disk: keep it in memory only
        pass


class exported_jit:
    """`jax.jit(fun)` whose programs are exported once and kept on disk (see the module
    docstring). Arguments are pytrees of arrays (PRNG key arrays allowed); keyword
    arguments are static. `fun` must return arrays in tuples, lists, dicts or None (no key
    arrays: return `jax.random.key_data`). `_cache_size()` counts the programs this
    process holds."""

    def __init__(self, fun, *, compiler_options: dict | None = None, name: str | None = None):
        self.fun = fun
        self.compiler_options = compiler_options
        self.name = name or f"{fun.__module__}.{fun.__qualname__}"
        self._programs: dict = {}  # sig -> compiled program
        self._lowered: dict = {}  # sig -> exported (CPU) or lowered program
        self._locks: dict = {}
        functools.update_wrapper(self, fun)

    def _cache_size(self) -> int:
        return len(self._lowered)

    def __call__(self, *args, **static):
        flat, sig = self._signature(args, static)
        return self._compiled(sig)(*flat)

    def prepare(self, *args, **static):
        """Start building the program for these arguments (arrays or `jax.ShapeDtypeStruct`s)
        without running it: trace and lower it (or load it) now, compile it in a background
        thread. Returns its output shapes, so that a caller can prepare the next program of
        a chain while XLA compiles this one (`gmmcourse.chains` does, while EM runs)."""
        _, sig = self._signature(args, static)
        lowered = self._lower(sig)
        detach(self._compile_quietly, sig)
        if isinstance(lowered, jax.export.Exported):
            out = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in lowered.out_avals]
            return jax.tree.unflatten(lowered.out_tree, out)
        return lowered.out_info

    def _signature(self, args, static):
        leaves, tree = jax.tree.flatten(args)
        keys = tuple(str(jax.random.key_impl(leaf)) if _is_key(leaf) else None for leaf in leaves)
        flat = [jax.random.key_data(leaf) if k else leaf for leaf, k in zip(leaves, keys)]
        specs = tuple(_spec(leaf) for leaf in flat)
        sig = (tree, keys, specs, tuple(sorted(static.items())), bool(jax.config.jax_enable_x64),
               jax.default_backend())
        return flat, sig

    def _once(self, table: dict, kind: str, sig, build):
        """table[sig], built once by one thread (others wait for it)."""
        value = table.get(sig)
        if value is None:
            with self._locks.setdefault((kind, sig), threading.Lock()):
                value = table.get(sig)
                if value is None:
                    value = table[sig] = build(sig)
        return value

    def _compiled(self, sig):
        """The compiled program: XLA's compilation, or its persistent cache, runs outside the
        tracing lock, so threads compile in parallel."""
        return self._once(self._programs, "compiled", sig, lambda sig: self._compile(sig, self._lower(sig)))

    def _compile_quietly(self, sig) -> None:
        try:
            self._compiled(sig)
        except Exception:  # the caller's own call compiles again and raises where it can be seen
            pass

    def _compile(self, sig, lowered):
        specs, x64 = sig[2], sig[4]
        with jax.enable_x64(x64):  # the signature's mode, also in a compiling thread (modes are per thread)
            if isinstance(lowered, jax.export.Exported):
                return jax.jit(lowered.call, compiler_options=self.compiler_options).lower(*specs).compile()
            return lowered.compile()

    def _lower(self, sig):
        return self._once(self._lowered, "lowered", sig, self._export)

    def _export(self, sig):
        """The program for `sig`, exported (loaded from its file, or traced and lowered under a
        lock held by one thread at a time: GenJAX keeps interpreter state while it traces);
        on accelerators, plainly lowered."""
        tree, keys, specs, static, x64, backend = sig
        fun = self.fun

        def flat_fun(*flat):
            leaves = [jax.random.wrap_key_data(leaf, impl=k) if k else leaf for leaf, k in zip(flat, keys)]
            return fun(*jax.tree.unflatten(tree, leaves), **dict(static))

        jitted = jax.jit(flat_fun, compiler_options=self.compiler_options)
        if backend != "cpu":
            with _TRACE_LOCK:
                return jitted.lower(*specs)
        path = None
        try:  # the file is an optimisation: any problem naming it only means no file
            folder = program_dir()
            if folder is not None:
                text = repr((self.name, code_version(), str(tree), keys,
                             [(s.shape, str(s.dtype), s.weak_type) for s in specs], static, x64, backend,
                             sorted((self.compiler_options or {}).items())))
                path = folder / f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.jaxexport"
        except Exception:
            path = None
        exported = _load(path) if path is not None else None
        if exported is None:
            with _TRACE_LOCK:
                exported = jax.export.export(jitted)(*specs)
            if path is not None:
                _save(path, exported)
        return exported
