"""Multivariate Gaussian mixtures with full covariance: the one import for all three parts.

* `gmmcourse.multivariate_em`: maximum likelihood by EM (`em`, `MvnFit`, `responsibilities`,
  `log_density`, `bic`, `is_degenerate`).
* `gmmcourse.multivariate_model`: the Bayesian model with a conjugate Normal-Inverse-Wishart
  prior written in GenJAX (`mvn_gmm`, `NIWPrior`, `default_prior`).
* `gmmcourse.multivariate_gibbs`: its Gibbs sampler (`posterior`, `MvnDraws`) and label-free
  summaries (`assignment_probs`, `co_clustering`, `predictive_log_density`, `diagnostics`).
"""

from __future__ import annotations

from gmmcourse.multivariate_em import (MvnFit, bic, check_points, em, is_degenerate, kmeans_plus_plus, log_density,
                                       n_params, responsibilities)
from gmmcourse.multivariate_gibbs import (MvnDraws, assignment_probs, co_clustering, diagnostics, draw_log_likelihood,
                                          posterior, predictive_log_density)
from gmmcourse.multivariate_model import NIWPrior, default_prior, inverse_wishart, mvn_gmm, mvn_point

__all__ = [
    "MvnDraws",
    "MvnFit",
    "NIWPrior",
    "assignment_probs",
    "bic",
    "check_points",
    "co_clustering",
    "default_prior",
    "diagnostics",
    "draw_log_likelihood",
    "em",
    "inverse_wishart",
    "is_degenerate",
    "kmeans_plus_plus",
    "log_density",
    "mvn_gmm",
    "mvn_point",
    "n_params",
    "posterior",
    "predictive_log_density",
    "responsibilities",
]
