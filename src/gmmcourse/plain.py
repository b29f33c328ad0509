"""The same Gibbs kernel as `gmmcourse.sweep`, written in plain JAX without GenJAX.

It exists to measure what GenJAX's trace machinery costs (benchmarks) and to check that
the GenJAX sampler is exactly this algorithm (tests: same keys, same draws). The
start, the z draw and the parameter updates are shared (`gmmcourse.sweep.init_params`,
`draw_z`, `update_params`); only the two places
where `sweep` uses the model -- the (K, N) table of log p(z_i = k, x_i | params) and the
log joint density -- are written by hand here.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jax.scipy.stats import gamma, norm

from gmmcourse.sweep import draw_z, init_params, update_params

__all__ = ["plain_sweep", "plain_log_joint", "run_plain_chain"]


def plain_log_joint(x, weights, means, sds, z, prior):
    """log p(weights, means, sds, z, x) of `gmmcourse.models.gmm`, by hand."""
    k = means.shape[0]
    alpha = prior.concentration * jnp.ones(k)
    lp_w = jnp.where(k > 1, gammaln(alpha.sum()) - gammaln(alpha).sum() + jnp.sum((alpha - 1) * jnp.log(weights)), 0.0)
    lp = lp_w + jnp.sum(norm.logpdf(means, prior.mean_loc, prior.mean_scale))
    lp += jnp.sum(gamma.logpdf(sds, prior.sd_shape, scale=1 / prior.sd_rate))
    lp += jnp.sum(jnp.log(weights)[z] + norm.logpdf(x, means[z], sds[z]))
    return lp


def plain_sweep(key, state, x, prior, num_mh=2):
    """One sweep on a state (weights, means, sds, z); same random calls as `sweep.sweep`."""
    weights, means, sds, _ = state
    kz, kp = jax.random.split(key)
    table = jnp.log(weights)[:, None] + norm.logpdf(x[None, :], means[:, None], sds[:, None])
    z, probs = draw_z(kz, table)
    weights, means, sds = update_params(kp, x, z, sds, prior, num_mh)
    return (weights, means, sds, z), probs


@partial(jax.jit, static_argnames=("num_warmup", "num_samples", "num_mh"))
def run_plain_chain(key, x, prior, num_warmup, num_samples, num_mh=2):
    """Warm-up then sampling in one scan, like `sweep.run_chain` (without relabelling);
    returns the draws (weights, means, sds), log joint densities, and the mean assignment
    probabilities."""
    kinit, krun = jax.random.split(key)
    k = prior.mean_loc.shape[0]
    state = init_params(kinit, x, prior)

    def step(carry, i):
        state, prob_sum = carry
        # sweep i's key: fold_in(krun, i) = split(krun, total)[i], as in sweep.scan_sweeps
        state, probs = plain_sweep(jax.random.fold_in(krun, i), state, x, prior, num_mh)
        prob_sum = prob_sum + jnp.where(i >= num_warmup, probs, 0.0)
        return (state, prob_sum), (state[:3], plain_log_joint(x, *state, prior))

    total = num_warmup + num_samples
    zeros = jnp.zeros((k, x.shape[0]), x.dtype)
    (_, prob_sum), outs = jax.lax.scan(step, (state, zeros), jnp.arange(total))
    draws, lj = jax.tree.map(lambda a: a[num_warmup:], outs)
    return draws, lj, prob_sum / num_samples
