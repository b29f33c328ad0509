"""How many components? BIC from maximum likelihood, and Bayesian leave-one-out (PSIS-LOO)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from gmmcourse.em import em
from gmmcourse.models import GMMPrior
from gmmcourse.validation import check_data, check_k

__all__ = ["bic", "bic_table", "is_degenerate", "loo_table", "pointwise_log_likelihood"]


def bic(log_likelihood: float, k: int, n: int) -> float:
    """Bayesian information criterion of a K-component 1-D mixture (3K - 1 free parameters):
    -2 log L + (3K - 1) log N. Lower is better."""
    return -2.0 * log_likelihood + (3 * k - 1) * np.log(n)


DEGENERATE_SD = 1e-2  # a fitted sd below this multiple of the data's sd sits at the variance floor
DEGENERATE_POINTS = 2.0  # a component holding less weight than this many points explains nothing


def is_degenerate(fit, n: int, data_sd: float) -> bool:
    """A degenerate EM fit: some component has collapsed (its sd is below 1 % of the data's
    sd, i.e. at the variance floor on a point or a few coincident points) or holds fewer than
    two points' worth of weight. The likelihood of such a fit grows without bound as the
    floor shrinks, so its BIC says nothing about the number of groups."""
    sds, weights = np.asarray(fit.sds), np.asarray(fit.weights)
    return bool(np.any(sds < DEGENERATE_SD * data_sd) or np.any(weights * n < DEGENERATE_POINTS))


def bic_table(x, k_max: int = 5, *, seed: int = 0, restarts: int = 10) -> pd.DataFrame:
    """EM fits for K = 1..k_max with their log-likelihood and BIC, degenerate fits excluded.

    Every K gets `restarts` independent EM runs (k-means++ starts). A run is degenerate when
    `is_degenerate` says so; the table's fit for K is the best **non-degenerate** run. If every
    run for some K is degenerate, that K has no BIC (NaN) and cannot be chosen.

    Returns:
        A DataFrame indexed by ``k`` with columns ``log_likelihood`` (best non-degenerate run),
        ``n_params``, ``bic``, ``delta_bic`` (BIC minus the best BIC), ``means`` (fitted means),
        ``min_sd`` (smallest fitted sd), ``n_degenerate`` (degenerate runs out of
        ``restarts``), ``best_is_degenerate`` (whether the highest-likelihood run of all was
        degenerate: the trap a plain BIC falls into), ``log_likelihood_any`` (that run's
        log-likelihood) and ``chosen`` (True for the K with the lowest BIC).
    """
    x = check_data(x)
    n = x.shape[0]
    k_max = check_k(k_max, n, "k_max")
    data_sd = max(float(np.std(x)), 1e-12)
    run_seeds = np.random.SeedSequence(seed).generate_state(restarts, dtype=np.uint32)
    rows = []
    for k in range(1, k_max + 1):
        fits = [em(x, k, seed=int(s), restarts=1) for s in run_seeds]
        degenerate = np.array([is_degenerate(f, n, data_sd) for f in fits])
        lls = np.array([f.log_likelihood for f in fits])
        lls = np.where(np.isfinite(lls), lls, -np.inf)
        best_any = int(np.argmax(lls))
        ok = np.flatnonzero(~degenerate)
        if ok.size:
            fit = fits[int(ok[np.argmax(lls[ok])])]
            ll, means, min_sd = fit.log_likelihood, np.round(fit.means, 2), float(fit.sds.min())
        else:
            ll, means, min_sd = np.nan, None, np.nan
        rows.append({"k": k, "log_likelihood": ll, "n_params": 3 * k - 1, "bic": bic(ll, k, n),
                     "means": means, "min_sd": min_sd, "n_degenerate": int(degenerate.sum()),
                     "best_is_degenerate": bool(degenerate[best_any]),
                     "log_likelihood_any": float(lls[best_any])})
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

    # the K are independent: threads overlap their compilation (or cache loads) and runs;
    # every K's numbers are those of a call on its own
    with ThreadPoolExecutor(max_workers=min(k_max, len(os.sched_getaffinity(0)))) as pool:
        done = list(pool.map(one, range(1, k_max + 1)))
    results = {row["k"]: res for res, row in done}
    rows = [row for _, row in done]
    table = pd.DataFrame(rows).set_index("k")
    table["delta_elpd"] = table["elpd_loo"].max() - table["elpd_loo"]
    import arviz_stats

    cmp = arviz_stats.compare({str(k): r for k, r in results.items()}, round_to="none")
    table["elpd_diff"] = [float(cmp.loc[str(k), "elpd_diff"]) for k in table.index]
    table["dse"] = [float(cmp.loc[str(k), "dse"]) for k in table.index]
    return table
