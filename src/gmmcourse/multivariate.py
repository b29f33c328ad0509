"""Multivariate Gaussian mixtures with full covariance: the one import for both halves.

* `gmmcourse.multivariate_em`: maximum likelihood by EM (`em`, `MvnFit`, `responsibilities`,
  `log_density`, `bic`, `is_degenerate`).
* `gmmcourse.multivariate_gibbs`: the Bayesian model with a conjugate Normal-Inverse-Wishart
  prior, written in GenJAX, its Gibbs sampler (`posterior`, `MvnDraws`) and label-free
  summaries (`assignment_probs`, `co_clustering`, `predictive_log_density`, `diagnostics`).
"""

from __future__ import annotations

from gmmcourse.multivariate_em import (MvnFit, bic, check_points, em, is_degenerate, kmeans_plus_plus, log_density,
                                       n_params, responsibilities)

__all__ = [
    "MvnFit",
    "bic",
    "check_points",
    "em",
    "is_degenerate",
    "kmeans_plus_plus",
    "log_density",
    "n_params",
    "responsibilities",
]
