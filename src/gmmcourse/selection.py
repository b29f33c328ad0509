"""How many components? BIC from maximum likelihood, and Bayesian leave-one-out (PSIS-LOO)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from gmmcourse.em import em
from gmmcourse.models import GMMPrior
from gmmcourse.programs import parallel_map
from gmmcourse.validation import check_data, check_k

__all__ = ["bic", "bic_table", "is_degenerate", "is_duplicated", "loo_table", "pointwise_log_likelihood"]


def bic(log_likelihood: float, k: int, n: int) -> float:
    """Bayesian information criterion of a K-component 1-D mixture (3K - 1 free parameters):
    -2 log L + (3K - 1) log N. Lower is better."""
    return -2.0 * log_likelihood + (3 * k - 1) * np.log(n)


REG_VAR = 1e-6  # the variance floor of bic_table's EM runs (`em`'s reg_var)
FLOOR_FACTOR = 2.0  # a fitted variance at most this multiple of the floor: no spread of its own left
DEGENERATE_POINTS = 2.0  # a component holding less weight than this many points explains nothing
DUPLICATE_NATS = 1e-2  # merging two components costs less than this: they are one component


def is_degenerate(fit, n: int, reg_var: float = REG_VAR) -> bool:
    """A collapsed EM fit: some component's variance is at the floor EM adds to every variance
    (at most `FLOOR_FACTOR` times `reg_var`: it sits on one point or on coincident points) or
    it holds fewer than two points' worth of weight. The likelihood of such a fit grows
    without bound as the floor shrinks, so its BIC says nothing about the number of groups.

    Args:
        fit: an `EMResult` (or anything with ``weights`` and ``sds``), shape (K,).
        n: number of data points.
        reg_var: the variance floor the fit was run with.
    """
    sds, weights = np.asarray(fit.sds, dtype=np.float64), np.asarray(fit.weights, dtype=np.float64)
    return bool(np.any(sds**2 <= FLOOR_FACTOR * reg_var) or np.any(weights * n < DEGENERATE_POINTS))


def _log_likelihood(x, weights, means, sds) -> float:
    return float(pointwise_log_likelihood(x, weights, means, sds).sum())


def is_duplicated(fit, x) -> bool:
    """Not a K-component fit: two of its components are one. EM started near a (K-1)-component
    maximum can stop at a saddle where one component is split into two copies (same mean,
    same sd); its log-likelihood is the (K-1)-component one. Merging two components into one
    with their pooled weight, mean and variance (moment matching) then loses less than
    `DUPLICATE_NATS` of log-likelihood.

    Args:
        fit: an `EMResult` (or anything with ``weights``, ``means`` and ``sds``), shape (K,).
        x: the data the fit was made on, shape (N,).
    """
    x = np.asarray(x, dtype=np.float64)
    w, m, s = (np.asarray(a, dtype=np.float64) for a in (fit.weights, fit.means, fit.sds))
    full = _log_likelihood(x, w, m, s)
    for i in range(len(w)):
        for j in range(i + 1, len(w)):
            wij = w[i] + w[j]
            mij = (w[i] * m[i] + w[j] * m[j]) / wij
            vij = (w[i] * (s[i] ** 2 + m[i] ** 2) + w[j] * (s[j] ** 2 + m[j] ** 2)) / wij - mij**2
            keep = np.ones(len(w), dtype=bool)
            keep[[i, j]] = False
            merged = _log_likelihood(x, np.append(w[keep], wij), np.append(m[keep], mij),
                                     np.append(s[keep], np.sqrt(max(vij, 0.0))))
            if merged > full - DUPLICATE_NATS:
                return True
    return False


def _narrowest(fit, n: int) -> dict:
    """The narrowest component of a fit: its sd, weight in points and mean."""
    c = int(np.argmin(fit.sds))
    return {"min_sd_any": float(fit.sds[c]), "min_sd_points_any": float(fit.weights[c] * n),
            "min_sd_mean_any": float(fit.means[c])}


def bic_table(x, k_max: int = 5, *, seed: int = 0, restarts: int = 10) -> pd.DataFrame:
    """EM fits for K = 1..k_max with their log-likelihood and BIC, collapsed and duplicated fits
    excluded.

    Every K gets `restarts` independent EM runs (k-means++ starts, variance floor `REG_VAR`). A
    run is **degenerate** when `is_degenerate` says so (a component collapsed), and
    **duplicated** when `is_duplicated` does (two of its components are one: not a
    K-component fit). The table's fit for K is the best run that is neither. If there is none
    for some K, that K has no BIC (NaN) and cannot be chosen.

    Returns:
        A DataFrame indexed by ``k`` with columns ``log_likelihood`` (best valid run),
        ``n_params``, ``bic``, ``delta_bic`` (BIC minus the best BIC), ``means`` (fitted means),
        ``min_sd`` (smallest fitted sd), ``n_degenerate`` (degenerate runs out of
        ``restarts``), ``n_duplicated`` (runs, not degenerate, with duplicated components),
        ``best_is_degenerate`` (whether the highest-likelihood run of all was degenerate: the
        trap a plain BIC falls into), ``log_likelihood_any`` (that run's log-likelihood),
        ``min_sd_any``, ``min_sd_points_any`` and ``min_sd_mean_any`` (that run's narrowest
        component: its sd, its weight in points, its mean) and ``chosen`` (True for the K with
        the lowest BIC).
    """
    x = check_data(x)
    n = x.shape[0]
    k_max = check_k(k_max, n, "k_max")
    run_seeds = np.random.SeedSequence(seed).generate_state(restarts, dtype=np.uint32)
    rows = []
    for k in range(1, k_max + 1):
        fits = [em(x, k, seed=int(s), restarts=1, reg_var=REG_VAR) for s in run_seeds]
        degenerate = np.array([is_degenerate(f, n) for f in fits])
        duplicated = np.array([not d and is_duplicated(f, x) for f, d in zip(fits, degenerate)])
        lls = np.array([f.log_likelihood for f in fits])
        lls = np.where(np.isfinite(lls), lls, -np.inf)
        best_any = int(np.argmax(lls))
        ok = np.flatnonzero(~degenerate & ~duplicated)
        if ok.size:
            fit = fits[int(ok[np.argmax(lls[ok])])]
            ll, means, min_sd = fit.log_likelihood, np.round(fit.means, 2), float(fit.sds.min())
        else:
            ll, means, min_sd = np.nan, None, np.nan
        rows.append({"k": k, "log_likelihood": ll, "n_params": 3 * k - 1, "bic": bic(ll, k, n),
                     "means": means, "min_sd": min_sd, "n_degenerate": int(degenerate.sum()),
                     "n_duplicated": int(duplicated.sum()),
                     "best_is_degenerate": bool(degenerate[best_any]),
                     "log_likelihood_any": float(lls[best_any]),
                     **_narrowest(fits[best_any], n)})
    table = pd.DataFrame(rows).set_index("k")
    table["delta_bic"] = table["bic"] - table["bic"].min()
    table["chosen"] = table.index == table["bic"].idxmin()
    return table


def pointwise_log_likelihood(x, weights, means, sds) -> np.ndarray:
    """log p(x_i | draw) for every draw: weights/means/sds (..., K) -> (..., N)."""
    x = np.asarray(x, dtype=np.float64)
    w, m, s = (np.asarray(a, dtype=np.float64)[..., None] for a in (weights, means, sds))
    return logsumexp(np.log(w) + norm.logpdf(x, m, s), axis=-2)


def _import_arviz():
    """Import what `loo_table` needs of ArviZ: its statistics and data modules, not its
    plotting (seconds of matplotlib), and xarray's probe of array libraries (dask)."""
    import arviz_base
    import arviz_stats  # noqa: F401
    import xarray

    arviz_base.from_dict({"posterior": {"a": np.zeros((1, 2))}})
    xarray.DataArray(np.zeros(1))


def loo_table(x, k_max: int = 5, *, loc: float | None = None, scale: float | None = None,
              num_chains: int = 4, num_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bayesian comparison of K = 1..k_max by PSIS-LOO (ArviZ) on Gibbs posteriors.

    Each K uses the exchangeable prior means ~ Normal(loc, scale), sds ~ Gamma(2, 1),
    weights ~ Dirichlet(1); by default loc = mean(x) and scale = 2 sd(x).

    Returns:
        A DataFrame indexed by ``k`` with ``elpd_loo`` (expected log predictive density,
        higher is better), its standard error ``se``, ``p_loo`` (effective number of
        parameters), ``max_pareto_k`` (above 0.7 the estimate is unreliable),
        ``delta_elpd`` (best minus this K), and from ``arviz.compare`` the paired
        difference to the best K, ``elpd_diff`` (this K minus the best, <= 0), with its standard error ``dse`` (computed
        from the pointwise differences, so it is much smaller than either ``se`` when the
        models predict the same points alike), and ``max_r_hat`` of the posterior behind
        each row.
    """
    from gmmcourse.gibbs import posterior

    x = check_data(x)
    k_max = check_k(k_max, x.shape[0], "k_max")
    # ArviZ and xarray take about a second to import: in a thread, while the sampler starts
    arviz_ready = threading.Thread(target=_import_arviz, daemon=True)
    arviz_ready.start()
    loc = float(np.mean(x)) if loc is None else float(loc)
    scale = 2 * max(float(np.std(x)), 1e-3) if scale is None else float(scale)

    def one(k):
        post = posterior(x, k, prior=GMMPrior.exchangeable(k, loc, scale), num_chains=num_chains,
                         num_samples=num_samples, seed=seed)
        arviz_ready.join()
        import arviz_base
        import arviz_stats

        ll = pointwise_log_likelihood(x, post.weights, post.means, post.sds)  # (C, S, N)
        data = arviz_base.from_dict({"posterior": {"means": post.means}, "log_likelihood": {"x": ll}},
                                    dims={"means": ["component"], "x": ["obs"]})
        res = arviz_stats.loo(data, pointwise=True)
        return res, {"k": k, "elpd_loo": float(res.elpd), "se": float(res.se), "p_loo": float(res.p),
                     "max_pareto_k": float(np.max(np.asarray(res.pareto_k))),
                     "max_r_hat": float(post.diagnostics()["max_r_hat"])}

    # the K are independent: the package's threads overlap their compilation (or cache loads)
    # and runs; every K's numbers are those of a call on its own
    done = parallel_map(one, range(1, k_max + 1))
    results = {row["k"]: res for res, row in done}
    rows = [row for _, row in done]
    table = pd.DataFrame(rows).set_index("k")
    table["delta_elpd"] = table["elpd_loo"].max() - table["elpd_loo"]
    import arviz_stats

    cmp = arviz_stats.compare({str(k): r for k, r in results.items()}, round_to="none")
    table["elpd_diff"] = [float(cmp.loc[str(k), "elpd_diff"]) for k in table.index]
    table["dse"] = [float(cmp.loc[str(k), "dse"]) for k in table.index]
    return table
