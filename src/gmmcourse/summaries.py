"""Label-free summaries of posterior draws: assignment probabilities, co-clustering, density.

Each takes a `gmmcourse.gibbs.Posterior` (its relabelled or raw draws of weights, means
and sds, each (chains, samples, K)) and computes in float64 numpy, after the sampler:

* `draw_assignment_probs` -- P(z_i = k | x_i, parameters) for every draw (chains,
  samples, N, K): Monte Carlo standard errors of `Posterior.assignment_probs` per draw;
* `co_clustering` -- P(z_i = z_j | data) (N, N), from the raw draws: it does not depend on
  how components are labelled, so it needs no relabelling;
* `predictive_density` -- the posterior predictive density on a grid, with a pointwise band.

For a posterior of data recorded to a resolution (``rounding`` > 0), the assignment
probabilities use the likelihood of a recorded value, variance sd**2 + rounding**2 / 12, as
the sampler did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gmmcourse.gibbs import Posterior

__all__ = ["draw_assignment_probs", "co_clustering", "predictive_density"]


def draw_assignment_probs(x, post: Posterior, *, raw: bool = False) -> np.ndarray:
    """P(z_i = k | x_i, parameters) for every posterior draw, shape (chains, samples, N, K).

    Averaged over the draws this is `post.assignment_probs` (up to which sweep's parameters
    are used); per draw it gives Monte Carlo standard errors (e.g. `arviz.mcse` over the
    chain and draw axes) and label-free summaries such as `co_clustering`.

    Args:
        x: the data the posterior was computed from, shape (N,).
        post: a `Posterior`.
        raw: use the raw draws (labels as sampled) instead of the relabelled ones.
    """
    from scipy.special import logsumexp as np_logsumexp

    draws = post.raw if raw else post
    w, m, s = (np.asarray(getattr(draws, a), np.float64) for a in ("weights", "means", "sds"))
    x = np.asarray(x, np.float64)
    if getattr(post, "rounding", 0.0):  # the likelihood of a recorded value (see `posterior`)
        s = np.sqrt(s**2 + post.rounding**2 / 12.0)
    log_joint = (np.log(np.maximum(w, 1e-300))[..., None, :]
                 - 0.5 * ((x[:, None] - m[..., None, :]) / s[..., None, :]) ** 2
                 - np.log(s[..., None, :]))  # (C, S, N, K), up to a constant
    return np.exp(log_joint - np_logsumexp(log_joint, axis=-1, keepdims=True))


def co_clustering(x, post: Posterior) -> np.ndarray:
    """Posterior co-clustering matrix P(z_i = z_j | data), shape (N, N).

    Given the parameters the assignments are independent, so P(z_i = z_j | x, parameters)
    = sum_k p_ik p_jk; the average over the draws is the Rao-Blackwellised posterior
    probability. It does not depend on how the components are labelled (no relabelling
    needed), and its diagonal is 1.
    """
    p = draw_assignment_probs(x, post, raw=True)
    p = p.reshape(-1, *p.shape[2:])  # (draws, N, K)
    co = np.einsum("dik,djk->ij", p, p) / p.shape[0]
    np.fill_diagonal(co, 1.0)  # z_i = z_i always (the product formula holds for i != j)
    return co


def predictive_density(post: Posterior, grid, *, interval: float = 0.9) -> dict:
    """The mixture density on `grid` under the posterior: for every draw theta the density
    p(x | theta) = sum_k w_k N(x; mu_k, sd_k); their average is the posterior predictive
    density p(x_new | data), their pointwise quantiles a band of plausible densities.

    Args:
        post: a `Posterior`.
        grid: points, shape (G,).
        interval: central probability of the pointwise band.

    Returns:
        dict with "mean" (G,) (the posterior predictive), "lo" and "hi" (G,) (pointwise
        quantiles), and "draws" (chains, samples, G).
    """
    grid = np.asarray(grid, np.float64)
    w, m, s = (np.asarray(getattr(post, a), np.float64)[..., None, :] for a in ("weights", "means", "sds"))
    dens = np.sum(w * np.exp(-0.5 * ((grid[:, None] - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s), axis=-1)
    tail = (1 - interval) / 2
    return {"mean": dens.mean(axis=(0, 1)), "lo": np.quantile(dens, tail, axis=(0, 1)),
            "hi": np.quantile(dens, 1 - tail, axis=(0, 1)), "draws": dens}
