"""How many components? BIC from maximum likelihood, and Bayesian leave-one-out (PSIS-LOO)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from gmmcourse.em import em
from gmmcourse.models import GMMPrior
from gmmcourse.validation import check_data, check_k

__all__ = ["bic", "bic_table", "loo_table", "pointwise_log_likelihood"]


def bic(log_likelihood: float, k: int, n: int) -> float:
    """Bayesian information criterion of a K-component 1-D mixture (3K - 1 free parameters):
    -2 log L + (3K - 1) log N. Lower is better."""
    return -2.0 * log_likelihood + (3 * k - 1) * np.log(n)


def bic_table(x, k_max: int = 5, *, seed: int = 0, restarts: int = 10) -> pd.DataFrame:
    """EM fits for K = 1..k_max with their log-likelihood and BIC.

    Returns:
        A DataFrame indexed by ``k`` with columns ``log_likelihood``, ``n_params``, ``bic``,
        ``delta_bic`` (BIC minus the best BIC) and ``means`` (the fitted means).
    """
    x = check_data(x)
    k_max = check_k(k_max, x.shape[0], "k_max")
    rows = []
    for k in range(1, k_max + 1):
        fit = em(x, k, seed=seed, restarts=restarts)
        rows.append({"k": k, "log_likelihood": fit.log_likelihood, "n_params": 3 * k - 1,
                     "bic": bic(fit.log_likelihood, k, x.shape[0]), "means": np.round(fit.means, 2)})
    table = pd.DataFrame(rows).set_index("k")
    table["delta_bic"] = table["bic"] - table["bic"].min()
    return table


def pointwise_log_likelihood(x, weights, means, sds) -> np.ndarray:
    """log p(x_i | draw) for every draw: weights/means/sds (..., K) -> (..., N)."""
    x = np.asarray(x, dtype=np.float64)
    w, m, s = (np.asarray(a, dtype=np.float64)[..., None] for a in (weights, means, sds))
    return logsumexp(np.log(w) + norm.logpdf(x, m, s), axis=-2)


def loo_table(x, k_max: int = 5, *, loc: float | None = None, scale: float | None = None,
              num_chains: int = 4, num_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bayesian comparison of K = 1..k_max by PSIS-LOO (ArviZ) on Gibbs posteriors.

    Each K uses the exchangeable prior means ~ Normal(loc, scale), sds ~ Gamma(2, 1),
    weights ~ Dirichlet(1); by default loc = mean(x) and scale = 2 sd(x).

    Returns:
        A DataFrame indexed by ``k`` with ``elpd_loo`` (expected log predictive density,
        higher is better), its standard error ``se``, ``p_loo`` (effective number of
        parameters), ``max_pareto_k`` (above 0.7 the estimate is unreliable) and
        ``delta_elpd`` (best minus this K).
    """
    import arviz as az

    from gmmcourse.gibbs import posterior

    x = check_data(x)
    k_max = check_k(k_max, x.shape[0], "k_max")
    loc = float(np.mean(x)) if loc is None else float(loc)
    scale = 2 * max(float(np.std(x)), 1e-3) if scale is None else float(scale)
    rows = []
    for k in range(1, k_max + 1):
        post = posterior(x, k, prior=GMMPrior.exchangeable(k, loc, scale), num_chains=num_chains,
                         num_samples=num_samples, seed=seed)
        ll = pointwise_log_likelihood(x, post.weights, post.means, post.sds)  # (C, S, N)
        data = az.from_dict({"posterior": {"means": post.means}, "log_likelihood": {"x": ll}},
                            dims={"means": ["component"], "x": ["obs"]})
        res = az.loo(data)
        rows.append({"k": k, "elpd_loo": float(res.elpd), "se": float(res.se), "p_loo": float(res.p),
                     "max_pareto_k": float(np.max(np.asarray(res.pareto_k)))})
    table = pd.DataFrame(rows).set_index("k")
    table["delta_elpd"] = table["elpd_loo"].max() - table["elpd_loo"]
    return table
