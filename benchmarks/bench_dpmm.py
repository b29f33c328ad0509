"""The DP mixture's collapsed Gibbs sampler (`gmmcourse.dpmm`, Neal's algorithm 3) on Old
Faithful (272 points, 64 cluster slots, 4 chains):

* sweeps per second of the GenJAX sampler (its predictive density is `assess` of the GenJAX
  distribution `dpmm.student_t`) against a plain-JAX twin of the same sweep written here by
  hand (the density by `jax.scipy.stats.t` directly), alternated `ROUNDS` times in one process
  (median and spread of the per-round ratio; goal: median GenJAX / plain <= 1.25). The twin is
  checked to draw the same labels from the same keys, so the two are the same algorithm.
  Where the time went before: the same GenJAX sweep with GenJAX's TFP-backed
  `genjax.student_t` (its careful log-beta normaliser is about 1.8 times the operations, and
  the density is most of a sweep) is timed alongside as ``genjax_tfp_student_t``;
* the same sweep as a plain NumPy loop over the points (one chain);
* the time to R-hat < 1.01 on the number of occupied clusters: the package's compiled
  sampler from its 4 over-dispersed starts, 200 warm-up sweeps, then chunks of 50 sweeps
  until the split R-hat (ArviZ) of the kept draws is below 1.01; wall time from the first
  sweep, compilation excluded (reported beside it).

    python benchmarks/bench_dpmm.py          # writes benchmarks/results/dpmm.json
"""

from __future__ import annotations

import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

from common import alternate, write
from gmmcourse import dpmm, dpmm_sweeps
from gmmcourse.data import FAITHFUL_ERUPTIONS
from gmmcourse.dpmm import DPPrior, nig_posterior
from gmmcourse.precision import x64_context
from gmmcourse.shapes import bucket_size

CHAINS, SWEEPS, SLOTS = 4, 20, 64
ROUNDS = 41
WARMUP, CHUNK = 200, 50
NUMPY_SWEEPS = 20


# --------------------------------------------------------------------------- the plain-JAX twin


def plain_sweep(key, z, x, n, prior: DPPrior, log_alpha, num_slots):
    """One sweep of Neal's algorithm 3 over the first n points, by hand: the sweep of
    `gmmcourse.dpmm` (DP rule) with the Student-t predictive from `jax.scipy.stats.t`."""
    slots = jnp.arange(num_slots)
    real = jnp.arange(x.shape[0]) < n
    onehot = ((z[:, None] == slots[None, :]) & real[:, None]).astype(x.dtype)
    stats = (onehot.sum(0), onehot.T @ x, onehot.T @ (x * x))
    keys = jax.random.split(key, x.shape[0])

    def step(i, carry):
        z, (cnt, s1, s2) = carry
        xi, zi = x[i], z[i]
        cnt, s1, s2 = cnt.at[zi].add(-1.0), s1.at[zi].add(-xi), s2.at[zi].add(-xi * xi)
        occupied = cnt > 0
        kn, mn, an, bn = nig_posterior(cnt, s1, s2, prior)
        pred = jax.scipy.stats.t.logpdf(xi, 2.0 * an, mn, jnp.sqrt(bn * (kn + 1.0) / (an * kn)))
        logits = jnp.where(occupied, jnp.log(jnp.where(occupied, cnt, 1.0)) + pred,
                           jnp.where(slots == jnp.argmin(occupied), log_alpha + pred, -jnp.inf))
        new = jax.random.categorical(keys[i], logits).astype(z.dtype)
        cnt, s1, s2 = cnt.at[new].add(1.0), s1.at[new].add(xi), s2.at[new].add(xi * xi)
        return z.at[i].set(new), (cnt, s1, s2)

    z, _ = jax.lax.fori_loop(0, n, step, (z, stats))
    return z


@partial(jax.jit, static_argnames=("num_slots", "num_samples"))
def plain_chains(keys, z0, x, n, prior, log_alpha, num_slots, num_samples):
    """`num_samples` sweeps of every chain (no warm-up), vmapped like `dpmm.run_chains`."""
    def chain(key, z):
        def body(z, k):
            z = plain_sweep(k, z, x, n, prior, log_alpha, num_slots).astype(jnp.int32)
            return z, z

        _, ks = jax.random.split(key)  # the key `dpmm.run_chain` gives its kept sweeps
        return jax.lax.scan(body, z, jax.random.split(ks, num_samples))[1]

    return jax.vmap(chain)(keys, z0)


