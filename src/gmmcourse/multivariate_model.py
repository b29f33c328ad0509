"""The Bayesian multivariate Gaussian mixture, written as GenJAX generative functions, with its
conjugate Normal-Inverse-Wishart (NIW) prior and the exact conditional draws the Gibbs sampler
(`gmmcourse.multivariate_gibbs`) makes.

The model, for K components in D dimensions:

    weights ~ Dirichlet(alpha 1_K)
    cov_k ~ InverseWishart(dof, scale),  mean_k | cov_k ~ Normal(mean_loc, cov_k / kappa)
    z_i ~ Categorical(weights),  x_i | z_i ~ Normal(mean_{z_i}, cov_{z_i})

Addresses of `mvn_gmm(n, k, prior)`: ``"weights"`` (K,) (absent when K = 1), ``"components"``
holding ``{"cov": (K, D, D), "mean": (K, D)}``, ``"points"`` holding ``{"z": (N,), "x": (N, D)}``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from genjax import Const, categorical, dirichlet, gen, multivariate_normal
from genjax.core import distribution
from genjax.pjax import wrap_logpdf, wrap_sampler
from jax.scipy.special import multigammaln

from gmmcourse.gamma import gamma
from gmmcourse.models import mixture_choices

__all__ = [
    "NIWPrior",
    "default_prior",
    "check_prior",
    "inverse_wishart",
    "mvn_point",
    "niw_component",
    "mvn_gmm",
    "mvn_choices",
    "niw_posterior",
    "draw_niw",
    "as_prior",
]


class NIWPrior(NamedTuple):
    """Hyper-parameters of the Bayesian multivariate mixture (a JAX pytree).

    cov_k ~ InverseWishart(dof, scale) (mean scale / (dof - D - 1) when dof > D + 1);
    mean_k | cov_k ~ Normal(mean_loc, cov_k / kappa); weights ~ Dirichlet(alpha 1_K).

    Attributes:
        mean_loc: (D,). kappa: > 0, prior points' worth of information on the means.
        dof: > D - 1, degrees of freedom of the Inverse-Wishart. scale: (D, D) positive definite.
        alpha: > 0, the symmetric Dirichlet's concentration.
    """

    mean_loc: np.ndarray
    kappa: float
    dof: float
    scale: np.ndarray
    alpha: float = 1.0

    @property
    def d(self) -> int:
        return int(np.shape(self.mean_loc)[0])


def default_prior(x, k: int) -> NIWPrior:
    """A weakly informative prior scaled to the data: Fraley & Raftery's (2007, "Bayesian
    regularization for normal mixture estimation and model-based clustering", J. Classif. 24)
    conjugate prior. mean_loc = the data's mean; kappa = 0.01 (the means' prior is 100 times
    wider than a component); dof = D + 2 (the smallest integer with a finite prior mean of the
    covariance); scale = cov(x) / K^(2/D), so a component's prior mean covariance has 1/K of
    the data's volume; alpha = 1 (uniform over the weights).

    Args:
        x: (N, D) data. k: number of components.
    """
    from gmmcourse.multivariate_em import check_points

    x = check_points(x).astype(np.float64)
    n, d = x.shape
    cov = np.cov(x.T, bias=True).reshape(d, d) if n > 1 else np.eye(d)
    floor = 1e-6 * max(float(np.trace(cov)) / d, 1.0)
    cov = cov + floor * np.eye(d)  # data on a line or a point still give a proper prior
    return NIWPrior(mean_loc=x.mean(axis=0), kappa=0.01, dof=d + 2.0, scale=cov / k ** (2.0 / d), alpha=1.0)


def check_prior(prior, d: int) -> NIWPrior:
    """`prior` as an `NIWPrior` of float64 numpy fields, or a one-line `ValueError`."""
    if not isinstance(prior, NIWPrior):
        raise ValueError(f"prior must be a gmmcourse.multivariate.NIWPrior, got {type(prior).__name__}")
    loc, scale = np.asarray(prior.mean_loc, np.float64), np.asarray(prior.scale, np.float64)
    if loc.shape != (d,) or scale.shape != (d, d):
        raise ValueError(f"prior.mean_loc must have shape ({d},) and prior.scale ({d}, {d}) for {d}-dimensional "
                         f"data, got {loc.shape} and {scale.shape}")
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(scale)) and np.allclose(scale, scale.T)
            and np.linalg.eigvalsh(scale)[0] > 0):
        raise ValueError("prior.mean_loc must be finite and prior.scale symmetric positive definite")
    kappa, dof, alpha = (float(np.asarray(v)) for v in (prior.kappa, prior.dof, prior.alpha))
    if not (np.isfinite(kappa) and kappa > 0 and np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"prior.kappa and prior.alpha must be positive, got {kappa} and {alpha}")
    if not (np.isfinite(dof) and dof > d - 1):
        raise ValueError(f"prior.dof must exceed D - 1 = {d - 1}, got {dof}")
    return NIWPrior(loc, kappa, dof, scale, alpha)


def as_prior(prior: NIWPrior, dtype) -> NIWPrior:
    """`prior` with JAX array fields of `dtype`."""
    return NIWPrior(*(jnp.asarray(v, dtype) for v in prior))


def draw_niw(key, kappa, m, dof, psi):
    """Draws (means (K, D), covs (K, D, D)) from NIW(m, kappa, dof, psi), batched over K.

    Bartlett's decomposition: with A lower-triangular, A_jj^2 ~ chi-square(dof - j)
    (j = 0..D-1) and N(0, 1) below the diagonal, A A^T ~ Wishart(dof, I); with psi = C C^T,
    W = C^-T A A^T C^-1 ~ Wishart(dof, psi^-1) and cov = W^-1 = F F^T with F = C A^-T,
    an Inverse-Wishart(dof, psi) draw; mean = m + F e / sqrt(kappa), e ~ N(0, I). All the
    chi-squares come from one call of `gmmcourse.gamma.gamma` (fast to compile).

    Args:
        key: PRNG key. kappa, dof: (K,). m: (K, D). psi: (K, D, D).
    """
    k, d = m.shape
    dtype = m.dtype
    kg, kn, ke = jax.random.split(key, 3)
    chi2 = 2 * gamma(kg, ((dof[:, None] - jnp.arange(d, dtype=dtype)[None, :]) / 2).reshape(-1), dtype).reshape(k, d)
    below = jnp.tril(jax.random.normal(kn, (k, d, d), dtype), -1)
    a = below + jnp.sqrt(jnp.maximum(chi2, jnp.finfo(dtype).tiny))[:, :, None] * jnp.eye(d, dtype=dtype)
    eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), (k, d, d))
    a_inv = jax.lax.linalg.triangular_solve(a, eye, left_side=True, lower=True)
    f = jnp.linalg.cholesky(psi) @ jnp.swapaxes(a_inv, 1, 2)
    covs = f @ jnp.swapaxes(f, 1, 2)
    covs = 0.5 * (covs + jnp.swapaxes(covs, 1, 2))
    means = m + jnp.einsum("kij,kj->ki", f, jax.random.normal(ke, (k, d), dtype)) * jax.lax.rsqrt(kappa)[:, None]
    return means, covs


def niw_posterior(onehot, x, prior: NIWPrior):
    """The NIW posterior of every component given the assignments: (kappa_n (K,), m_n (K, D),
    dof_n (K,), psi_n (K, D, D), counts (K,)).

    With y = x - mean_loc and the sums S1 = sum_i y_i, S2 = sum_i y_i y_i^T over a component's
    n points: kappa_n = kappa + n, m_n = mean_loc + S1 / kappa_n, dof_n = dof + n and
    psi_n = scale + S2 - S1 S1^T / kappa_n (the textbook scatter-plus-shrinkage form,
    rearranged so that an empty component needs no division by n: it gets the prior).

    Args:
        onehot: (N, K) float, 1 where point i is in component k (0 for padded points).
        x: (N, D). prior: an `NIWPrior` of arrays.
    """
    y = x - prior.mean_loc[None, :]
    counts = jnp.sum(onehot, axis=0)
    s1 = onehot.T @ y
    s2 = jnp.einsum("nk,ni,nj->kij", onehot, y, y)
    kappa_n = prior.kappa + counts
    psi = prior.scale[None] + s2 - s1[:, :, None] * s1[:, None, :] / kappa_n[:, None, None]
    return kappa_n, prior.mean_loc[None, :] + s1 / kappa_n[:, None], prior.dof + counts, psi, counts


def _iw_sample(key, dof, scale, sample_shape=()):
    """Inverse-Wishart draws of shape sample_shape + batch + (D, D) (GenJAX batches a
    distribution under `vmap` through `sample_shape` or batched arguments, as TFP does)."""
    scale = jnp.asarray(scale)
    d = scale.shape[-1]
    batch = tuple(sample_shape) + jnp.broadcast_shapes(jnp.shape(dof), scale.shape[:-2])
    m = int(np.prod(batch))
    dof = jnp.broadcast_to(dof, batch).reshape(m).astype(scale.dtype)
    scale = jnp.broadcast_to(scale, batch + (d, d)).reshape(m, d, d)
    _, cov = draw_niw(key, jnp.ones(m, scale.dtype), jnp.zeros((m, d), scale.dtype), dof, scale)
    return cov.reshape(batch + (d, d))


def _iw_logpdf(cov, dof, scale):
    d = scale.shape[-1]
    chol = jnp.linalg.cholesky(cov)
    logdet_cov = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    logdet_scale = 2 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(scale), axis1=-2, axis2=-1)), axis=-1)
    trace = jnp.trace(jax.scipy.linalg.cho_solve((chol, True), scale), axis1=-2, axis2=-1)
    return (0.5 * dof * logdet_scale - 0.5 * dof * d * jnp.log(2.0) - multigammaln(0.5 * dof, d)
            - 0.5 * (dof + d + 1) * logdet_cov - 0.5 * trace)


inverse_wishart = distribution(wrap_sampler(_iw_sample, name="inverse_wishart"),
                               wrap_logpdf(_iw_logpdf, name="inverse_wishart"), name="inverse_wishart")
"""Inverse-Wishart(dof, scale) over (D, D) covariance matrices, a GenJAX distribution:
density |scale|^(dof/2) |cov|^(-(dof+D+1)/2) exp(-tr(scale cov^-1)/2) / (2^(dof D/2) Gamma_D(dof/2))."""


@gen
def mvn_point(weights, means, covs):
    """One observation: pick a component, then draw from its Gaussian."""
    z = categorical(jnp.log(weights)) @ "z"
    return multivariate_normal(means[z], covs[z]) @ "x"


@gen
def niw_component(mean_loc, kappa, dof, scale):
    """One component's (mean, cov) from the Normal-Inverse-Wishart prior."""
    cov = inverse_wishart(dof, scale) @ "cov"
    mean = multivariate_normal(mean_loc, cov / kappa) @ "mean"
    return mean, cov


@gen
def mvn_gmm(n: Const[int], k: Const[int], prior: NIWPrior):
    """Bayesian mixture of `k` full-covariance Gaussians over `n` points (see the module docstring)."""
    if k.value == 1:  # the weight of one component is the constant 1 (a Dirichlet needs K >= 2)
        weights = jnp.ones(1, dtype=jnp.asarray(prior.scale).dtype)
    else:
        weights = dirichlet(prior.alpha * jnp.ones(k.value)) @ "weights"
    means, covs = niw_component.repeat(k.value)(prior.mean_loc, prior.kappa, prior.dof, prior.scale) @ "components"
    return mvn_point.repeat(n.value)(weights, means, covs) @ "points"


def mvn_choices(weights, means, covs, z=None, x=None) -> dict:
    """A choice map of `mvn_gmm` with the given parameters, and assignments/observations if given.

    For K = 1 there is no ``"weights"`` choice (the weight is the constant 1).
    """
    components = {"components": {"mean": jnp.asarray(means), "cov": jnp.asarray(covs)}}
    return mixture_choices(components, weights, jnp.shape(weights)[0], z, x)
