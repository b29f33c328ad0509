"""Running many Gibbs chains fast: padded data, chain groups, sweep chunks, programs built early.

`gmmcourse.sweep.run_chain` is one chain on the caller's data in one scan; compiling it
takes seconds for every new data size, chain count and draw count. `sample` runs the same
chains, draw for draw, through programs compiled once per (data bucket, K, dtype, num_mh)
(`gmmcourse.shapes`):

* the data arrive padded to their bucket with a mask of the real points (`shapes.pad`,
  done once by `gmmcourse.gibbs.posterior`); padded points are drawn too but left out of
  every update and score;
* chains run in groups of `shapes.chain_group` chains (`start_chains` starts a group,
  chain c from key fold_in(root, c)), the groups side by side in the package's thread pool
  (`gmmcourse.programs.parallel_map`; x64 mode is per thread, so each group sets it);
* sweeps run in chunks of `shapes.SWEEP_CHUNK` (`run_chunk`), each resumed from the state
  the last one returned; sweep t of a chain uses the key fold_in(krun, t), so chunks draw
  what one long scan draws (`gmmcourse.sweep.scan_sweeps`).

A chain's state crosses between chunks as plain arrays (the trace's leaves), so that both
programs can be exported and loaded by later processes (`gmmcourse.programs.exported_jit`);
the trace's tree structure is recorded in this process when `start_chains` traces
(`_trace_tree`). `prepare` traces and lowers both programs and starts compiling them before
they are needed: `posterior` runs it while EM fits the pivot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.precision import x64_context
from gmmcourse.programs import parallel_map
from gmmcourse.shapes import RUN_ONCE_COMPILER_OPTIONS, SWEEP_CHUNK, bucket_jit, chain_group
from gmmcourse.sweep import init_trace, permutations, scan_sweeps, start_chain

__all__ = ["start_chains", "run_chunk", "prepare", "sample"]

_TRACE_TREES: dict = {}
"""Tree structures of `gmm` traces, recorded by `start_chains` as it traces (`_trace_tree`)."""


def _tree_key(x, prior, mask):
    return x.shape, str(x.dtype), jax.tree.structure(prior), tuple(jnp.shape(a) for a in prior), mask is None


def _trace_tree(x, prior, mask):
    """The tree structure of a `gmm` trace on data shaped like `x`: the one `start_chains`
    recorded in this process, else found by tracing (not running) `init_trace`."""
    key = _tree_key(x, prior, mask)
    if key not in _TRACE_TREES:
        spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
        _TRACE_TREES[key] = jax.tree.structure(jax.eval_shape(
            lambda xs, p, m: init_trace(jax.random.key(0), xs, p, m, jnp.int32(1)), spec, prior, mask))
    return _TRACE_TREES[key]


@bucket_jit(data_arg=2, small_options=RUN_ONCE_COMPILER_OPTIONS)
def start_chains(root, chain_ids, x, mask, n, prior, pivot_means, pivot_sds, perms):
    """Starting states of chains `chain_ids` (key fold_in(root, c) = split(root, C)[c]) on
    padded data `x` with `n` real points marked by `mask`.

    A state is plain arrays, so that the program can be exported (`gmmcourse.programs`):
    (the trace's leaves, permutation, running sum of assignment probabilities, key data)."""

    def one(c):
        (trace, perm, prob_sum), krun = start_chain(jax.random.fold_in(root, c), x, prior, pivot_means, pivot_sds,
                                                    perms, mask, n)
        _TRACE_TREES[_tree_key(x, prior, mask)] = jax.tree.structure(trace)
        return jax.tree.leaves(trace), perm, prob_sum, jax.random.key_data(krun)

    return jax.vmap(one)(chain_ids)


@bucket_jit(data_arg=2, static_argnames=("num_mh", "length", "rounding_var"))
def run_chunk(state, start, x, mask, prior, pivot_means, pivot_sds, perms, num_warmup, total, num_mh, length,
              rounding_var=0.0):
    """`length` sweeps (numbers start, start+1, ...) of every chain of a group, resumed
    from `state` (see `start_chains`); one program per (data bucket, K, chains per group,
    dtype, num_mh). Returns the new state and the sweeps' draws (`scan_sweeps`)."""
    tree = _trace_tree(x, prior, mask)
    ts = start + jnp.arange(length, dtype=start.dtype)

    def one(leaves, perm, prob_sum, key_data):
        carry = (jax.tree.unflatten(tree, leaves), perm, prob_sum)
        (trace, perm, prob_sum), outs = scan_sweeps(carry, ts, jax.random.wrap_key_data(key_data), x, prior,
                                                    pivot_means, pivot_sds, perms, num_warmup, num_mh, mask, total,
                                                    rounding_var)
        return (jax.tree.leaves(trace), perm, prob_sum, key_data), outs

    return jax.vmap(one)(*state)


def _rounding_kw(rounding_var) -> dict:
    """The keyword for `run_chunk`: none for the plain model (its programs keep their
    names), else the static rounding variance."""
    return {"rounding_var": rounding_var} if rounding_var else {}


def prepare(xp, mask, n, k, prior, num_chains, num_mh, seed, dtype, rounding_var=0.0):
    """Trace and lower (or load) the programs `sample` will run for these shapes and start
    compiling them in the package's pool (`exported_jit.prepare`). `posterior` runs it in
    the pool while EM fits the pivot: XLA compiles the chains' start and sweep chunk on one
    core while EM's program compiles and runs on the other (a first call about 15 % faster).

    Args:
        xp, mask: the padded data and its mask of real points (`gmmcourse.shapes.pad`).
        n: the number of real points.
        Others: as `sample`'s.
    """
    group = chain_group(n, num_chains)  # the group size `sample` runs
    with x64_context(dtype):
        pivot = jax.ShapeDtypeStruct((k,), np.dtype(dtype))
        perms = jnp.asarray(permutations(k))
        state = start_chains.prepare(jax.random.key(seed), np.zeros(group, np.int32), xp, mask, np.int32(n), prior,
                                     pivot, pivot, perms)
        run_chunk.prepare(state, np.int32(0), xp, mask, prior, pivot, pivot, perms, np.int32(0), np.int32(0),
                          num_mh, SWEEP_CHUNK, **_rounding_kw(rounding_var))


def sample(xp, mask, n, prior, pivot_means, pivot_sds, perms, num_chains, num_warmup, num_samples, num_mh, seed,
           dtype, rounding_var=0.0):
    """Run `num_chains` chains on padded data in groups and chunks, the groups side by side
    in the package's pool.

    Args:
        xp, mask: the padded data and its mask of real points (`gmmcourse.shapes.pad`).
        n: the number of real points.
        prior: the `GMMPrior` in `dtype` (`gmmcourse.models.as_prior`).
        pivot_means, pivot_sds, perms: the relabelling pivot and the K! permutations.
        num_chains, num_warmup, num_samples, num_mh, seed: as `gmmcourse.gibbs.posterior`'s.
        dtype: float32 or float64.
        rounding_var: variance added to every sd**2 in the likelihood.

    Returns:
        (draws, probs): the draws of `scan_sweeps` for the kept sweeps, numpy arrays
        (chains, samples, ...), and every chain's mean assignment probabilities
        (chains, K, n) (real points only).
    """
    xp, mask = jnp.asarray(xp), jnp.asarray(mask)
    group = chain_group(n, num_chains)
    total = num_warmup + num_samples
    root = jax.random.key(seed)

    def run_group(first):
        with x64_context(dtype):  # x64 mode is per thread
            ids = np.arange(first, first + group, dtype=np.int32)
            state = start_chains(root, ids, xp, mask, np.int32(n), prior, pivot_means, pivot_sds, perms)
            chunks = []
            for start in range(0, total, SWEEP_CHUNK):
                state, outs = run_chunk(state, np.int32(start), xp, mask, prior, pivot_means, pivot_sds, perms,
                                        np.int32(num_warmup), np.int32(total), num_mh, SWEEP_CHUNK,
                                        **_rounding_kw(rounding_var))
                if start + SWEEP_CHUNK > num_warmup:  # warm-up-only chunks: nothing to keep
                    chunks.append((start, outs))
            leaves = [np.concatenate([np.asarray(leaf) for leaf in col], axis=1)
                      for col in zip(*(jax.tree.leaves(o) for _, o in chunks))]
            lo = num_warmup - chunks[0][0]
            return [a[:, lo:lo + num_samples] for a in leaves], np.asarray(state[2])[:, :, :n], chunks[0][1]

    results = parallel_map(run_group, range(0, num_chains, group))
    draws, prob_sums, example = zip(*results)
    treedef = jax.tree.structure(example[0])
    outs = jax.tree.unflatten(treedef, [np.concatenate(col)[:num_chains] for col in zip(*draws)])
    probs = np.concatenate(prob_sums)[:num_chains] / np.asarray(num_samples, dtype)
    return outs, probs
