"""One sweep of each DP mixture sampler, and the compiled chains that run them.

* `student_t`: Student's t as a GenJAX distribution; a point's predictive density given a
  cluster's other points is one (`_predictive_logpdf`, by GenJAX's `assess`);
* `_collapsed_sweep`: Neal's (2000) algorithm 3, each label drawn given the others with the
  clusters integrated out (the DP's restaurant, or the MFM's through ``rule``);
* `_blocked_sweep`: Ishwaran and James's (2001) truncated stick-breaking sampler (cluster
  parameters and sticks given the labels, then every label);
* `run_chain`, `run_chains`: warm-up and kept sweeps of one chain, and of every chain
  (`vmap`), compiled once per data bucket through `gmmcourse.shapes.bucket_jit` (the
  package's one compile path: programs kept between processes, `gmmcourse.programs`).

The data arrive centred and padded to a bucket (`gmmcourse.dpmm_samplers`); ``n``, the number of
real points, is traced, so one program serves every n in a bucket.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from genjax.core import distribution, wrap_logpdf, wrap_sampler

from gmmcourse.dpmm_prior import DPPrior, nig_posterior
from gmmcourse.shapes import XLA_DEFAULT_OPTIONS, bucket_jit

__all__ = ["student_t", "run_chain", "run_chains"]


def _t_sample(key, df, loc, scale, sample_shape=()):
    shape = tuple(sample_shape) + jnp.broadcast_shapes(jnp.shape(df), jnp.shape(loc), jnp.shape(scale))
    return loc + scale * jax.random.t(key, df, shape)


student_t = distribution(wrap_sampler(_t_sample, name="student_t"), wrap_logpdf(jax.scipy.stats.t.logpdf),
                         name="student_t")
"""Student's t(df, loc, scale) as a GenJAX distribution with JAX's density (`jax.scipy.stats.t`).
GenJAX's own `genjax.student_t` wraps TFP's StudentT, whose careful log-beta normaliser
compiles to about 1.8 times the operations; the density is two thirds of a collapsed sweep's
time, so with it the sweep took about 1.3-1.5 times its plain-JAX twin's (benchmarks/bench_dpmm.py)."""


def _predictive_logpdf(xi, count, total, total_sq, prior: DPPrior):
    """log p(x_i | a cluster's other points): Student-t (2 a_n dof), by GenJAX's `assess` of `student_t`."""
    kn, mn, an, bn = nig_posterior(count, total, total_sq, prior)
    scale = jnp.sqrt(bn * (kn + 1.0) / (an * kn))
    logp, _ = student_t.assess(xi, 2.0 * an, mn, scale)
    return logp


def _collapsed_sweep(key, z, x, n, prior: DPPrior, rule, num_slots):
    """One sweep of Neal's algorithm 3 over the first ``n`` points of ``x`` (the rest is
    padding: ``n`` is traced, so one program serves every n in a `bucket_size`), labels in ``num_slots`` slots (a new
    cluster takes the first empty slot; with fewer slots than points, a step that finds none
    empty sets the returned flag and the caller refuses the draws). ``rule = (offset, log_new)``: an occupied cluster of size m
    weighs ``m + offset``, a new one ``exp(log_new[t])`` with t clusters among the other points
    (the DP: offset 0 and log alpha; the MFM: gamma and log gamma + log V_n(t+1) - log V_n(t)).
    Returns the new labels and whether a step found every slot taken."""
    offset, log_new = rule
    slots = jnp.arange(num_slots)
    real = jnp.arange(x.shape[0]) < n
    onehot = ((z[:, None] == slots[None, :]) & real[:, None]).astype(x.dtype)
    stats = (onehot.sum(0), onehot.T @ x, onehot.T @ (x * x))
    keys = jax.random.split(key, x.shape[0])  # threefry: the first n are those of split(key, n)

    def step(i, carry):
        z, (cnt, s1, s2), full = carry
        k = keys[i]
        xi, zi = x[i], z[i]
        cnt, s1, s2 = cnt.at[zi].add(-1.0), s1.at[zi].add(-xi), s2.at[zi].add(-xi * xi)
        occupied = cnt > 0
        full = full | jnp.all(occupied)
        first_empty = jnp.argmin(occupied)  # one is always empty with n slots (n - 1 other points)
        pred = jax.vmap(lambda c, a, b: _predictive_logpdf(xi, c, a, b, prior))(cnt, s1, s2)
        logits = jnp.where(occupied, jnp.log(jnp.where(occupied, cnt, 1.0) + offset) + pred,
                           jnp.where(slots == first_empty, log_new[jnp.sum(occupied)] + pred, -jnp.inf))
        new = jax.random.categorical(k, logits).astype(z.dtype)
        cnt, s1, s2 = cnt.at[new].add(1.0), s1.at[new].add(xi), s2.at[new].add(xi * xi)
        return z.at[i].set(new), (cnt, s1, s2), full

    z, _, full = jax.lax.fori_loop(0, n, step, (z, stats, jnp.zeros((), bool)))
    return z, full


