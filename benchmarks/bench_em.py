"""EM time per iteration at N = 1e6 against scikit-learn (float64), and the exp/log floor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from common import best_time, write
from gmmcourse.data import simulate_mixture
from gmmcourse.em import em


def main(n: int = 1_000_000, k: int = 3, iters: int = 30) -> dict:
    from sklearn.mixture import GaussianMixture

    x, _ = simulate_mixture(jax.random.key(0), n, np.array([0.5, 0.3, 0.2]), np.array([-4.0, 0.0, 5.0]), np.array([1.0, 0.7, 1.5]))
    x = np.asarray(x, np.float64)

    def ours():
        return em(x, k, restarts=1, max_iter=iters, tol=0.0, dtype=np.float64)

    fit = ours()  # compile
    t_ours = best_time(ours, 3) / fit.n_iter

    def sk():
        g = GaussianMixture(k, covariance_type="spherical", max_iter=iters, tol=0.0, n_init=1,
                            init_params="random_from_data", random_state=0)
        g.fit(x[:, None])
        return g

    # sklearn's time per iteration: time of `iters` iterations minus time of 1 (init cost)
    import time as _t

    def sk_iters(m):
        t = _t.perf_counter()
        GaussianMixture(k, covariance_type="spherical", max_iter=m, tol=0.0, n_init=1,
                        init_params="random_from_data", random_state=0).fit(x[:, None])
        return _t.perf_counter() - t

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t_sk = min((sk_iters(iters) - sk_iters(1)) / (iters - 1) for _ in range(2))

    # the floor: K*N exponentials and N logarithms in float64, what any E-step must do
    with jax.enable_x64(True):
        xs = jnp.asarray(x)
        floor = jax.jit(lambda a: jnp.sum(jnp.log(jnp.sum(jnp.exp(-0.5 * (a[None, :] - jnp.arange(k, dtype=a.dtype)[:, None]) ** 2), 0))))
        floor(xs).block_until_ready()
        t_floor = best_time(lambda: floor(xs).block_until_ready(), 5)
    result = {
        "n": n, "k": k, "dtype": "float64",
        "ours_s_per_iter": t_ours, "sklearn_s_per_iter": t_sk, "exp_log_floor_s": t_floor,
        "speedup_vs_sklearn": t_sk / t_ours, "ratio_to_floor": t_ours / t_floor,
        "goal": "speedup >= 12x; stretch: ratio_to_floor <= 3",
    }
    write("em", result)
    return result


if __name__ == "__main__":
    print(main())
