"""Model selection that cannot be fooled: collapsed and duplicated EM fits never win BIC, for
any seed, and genuine fits are never thrown out."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
from gmmcourse.em import EMResult, em
from gmmcourse.selection import REG_VAR, bic, bic_table, is_degenerate, is_duplicated, loo_table


def _fit(weights, sds, means=None):
    k = len(weights)
    means = np.arange(k, dtype=float) if means is None else np.asarray(means, dtype=float)
    return EMResult(np.asarray(weights), means, np.asarray(sds), 0.0, 1, True, np.zeros(1))


def _sklearn_log_likelihood(x, k):
    """The best maximum of scikit-learn's EM, run to convergence: an independent implementation."""
    gm = GaussianMixture(k, n_init=10, tol=1e-10, max_iter=2000, reg_covar=REG_VAR, random_state=0)
    gm.fit(x.reshape(-1, 1))
    return gm.score(x.reshape(-1, 1)) * len(x), gm


def test_degenerate_fits_are_recognised():
    assert is_degenerate(_fit([0.5, 0.5], [1e-3, 5.0]), n=30)  # sd at the floor (variance 1e-6)
    assert is_degenerate(_fit([0.96, 0.04], [5.0, 5.0]), n=30)  # 1.2 points' worth
    assert not is_degenerate(_fit([0.5, 0.5], [0.05, 5.0]), n=30)  # small, but far above the floor
    assert is_degenerate(_fit([0.5, 0.5], [0.05, 5.0]), n=30, reg_var=0.002)  # the floor decides


def test_a_genuine_bento_fit_with_a_small_sd_is_not_degenerate():
    """The K = 3 maximum on the bentos splits the hamburgers into 4.3 and 3.7 points with sds of
    1.3 and 0.7 g: small next to the data's sd (73 g, the spread between the kinds), but a fit."""
    fit = em(BENTO_WEIGHTS, 3, restarts=10)
    assert fit.log_likelihood == pytest.approx(-53.093, abs=1e-3)
    assert fit.sds.min() < 0.01 * BENTO_WEIGHTS.std()  # what the old rule threw out
    assert not is_degenerate(fit, len(BENTO_WEIGHTS)) and not is_duplicated(fit, BENTO_WEIGHTS)


def _split(fit, c, eps):
    """`fit` with component c split into two copies of half its weight, means apart by 2 eps."""
    w, m, s = (np.asarray(a, dtype=float) for a in (fit.weights, fit.means, fit.sds))
    return _fit(np.r_[w, w[c] / 2] * np.r_[np.where(np.arange(len(w)) == c, 0.5, 1.0), 1.0],
                np.r_[s, s[c]], np.r_[m + np.where(np.arange(len(w)) == c, -eps, 0.0), m[c] + eps])


@pytest.mark.parametrize("x, k", [(BENTO_WEIGHTS, 2), (COFFEE_CAFFEINE, 3)])
def test_duplicated_components_are_recognised(x, k):
    fit = em(x, k, restarts=10)
    assert not is_duplicated(fit, x)
    for c in range(k):
        assert is_duplicated(_split(fit, c, eps=0.01 * fit.sds[c]), x)  # a saddle EM can stop at
    # the K + 1 maximum splits a group into two genuinely different components: not one
    bigger = em(x, k + 1, restarts=10)
    assert not is_duplicated(bigger, x) and not is_degenerate(bigger, len(x))


def test_bento_table_keeps_the_genuine_k3_maximum():
    """K = 3 is the genuine maximum (-53.09, checked against scikit-learn run to convergence),
    not the duplicated-component saddle at the K = 2 log-likelihood (-54.24); K = 4 and 5 have
    no fit of their own in ten starts (every run repeats a component or collapses)."""
    x, n = BENTO_WEIGHTS, len(BENTO_WEIGHTS)
    t = bic_table(x, 5)
    ll2, _ = _sklearn_log_likelihood(x, 2)
    ll3, gm3 = _sklearn_log_likelihood(x, 3)
    assert np.sort(gm3.weights_ * n).min() > 3  # scikit-learn's K = 3 maximum is a genuine one
    np.testing.assert_allclose(t.loc[[2, 3], "log_likelihood"], [ll2, ll3], atol=1e-4)
    assert t["bic"].idxmin() == 2
    assert t.loc[3, "delta_bic"] == pytest.approx(bic(ll3, 3, n) - bic(ll2, 2, n), abs=1e-3)
    assert t.loc[3, "delta_bic"] == pytest.approx(6.70, abs=0.005)
    for k in (4, 5):
        assert np.isnan(t.loc[k, "bic"]) and t.loc[k, "n_degenerate"] + t.loc[k, "n_duplicated"] == 10
    assert t.loc[3, "n_duplicated"] > 0  # the saddle was met and set aside


def test_coffee_table_keeps_genuine_fits_and_sets_aside_duplicates():
    x = COFFEE_CAFFEINE
    t = bic_table(x, 5)
    ll3, _ = _sklearn_log_likelihood(x, 3)
    assert t["bic"].idxmin() == 3
    assert t.loc[3, "log_likelihood"] == pytest.approx(ll3, abs=1e-4)
    # K = 4's fit is a fourth component of its own, above K = 3's log-likelihood
    assert t.loc[4, "log_likelihood"] > t.loc[3, "log_likelihood"] + 0.1
    assert t.loc[4, "n_duplicated"] > 0  # runs that only copied a blend were set aside



@pytest.mark.parametrize("seed", range(20))
def test_bic_choice_does_not_depend_on_the_seed(seed):
    coffee = bic_table(COFFEE_CAFFEINE, 5, seed=seed)
    assert coffee["bic"].idxmin() == 3 and coffee.loc[3, "chosen"]
    assert bic_table(BENTO_WEIGHTS, 5, seed=seed)["bic"].idxmin() == 2
    # no fit in the table is collapsed, and every row says how many runs were set aside
    assert (coffee["min_sd"].dropna() ** 2 > 2 * REG_VAR).all()
    assert (coffee["n_degenerate"] >= 0).all() and (coffee["n_duplicated"] >= 0).all()


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
