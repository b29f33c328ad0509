"""Model selection that cannot be fooled: degenerate EM fits never win BIC, for any seed."""

import numpy as np
import pytest

from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
from gmmcourse.em import EMResult
from gmmcourse.selection import bic, bic_table, is_degenerate, loo_table


def _fit(weights, sds):
    k = len(weights)
    return EMResult(np.asarray(weights), np.arange(k, dtype=float), np.asarray(sds), 0.0, 1, True, np.zeros(1))


def test_degenerate_fits_are_recognised():
    assert is_degenerate(_fit([0.5, 0.5], [1e-3, 5.0]), n=30, data_sd=30.0)  # sd at the floor
    assert is_degenerate(_fit([0.96, 0.04], [5.0, 5.0]), n=30, data_sd=30.0)  # 1.2 points' worth
    assert not is_degenerate(_fit([0.5, 0.5], [2.0, 5.0]), n=30, data_sd=30.0)


@pytest.mark.parametrize("seed", range(20))
def test_bic_choice_does_not_depend_on_the_seed(seed):
    coffee = bic_table(COFFEE_CAFFEINE, 5, seed=seed)
    assert coffee["bic"].idxmin() == 3 and coffee.loc[3, "chosen"]
    assert bic_table(BENTO_WEIGHTS, 5, seed=seed)["bic"].idxmin() == 2
    # the winner is never a degenerate fit, and every row says how many runs were degenerate
    assert coffee["min_sd"].min() >= 0.01 * COFFEE_CAFFEINE.std()
    assert (coffee["n_degenerate"] >= 0).all()


def test_bic_choice_with_many_restarts():
    t = bic_table(COFFEE_CAFFEINE, 5, seed=0, restarts=200)
    assert t["bic"].idxmin() == 3
    assert np.isclose(t.loc[3, "bic"], bic(t.loc[3, "log_likelihood"], 3, 30))


def test_plain_bic_falls_into_the_trap():
    """Without the degeneracy rule (BIC of the highest-likelihood run), some seeds choose more
    than three blends: the test above would have caught the old bic_table."""
    chosen = []
    for seed in range(20):
        t = bic_table(COFFEE_CAFFEINE, 5, seed=seed)
        plain = -2 * t["log_likelihood_any"] + t["n_params"] * np.log(30)
        chosen.append(int(plain.idxmin()))
    assert max(chosen) > 3


def test_loo_table_reports_paired_differences_and_r_hat():
    t = loo_table(COFFEE_CAFFEINE, 3, loc=125.0, scale=37.5, num_samples=300)
    np.testing.assert_allclose(t["elpd_diff"], -t["delta_elpd"], atol=1e-9)  # ArviZ: this K minus the best
    best = t["elpd_loo"].idxmax()
    assert t.loc[best, "dse"] == 0
    others = t.index.drop(best)
    assert np.all(np.isfinite(t.loc[others, "dse"])) and np.all(t.loc[others, "dse"] > 0)
    assert t.loc[1, "elpd_diff"] < -4 * t.loc[1, "dse"]  # one blend is decisively worse
    assert t.loc[best, "max_r_hat"] < 1.05 and np.all(np.isfinite(t["max_r_hat"]))