# --------------------------------------------------------------------------- the NumPy loop


def numpy_sweep(rng, z, x, prior: DPPrior, num_slots):
    """The same sweep as a Python loop over the points, NumPy over the slots (one chain)."""
    slots = np.arange(num_slots)
    onehot = (z[:, None] == slots[None, :]).astype(float)
    cnt, s1, s2 = onehot.sum(0), onehot.T @ x, onehot.T @ (x * x)
    log_alpha = np.log(prior.alpha)
    for i, xi in enumerate(x):
        zi = z[i]
        cnt[zi] -= 1.0
        s1[zi] -= xi
        s2[zi] -= xi * xi
        occupied = cnt > 0
        kn, mn, an, bn = nig_posterior(cnt, s1, s2, prior)
        nu, scale = 2.0 * an, np.sqrt(bn * (kn + 1.0) / (an * kn))
        u = (xi - mn) / scale
        pred = (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(scale)
                - (nu + 1) / 2 * np.log1p(u * u / nu))
        logits = np.where(occupied, np.log(np.where(occupied, cnt, 1.0)) + pred, -np.inf)
        empty = np.argmin(occupied)
        logits[empty] = log_alpha + pred[empty]
        new = int(np.argmax(logits + rng.gumbel(size=num_slots)))
        z[i] = new
        cnt[new] += 1.0
        s1[new] += xi
        s2[new] += xi * xi
    return z


# --------------------------------------------------------------------------- the benchmark


def inputs(x, prior: DPPrior):
    """What `collapsed_gibbs` hands its compiled program: centred data padded to a bucket,
    the shifted prior as float64 arrays, the data cut into 1, 3, 6, 10 groups per chain."""
    n, size = x.size, bucket_size(x.size)
    shift = float(np.mean(x))
    pr = DPPrior(*(jnp.asarray(v, jnp.float64) for v in prior._replace(mean_loc=prior.mean_loc - shift)))
    xs = jnp.asarray(np.pad(x - shift, (0, size - n)), jnp.float64)
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    z0 = np.zeros((CHAINS, size), np.int32)
    for c in range(CHAINS):
        z0[c, :n] = ranks * (1, 3, 6, 10)[c % 4] // n
    keys = jax.random.split(jax.random.key(0), CHAINS)
    return keys, jnp.asarray(z0), xs, jnp.int32(n), pr


def num_clusters(labels: np.ndarray) -> np.ndarray:
    """Occupied clusters of each draw (distinct labels), (chains, draws)."""
    return (np.diff(np.sort(labels, axis=-1), axis=-1) != 0).sum(axis=-1) + 1


def time_to_rhat(keys, z0, xs, n, pr, rule, target: float = 1.01, most_chunks: int = 200) -> dict:
    """Sweeps of the package's compiled sampler in chunks until R-hat of the number of
    clusters over the kept draws is below `target` (warm-up: the first WARMUP sweeps)."""
    from arviz_stats.base import array_stats

    def chunk(c, z):
        ks = jax.random.split(jax.random.key(1000 + c), CHAINS)
        draws, _ = dpmm.run_chains(ks, z, xs, n, pr, rule, 0, SLOTS, 0, CHUNK)
        return jax.block_until_ready(draws)

    t = time.perf_counter()
    chunk(0, z0)  # compile (or load from the persistent cache)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    z, kept = z0, []
    for c in range(most_chunks):
        draws = chunk(c, z)
        z = draws[:, -1]
        if (c + 1) * CHUNK <= WARMUP:
            continue
        kept.append(num_clusters(np.asarray(draws)[..., : int(n)]))
        k = np.concatenate(kept, axis=1).astype(float)
        r_hat = float(array_stats.rhat(k, chain_axis=0, draw_axis=1))
        if r_hat < target:
            break
    return {"seconds": time.perf_counter() - t, "compile_s": compile_s, "kept_sweeps_per_chain": k.shape[1],
            "warmup_sweeps": WARMUP, "chains": CHAINS, "r_hat": r_hat, "reached": bool(r_hat < target),
            "ess_bulk": float(array_stats.ess(k, chain_axis=0, draw_axis=1, method="bulk")),
            "mean_clusters": float(k.mean())}


