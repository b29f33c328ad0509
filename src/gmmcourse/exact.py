"""Exact posterior of the Bayesian GMM on tiny data, by enumeration and quadrature.

Every assignment vector z in {0..K-1}^N is enumerated. Given z, the weights integrate out
analytically (Dirichlet-multinomial), each mean integrates out analytically given its sd
(Normal-Normal), and each sd is integrated numerically on a fine log-spaced grid. This is
the ground truth the Gibbs sampler is tested against; it costs K^N, so N <= ~10.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.special import gammaln, logsumexp

from gmmcourse.models import GMMPrior
from gmmcourse.validation import check_data

__all__ = ["ExactPosterior", "exact_posterior"]

MAX_CONFIGS = 2_000_000


class ExactPosterior(NamedTuple):
    """Exact posterior quantities.

    Attributes:
        log_marginal: log p(x).
        assignment_probs: P(z_i = k | x), shape (N, K).
        mean_weights, mean_means, mean_sds: posterior means E[. | x], shape (K,).
        co_clustering: P(z_i = z_j | x), shape (N, N) (label-invariant).
    """

    log_marginal: float
    assignment_probs: np.ndarray
    mean_weights: np.ndarray
    mean_means: np.ndarray
    mean_sds: np.ndarray
    co_clustering: np.ndarray


def _sd_grid(x, prior, num):
    spread = max(float(np.ptp(x)), 1e-3)
    lo = min(1e-4 * spread, 1e-3)
    hi = max(100.0 * spread, 50.0 * (prior.sd_shape + 5) / prior.sd_rate)
    log_s = np.linspace(np.log(lo), np.log(hi), num)
    return np.exp(log_s), log_s[1] - log_s[0]


def exact_posterior(x, prior: GMMPrior, *, grid_size: int = 4000) -> ExactPosterior:
    """Exact posterior of `gmmcourse.models.gmm` for data `x` and prior `prior`.

    Args:
        x: observations, shape (N,), with K**N <= 2e6.
        prior: the `GMMPrior`.
        grid_size: points of the log-spaced sd grid.
    """
    x = check_data(x).astype(np.float64)
    n = x.shape[0]
    k = prior.k
    if k**n > MAX_CONFIGS:
        raise ValueError(f"exact enumeration needs K**N <= {MAX_CONFIGS}; got K={k}, N={n}")
    loc = np.asarray(prior.mean_loc, np.float64)
    tau2 = float(prior.mean_scale) ** 2
    a, b, alpha = float(prior.sd_shape), float(prior.sd_rate), float(prior.concentration)
    sd, dlog = _sd_grid(x, prior, grid_size)
    s2 = sd**2  # (G,)
    log_prior_sd = a * np.log(b) - gammaln(a) + (a - 1) * np.log(sd) - b * sd + np.log(sd) + np.log(dlog)  # includes d sd = sd dlog
    # trapezoid weights in log space
    log_prior_sd[[0, -1]] += np.log(0.5)

    cache: dict = {}

    def component(mask_key, kk):
        """log ∫∫ prior(mu, sd) prod N(x_i; mu, sd) over points in mask, plus E[mu], E[sd]."""
        key = (mask_key, kk)
        if key in cache:
            return cache[key]
        pts = x[list(mask_key)]
        m = pts.size
        if m == 0:
            res = (0.0, loc[kk], a / b)
        else:
            sx, sxx = pts.sum(), (pts**2).sum()
            post_prec = 1 / tau2 + m / s2  # (G,)
            post_mean = (loc[kk] / tau2 + sx / s2) / post_prec
            # log N(x | mu, s2) N(mu | loc, tau2) integrated over mu
            log_lik = (
                -0.5 * m * np.log(2 * np.pi * s2)
                - 0.5 * np.log(tau2 * post_prec)
                - 0.5 * (sxx / s2 + loc[kk] ** 2 / tau2 - post_mean**2 * post_prec)
            )
            terms = log_prior_sd + log_lik
            lz = logsumexp(terms)
            wts = np.exp(terms - lz)
            res = (lz, float(wts @ post_mean), float(wts @ sd))
        cache[key] = res
        return res

    configs = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)  # (C, N)
    log_post = np.empty(len(configs))
    e_means = np.empty((len(configs), k))
    e_sds = np.empty((len(configs), k))
    counts = np.stack([(configs == j).sum(1) for j in range(k)], axis=1)  # (C, K)
    log_pz = gammaln(k * alpha) - gammaln(n + k * alpha) + np.sum(gammaln(counts + alpha) - gammaln(alpha), axis=1)
    for c, z in enumerate(configs):
        total = log_pz[c]
        for j in range(k):
            lz, em_, es_ = component(tuple(np.flatnonzero(z == j)), j)
            total += lz
            e_means[c, j], e_sds[c, j] = em_, es_
        log_post[c] = total
    log_marginal = float(logsumexp(log_post))
    p = np.exp(log_post - log_marginal)
    onehot = configs[:, :, None] == np.arange(k)[None, None, :]  # (C, N, K)
    assignment = np.einsum("c,cnk->nk", p, onehot)
    same = (configs[:, :, None] == configs[:, None, :])
    co = np.einsum("c,cij->ij", p, same)
    mean_w = p @ ((counts + alpha) / (n + k * alpha))
    return ExactPosterior(log_marginal, assignment, mean_w, p @ e_means, p @ e_sds, co)