def _blocked_sweep(key, z, x, n, prior: DPPrior, k_max: int):
    """One sweep of the truncated blocked Gibbs sampler over the first ``n`` points of ``x``
    (the rest is padding, left out of the clusters: ``n`` is traced, so one program serves
    every n in a `bucket_size`): cluster parameters and sticks given the labels, then every
    label given them (the padding's labels are drawn too, and discarded)."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    real = jnp.arange(x.shape[0]) < n
    onehot = ((z[:, None] == jnp.arange(k_max)[None, :]) & real[:, None]).astype(x.dtype)
    cnt, s1, s2 = onehot.sum(0), onehot.T @ x, onehot.T @ (x * x)
    kn, mn, an, bn = nig_posterior(cnt, s1, s2, prior)
    var = bn / jax.random.gamma(k1, an)
    mu = mn + jnp.sqrt(var / kn) * jax.random.normal(k2, (k_max,), x.dtype)
    after = jnp.cumsum(cnt[::-1])[::-1] - cnt  # points in later sticks
    ga = jax.random.gamma(k3, 1.0 + cnt)
    gb = jax.random.gamma(k4, prior.alpha + after)
    v = (ga / (ga + gb)).at[-1].set(1.0)
    logw = jnp.log(v) + jnp.concatenate([jnp.zeros(1, x.dtype), jnp.cumsum(jnp.log1p(-v[:-1]))])
    table = logw[None, :] - 0.5 * jnp.log(2 * jnp.pi * var)[None, :] - 0.5 * (x[:, None] - mu[None, :]) ** 2 / var[None, :]
    return jax.random.categorical(k5, table, axis=-1)


def _chain(key, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples):
    """`run_chain`'s body, traced inside the compiled programs (no program of its own)."""
    def body(carry, k):
        z, full = carry
        if k_max == 0:
            z, f = _collapsed_sweep(k, z, x, n, prior, rule, num_slots)
            full = full | f
        else:
            z = _blocked_sweep(k, z, x, n, prior, k_max)
        z = z.astype(jnp.int32)
        return (z, full), z

    kw, ks = jax.random.split(key)
    carry, _ = jax.lax.scan(body, (z0, jnp.zeros((), bool)), jax.random.split(kw, num_warmup))
    (_, full), draws = jax.lax.scan(body, carry, jax.random.split(ks, num_samples))
    return draws, full


STATIC = ("k_max", "num_slots", "num_warmup", "num_samples")
"""`run_chain`'s and `run_chains`' static arguments (a new value compiles a new program)."""


@bucket_jit(data_arg=2, static_argnames=STATIC, small_options=XLA_DEFAULT_OPTIONS)
def run_chain(key, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples):
    """One chain on centred data ``x`` padded to a bucket, ``n`` (traced) real points:
    `num_samples` sweeps after `num_warmup`, the collapsed sampler when ``k_max == 0``, else
    the blocked one on ``k_max`` sticks (labels in ``num_slots`` slots; ``rule``: see
    `_collapsed_sweep`). Returns the draws (num_samples, N) and whether the collapsed sampler
    ever found all its slots taken."""
    return _chain(key, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples)


@bucket_jit(data_arg=2, static_argnames=STATIC, small_options=XLA_DEFAULT_OPTIONS)
def run_chains(keys, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples):
    """`run_chain` for every chain (`vmap` over ``keys`` and ``z0``): one compiled program per
    data bucket and static settings, not per call."""
    return jax.vmap(lambda k, z: _chain(k, z, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples))(keys, z0)
