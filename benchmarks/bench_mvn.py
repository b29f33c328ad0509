"""Multivariate mixtures: EM time per iteration against scikit-learn (N = 1e6, D = 3, K = 8,
float64, CPU), and the Gibbs sampler's programs per shape bucket.

    python benchmarks/bench_mvn.py            # N = 1e6
    python benchmarks/bench_mvn.py 200000     # a smaller N on a loaded machine (recorded)

One EM iteration each, from the same parameters: ours is `gmmcourse.multivariate_em.em_step`
(jitted: E-step and M-step), scikit-learn's is `GaussianMixture._e_step` then `_m_step`, the
two calls its own `fit` makes per iteration. The two sides alternate within each round
(`common.alternate`): the ratio of each round's pair is summarised (median, quartiles,
extremes). A whole run of `ITERS` iterations from the same start (ours `em(init=...)`,
scikit-learn's `fit` with `max_iter=ITERS`, tol 0) is timed the same way, and both fits are
checked to agree.
"""

from __future__ import annotations

import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from common import alternate, write

D, K, ITERS = 3, 8, 5


def _data(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (K, D))
    z = rng.integers(0, K, n)
    return centres[z] + rng.normal(0, 1, (n, D)) * rng.uniform(0.5, 1.5, (K, D))[z]


def em_vs_sklearn(n: int, rounds: int) -> dict:
    from sklearn.mixture import GaussianMixture
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    from gmmcourse.multivariate_em import em, em_step

    x = _data(n)
    start = em(x[:20_000], K, key=0, max_iter=2)  # a k-means++ start, two steps in
    w0, m0, c0 = start.weights, start.means, start.covs
    jax.config.update("jax_enable_x64", True)
    xt = jnp.asarray(np.ascontiguousarray(x.T))
    params = tuple(jnp.asarray(a) for a in (w0, m0, c0))
    step = jax.jit(lambda xt, w, m, c: em_step(xt, None, jnp.float64(n), w, m, c, 1e-6))
    jax.block_until_ready(step(xt, *params))  # compile

    g = GaussianMixture(K, covariance_type="full", reg_covar=1e-6)
    g.weights_, g.means_, g.covariances_ = w0, m0, c0
    g.precisions_cholesky_ = _compute_precision_cholesky(c0, "full")

    def sklearn_step():
        _, log_resp = g._e_step(x)
        g._m_step(x, log_resp)

    def ours_step():
        jax.block_until_ready(step(xt, *params))

    def sklearn_fit():
        gm = GaussianMixture(K, covariance_type="full", reg_covar=1e-6, weights_init=w0, means_init=m0,
                             precisions_init=np.linalg.inv(c0), init_params="random", max_iter=ITERS, tol=0.0,
                             random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol 0: "did not converge"
            gm.fit(x)
        return gm

    def ours_fit():
        return em(x, K, init=(w0, m0, c0), max_iter=ITERS, tol=0.0)

    mine, theirs = ours_fit(), sklearn_fit()  # compile ours; check that both compute the same fit
    order = np.lexsort(theirs.means_.T[::-1])
    agree = float(np.max(np.abs(mine.means - theirs.means_[order])))
    steps = alternate({"sklearn": sklearn_step, "ours": ours_step}, rounds=rounds)
    runs = alternate({"sklearn": sklearn_fit, "ours": ours_fit}, rounds=max(rounds // 3, 3))
    speed = 1 / steps["ours_over_sklearn"]["median"]
    return {
        "n": n, "d": D, "k": K, "dtype": "float64",
        "per_iteration": steps,
        "speedup_per_iteration": {"median": speed, "q1": 1 / steps["ours_over_sklearn"]["q3"],
                                  "q3": 1 / steps["ours_over_sklearn"]["q1"],
                                  "min": 1 / steps["ours_over_sklearn"]["max"]},
        f"run_of_{ITERS}_iterations": runs,
        "speedup_run": 1 / runs["ours_over_sklearn"]["median"],
        "max_abs_mean_difference_after_run": agree,
        "goal": "speedup_per_iteration median >= 5",
    }


def gibbs_programs() -> dict:
    """Programs the Gibbs sampler holds after calls on many sizes within one bucket (and the
    next bucket), with varying chains, draws and warm-up; first-call and later-call times."""
    from gmmcourse import multivariate_gibbs as mg
    from gmmcourse.multivariate import posterior

    x = _data(3000)[:, :2]
    calls = []
    for n, chains, draws, warmup in [(20, 4, 200, 100), (32, 2, 150, 50), (9, 3, 100, 300), (500, 4, 200, 100),
                                     (2048, 2, 100, 100), (1000, 4, 300, 0)]:
        t = time.perf_counter()
        posterior(x[:n], 3, key=0, num_chains=chains, num_draws=draws, num_warmup=warmup)
        calls.append({"n": n, "chains": chains, "draws": draws, "warmup": warmup,
                      "seconds": time.perf_counter() - t,
                      "programs": mg.chain_start._cache_size() + mg.chain_chunk._cache_size()})
    return {"calls": calls, "buckets_used": 2, "programs_total": calls[-1]["programs"],
            "expected_programs": "2 per bucket (start, chunk): 4"}


def main(n: int = 1_000_000) -> dict:
    result = {"em": em_vs_sklearn(n, rounds=11), "gibbs_compile": gibbs_programs()}
    write("mvn", result)
    em_ = result["em"]
    print(f"EM per iteration at N={n}: ours {em_['per_iteration']['ours']['median_s'] * 1e3:.1f} ms, "
          f"scikit-learn {em_['per_iteration']['sklearn']['median_s'] * 1e3:.1f} ms, "
          f"speedup {em_['speedup_per_iteration']['median']:.1f}x (quartiles {em_['speedup_per_iteration']['q1']:.1f}-"
          f"{em_['speedup_per_iteration']['q3']:.1f}); run of {ITERS}: {em_['speedup_run']:.1f}x")
    print(f"Gibbs programs after {len(result['gibbs_compile']['calls'])} calls in 2 buckets: "
          f"{result['gibbs_compile']['programs_total']}")
    return result


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else 1_000_000)
