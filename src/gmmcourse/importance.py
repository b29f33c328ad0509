"""Importance sampling from the prior: the naive inference that fails on mixtures.

Each particle is a full guess of weights, means, sds and assignments drawn from the
prior, weighted by how well it explains the data. On 20 bentos almost every guess is
astronomically worse than the best one, so one particle takes nearly all the weight:
the effective sample size is about 1 whatever the number of particles.

GenJAX's `genjax.init` does not handle this nested model, so the particles come from
``jax.vmap`` over ``seed(gmm.generate)`` with the observations constrained.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import genjax
from genjax import const
from jax.scipy.special import logsumexp

from gmmcourse.models import GMMPrior, as_prior, gmm, gmm_params, observations
from gmmcourse.programs import exported_jit
from gmmcourse.validation import check_data, check_positive_int

__all__ = ["ISResult", "importance_sampling", "effective_sample_size"]


class ISResult(NamedTuple):
    """Result of `importance_sampling`.

    Attributes:
        log_weights: log importance weight of every particle, shape (P,).
        ess: effective sample size (sum w)^2 / sum w^2, between 1 and P.
        log_marginal: estimate of log p(x), logmeanexp of the weights.
        max_weight: the largest normalised weight (close to 1 when IS fails).
        weights, means, sds: every particle's parameters, (P, K).
    """

    log_weights: np.ndarray
    ess: float
    log_marginal: float
    max_weight: float
    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray


def effective_sample_size(log_weights) -> float:
    """Kish's effective sample size of importance weights given in log space."""
    lw = jnp.asarray(log_weights)
    return float(jnp.exp(2 * logsumexp(lw) - logsumexp(2 * lw)))


def importance_sampling(x, prior: GMMPrior, *, num_particles: int = 10_000, seed: int = 0) -> ISResult:
    """Likelihood-weighted importance sampling for `gmm`, proposing from the prior.

    Args:
        x: observations, shape (N,).
        prior: the `GMMPrior` (K = prior.k).
        num_particles: number of particles P.
        seed: integer seed.

    Returns:
        An `ISResult`.
    """
    x = check_data(x)
    num_particles = check_positive_int(num_particles, "num_particles")
    if not isinstance(prior, GMMPrior):
        raise ValueError(f"prior must be a gmmcourse.models.GMMPrior, got {type(prior).__name__}")
    xs = jnp.asarray(x, jnp.float32)
    p = as_prior(prior, jnp.float32)
    keys = jax.random.split(jax.random.key(seed), num_particles)
    log_w, w, m, s = (np.asarray(a) for a in draw_particles(keys, xs, p))
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    lse = logsumexp(jnp.asarray(log_w))
    return ISResult(
        log_weights=log_w,
        ess=effective_sample_size(log_w),
        log_marginal=float(lse - np.log(num_particles)),
        max_weight=float(np.exp(np.max(log_w) - lse)),
        weights=w,
        means=m,
        sds=s,
    )


def _one(key, x, prior):
    trace, log_w = genjax.seed(gmm.generate)(key, observations(x), const(int(x.shape[0])), prior)
    return (log_w, *gmm_params(trace.get_choices()))


def _particles_fn(keys, x, prior):
    return jax.vmap(_one, in_axes=(0, None, None))(keys, x, prior)


draw_particles = exported_jit(_particles_fn, name=f"{__name__}.draw_particles")
"""Every particle's log weight and parameters: compiled once per (particles, N, K), not once
per call, and kept between processes (`gmmcourse.programs`). No data bucket: the model's
trace has one address per point."""
