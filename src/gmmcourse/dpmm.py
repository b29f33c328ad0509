"""Dirichlet process mixtures of 1-D Gaussians: when the number of components is not fixed.

The model (Ferguson 1973; Antoniak 1974), with a conjugate prior on each cluster's mean and
variance so that clusters can be integrated out exactly:

* a partition of the n points drawn from the Chinese restaurant process with concentration
  ``alpha`` (equivalently, stick-breaking weights ``w_k = v_k prod_{l<k} (1 - v_l)``,
  ``v_k ~ Beta(1, alpha)``, and labels drawn from ``w``);
* for each cluster, ``sigma^2 ~ InverseGamma(a0, b0)`` and ``mu | sigma^2 ~ Normal(m0, sigma^2 / k0)``;
* ``x_i | cluster c ~ Normal(mu_c, sigma_c^2)``.

This module holds the model in GenJAX (`crp`, `stick_breaking`, `dp_mixture`: `simulate` draws
from them; the tests check them against their exact laws) and is the one import for the rest,
which lives in modules of one job each:

* `gmmcourse.dpmm_prior`: `DPPrior` and the conjugate cluster prior in closed form
  (`nig_posterior`, `log_marginal`: log p(x_c) of one cluster's points);
* `gmmcourse.dpmm_exact`: the exact laws (`expected_clusters`, `crp_log_prob`,
  `truncation_bound`, the `MFM`'s partition law) and `exact_posterior`, the posterior over
  partitions by enumeration (hence exact P(number of clusters | x), co-clustering, log p(x));
* `gmmcourse.dpmm_sweeps`: one sweep of each sampler and the compiled chains (`run_chain`,
  `run_chains`); a point's predictive is a Student-t, evaluated by GenJAX's
  `student_t.assess`;
* `gmmcourse.dpmm_samplers`: `collapsed_gibbs` (Neal's 2000 algorithm 3, clusters integrated
  out), `blocked_gibbs` (Ishwaran and James's 2001 truncated stick-breaking sampler) and
  `DPPosterior`, label-free summaries of their draws (number of occupied clusters,
  co-clustering, split R-hat and ESS of the number of clusters).
"""

from __future__ import annotations

import jax.numpy as jnp
from genjax import Const, beta, categorical, gen, inverse_gamma, normal

from gmmcourse.dpmm_exact import (MFM, ExactDP, crp_log_prob, exact_posterior, expected_clusters, set_partitions,
                                  truncation_bound)
from gmmcourse.dpmm_prior import DPPrior, log_marginal, nig_posterior
from gmmcourse.dpmm_samplers import DPPosterior, blocked_gibbs, collapsed_gibbs
from gmmcourse.dpmm_sweeps import run_chain, run_chains, student_t

__all__ = [
    "DPPrior", "crp", "stick_breaking", "dp_mixture", "expected_clusters", "crp_log_prob", "truncation_bound",
    "MFM", "nig_posterior", "log_marginal", "set_partitions", "ExactDP", "exact_posterior", "collapsed_gibbs",
    "blocked_gibbs", "DPPosterior", "run_chain", "run_chains", "student_t",
]


# --------------------------------------------------------------------------- the prior in GenJAX


@gen
def crp(alpha, n: Const[int]):
    """The Chinese restaurant process: customer i sits at occupied table t with probability
    proportional to its count, at a new table with probability proportional to ``alpha``.
    Addresses ``"z0" ... "z{n-1}"``; tables are numbered in order of first use."""
    counts = jnp.zeros(n.value)
    labels = []
    for i in range(n.value):
        occupied = counts > 0
        new = jnp.sum(occupied)  # the next unused table
        logits = jnp.where(occupied, jnp.log(jnp.where(occupied, counts, 1.0)),
                           jnp.where(jnp.arange(n.value) == new, jnp.log(alpha), -jnp.inf))
        z = categorical(logits) @ f"z{i}"
        counts = counts.at[z].add(1.0)
        labels.append(z)
    return jnp.stack(labels)


@gen
def stick_breaking(alpha, k_max: Const[int]):
    """Weights of a DP truncated at ``k_max`` sticks: ``v_k ~ Beta(1, alpha)`` (addresses
    ``"v0" ...``), the last stick takes what is left. Returns the (k_max,) weights."""
    left = jnp.ones(())
    weights = []
    for k in range(k_max.value - 1):
        v = beta(1.0, alpha) @ f"v{k}"
        weights.append(left * v)
        left = left * (1.0 - v)
    weights.append(left)
    return jnp.stack(weights)


@gen
def dp_mixture(n: Const[int], prior: DPPrior, k_max: Const[int]):
    """The truncated DP mixture: sticks, each stick's (sigma^2, mu), then the points.
    Addresses: ``"sticks"`` (from `stick_breaking`), ``"s2_k"``, ``"mu_k"``, ``"z_i"``, ``"x_i"``."""
    w = stick_breaking(prior.alpha, k_max) @ "sticks"
    s2 = jnp.stack([inverse_gamma(prior.var_shape, prior.var_scale) @ f"s2_{k}" for k in range(k_max.value)])
    mu = jnp.stack([normal(prior.mean_loc, jnp.sqrt(s2[k] / prior.mean_strength)) @ f"mu_{k}"
                    for k in range(k_max.value)])
    xs = []
    for i in range(n.value):
        z = categorical(jnp.log(w)) @ f"z_{i}"
        xs.append(normal(mu[z], jnp.sqrt(s2[z])) @ f"x_{i}")
    return jnp.stack(xs)
