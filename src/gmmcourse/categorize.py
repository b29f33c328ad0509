"""Exact categorisation with known parameters: P(z_i = k | x_i) by Bayes' rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from gmmcourse.precision import x64_context
from gmmcourse.validation import check_data, check_params

__all__ = ["categorize", "log_joint_by_component", "log_predictive"]


@jax.jit
def log_joint_by_component(x, weights, means, sds):
    """log [w_k N(x_i; mu_k, sd_k)], shape (K, N) (components along the leading axis)."""
    return jnp.log(weights)[:, None] + norm.logpdf(x[None, :], means[:, None], sds[:, None])


def categorize(x, weights, means, sds) -> np.ndarray:
    """Posterior probability of each component for each point, with known parameters.

    Computed in log space (log-sum-exp), so it stays exact for points far from every
    component, such as a 425 g bento between 350 g and 500 g components with sd 2 g.

    Args:
        x: observations, shape (N,).
        weights, means, sds: mixture parameters, shape (K,).

    Returns:
        ``probs`` of shape (N, K), a numpy array in x's precision (float64 unless x is float32): ``probs[i, k] = P(z_i = k | x_i)``; rows sum to 1.
    """
    x = check_data(x)
    w, m, s = check_params(weights, means, sds)
    with x64_context(x.dtype):
        lj = log_joint_by_component(*(jnp.asarray(a, x.dtype) for a in (x, w, m, s)))
        return np.asarray(jnp.exp(lj - logsumexp(lj, axis=0, keepdims=True)).T)


def log_predictive(x, weights, means, sds) -> np.ndarray:
    """log p(x_i) under the mixture, shape (N,): how surprising each point is."""
    x = check_data(x)
    w, m, s = check_params(weights, means, sds)
    with x64_context(x.dtype):
        return np.asarray(logsumexp(log_joint_by_component(*(jnp.asarray(a, x.dtype) for a in (x, w, m, s))), axis=0))