def tfp_variant(keys, z0, xs, n, pr, rule):
    """The package's sweep compiled with GenJAX's TFP-backed `genjax.student_t` in place of
    `dpmm.student_t` (traced once with it; the package is restored at once)."""
    import genjax

    run = dpmm.run_chain.__wrapped__  # the undecorated function: traced afresh, with the swap
    fn = jax.jit(lambda: jax.vmap(lambda k, z: run(k, z, xs, n, pr, rule, 0, SLOTS, 0, SWEEPS)[0])(keys, z0))
    package_t, dpmm_sweeps.student_t = dpmm_sweeps.student_t, genjax.student_t  # where the sweep looks it up
    try:
        jax.block_until_ready(fn())
    finally:
        dpmm_sweeps.student_t = package_t
    return fn


def main(rounds: int = ROUNDS) -> dict:
    x = np.asarray(FAITHFUL_ERUPTIONS, np.float64)
    prior = DPPrior.for_data(x)
    with x64_context(np.float64):
        keys, z0, xs, n, pr = inputs(x, prior)
        rule = (jnp.float64(0.0), jnp.full(xs.shape[0] + 1, jnp.log(pr.alpha)))
        gen_fn = lambda: dpmm.run_chains(keys, z0, xs, n, pr, rule, 0, SLOTS, 0, SWEEPS)[0]  # noqa: E731
        plain_fn = lambda: plain_chains(keys, z0, xs, n, pr, jnp.log(pr.alpha), SLOTS, SWEEPS)  # noqa: E731
        a, b = np.asarray(jax.block_until_ready(gen_fn())), np.asarray(jax.block_until_ready(plain_fn()))
        same = float(np.mean(a[..., : x.size] == b[..., : x.size]))
        tfp_fn = tfp_variant(keys, z0, xs, n, pr, rule)
        kernels = alternate({"plain": lambda: jax.block_until_ready(plain_fn()),
                             "genjax": lambda: jax.block_until_ready(gen_fn()),
                             "genjax_tfp_student_t": lambda: jax.block_until_ready(tfp_fn())}, rounds=rounds)

    rng = np.random.default_rng(0)
    z = np.asarray(z0[1, : x.size]).copy()
    xc = x - x.mean()
    prc = prior._replace(mean_loc=prior.mean_loc - x.mean())
    numpy_sweep(rng, z, xc, prc, SLOTS)  # first sweep: warm caches
    t = time.perf_counter()
    for _ in range(NUMPY_SWEEPS):
        numpy_sweep(rng, z, xc, prc, SLOTS)
    numpy_s = (time.perf_counter() - t) / NUMPY_SWEEPS

    per_sweep = {name: kernels[name]["median_s"] / (CHAINS * SWEEPS) for name in ("genjax", "plain")}
    with x64_context(np.float64):
        rhat = time_to_rhat(keys, z0, xs, n, pr, rule)
    result = {
        "data": f"Old Faithful (n={x.size}, {SLOTS} cluster slots, DPPrior.for_data, alpha=1)",
        "chains": CHAINS, "sweeps_per_call": SWEEPS,
        "alternated": kernels,
        "same_draws_fraction": same,
        "sweeps_per_s": {"genjax": 1.0 / per_sweep["genjax"], "plain_jax": 1.0 / per_sweep["plain"],
                         "numpy_loop": 1.0 / numpy_s},
        "genjax_over_plain": kernels["genjax_over_plain"]["median"],
        "genjax_tfp_student_t_over_plain": kernels["genjax_tfp_student_t_over_plain"]["median"],
        "genjax_speedup_vs_numpy": numpy_s / per_sweep["genjax"],
        "time_to_rhat": rhat,
        "goal": "median genjax_over_plain <= 1.25",
    }
    write("dpmm", result)
    return result


if __name__ == "__main__":
    print(main(*(int(a) for a in sys.argv[1:])))
