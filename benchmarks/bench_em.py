"""EM time per iteration at N = 1e6 against scikit-learn (float64), and the exp/log floor.

The three are alternated in one process (`common.alternate`), so that each round's ratios are
taken under the same load: ours (`iters` iterations), scikit-learn with `iters` iterations and
with one (its time per iteration is the difference over `iters - 1`: its initialisation is not
an iteration), and the floor."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from common import alternate, spread, write
from gmmcourse.data import simulate_mixture
from gmmcourse.em import em


def main(n: int = 1_000_000, k: int = 3, iters: int = 30, rounds: int = 7) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x, _ = simulate_mixture(jax.random.key(0), n, np.array([0.5, 0.3, 0.2]), np.array([-4.0, 0.0, 5.0]), np.array([1.0, 0.7, 1.5]))
    x = np.asarray(x, np.float64)

    def ours():
        return em(x, k, restarts=1, max_iter=iters, tol=0.0, dtype=np.float64)

    def sk(m: int):
        GaussianMixture(k, covariance_type="spherical", max_iter=m, tol=0.0, n_init=1,
                        init_params="random_from_data", random_state=0).fit(x[:, None])

    fit = ours()  # compile
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # the floor: K*N exponentials and N logarithms in float64, what any E-step must do
        xs = jnp.asarray(x)
        floor = jax.jit(lambda a: jnp.sum(jnp.log(jnp.sum(jnp.exp(-0.5 * (a[None, :] - jnp.arange(k, dtype=a.dtype)[:, None]) ** 2), 0))))
        floor(xs).block_until_ready()
        a = alternate({"ours": ours, "sklearn_iters": lambda: sk(iters), "sklearn_one": lambda: sk(1),
                       "floor": lambda: floor(xs).block_until_ready()}, rounds)
    t = a.pop("times_s")
    ours_per_iter = [v / fit.n_iter for v in t["ours"]]
    sk_per_iter = [(m - one) / (iters - 1) for m, one in zip(t["sklearn_iters"], t["sklearn_one"])]
    speedup = spread([s / o for s, o in zip(sk_per_iter, ours_per_iter)])
    to_floor = spread([o / f for o, f in zip(ours_per_iter, t["floor"])])
    result = {
        "n": n, "k": k, "dtype": "float64", "rounds": rounds,
        "ours_s_per_iter": float(np.median(ours_per_iter)), "sklearn_s_per_iter": float(np.median(sk_per_iter)),
        "exp_log_floor_s": float(np.median(t["floor"])),
        "speedup_vs_sklearn": speedup["median"], "speedup_spread": speedup,
        "ratio_to_floor": to_floor["median"], "ratio_to_floor_spread": to_floor,
        "basis": f"per-round ratios of the {rounds} alternated rounds, median (spread: quartiles and extremes)",
        "times_s": t,
        "goal": "speedup >= 12x; stretch: ratio_to_floor <= 3",
    }
    write("em", result)
    return result


if __name__ == "__main__":
    t0 = time.perf_counter()
    r = main()
    print({k: v for k, v in r.items() if k != "times_s"}, f"{time.perf_counter() - t0:.0f} s")
