"""Importance sampling from the prior (consistent, but ESS ~ 1 on real data) and model selection."""

import jax.numpy as jnp
import numpy as np

from gmmcourse import BENTO_PRIOR, BENTO_WEIGHTS, COFFEE_CAFFEINE, GMMPrior, importance_sampling
from gmmcourse.exact import exact_posterior
from gmmcourse.importance import effective_sample_size
from gmmcourse.selection import bic, bic_table, loo_table, pointwise_log_likelihood


def test_ess_formula():
    assert abs(effective_sample_size(np.zeros(50)) - 50) < 1e-3
    assert abs(effective_sample_size(np.array([0.0, -np.inf, -np.inf])) - 1) < 1e-6


def test_is_is_consistent_on_tiny_data():
    """With a prior close to the data, IS estimates log p(x) near the exact value."""
    x = np.array([-1.0, 1.2])
    prior = GMMPrior(jnp.array([0.0, 0.0]), 1.0)
    exact = exact_posterior(x, prior)
    res = importance_sampling(x, prior, num_particles=200_000, seed=1)
    # relative MC error of the mean weight is sqrt(P / ESS - 1) / sqrt(P) ~ 1/sqrt(ESS)
    assert res.ess > 1000
    assert abs(res.log_marginal - exact.log_marginal) < 5 / np.sqrt(res.ess) + 1e-3


def test_is_collapses_on_bentos():
    res = importance_sampling(BENTO_WEIGHTS, BENTO_PRIOR, num_particles=20_000, seed=0)
    assert res.ess < 10 and res.max_weight > 0.3
    assert res.log_weights.shape == (20_000,) and res.means.shape == (20_000, 2)


def test_bic_picks_two_bentos_and_three_blends():
    t = bic_table(BENTO_WEIGHTS, 4)
    assert t["bic"].idxmin() == 2
    assert np.isclose(t.loc[2, "bic"], bic(t.loc[2, "log_likelihood"], 2, 20))
    assert bic_table(COFFEE_CAFFEINE, 5)["bic"].idxmin() == 3


def test_loo_prefers_the_true_number_of_components():
    t = loo_table(COFFEE_CAFFEINE, 4, loc=125.0, scale=37.5, num_samples=500)
    assert t["elpd_loo"].idxmax() == 3
    assert t.loc[1, "delta_elpd"] > 4 * t.loc[1, "se"]  # K = 1 is decisively worse


def test_pointwise_log_likelihood_by_hand():
    from scipy import stats

    w, m, s = np.array([[0.25, 0.75]]), np.array([[0.0, 3.0]]), np.array([[1.0, 2.0]])
    got = pointwise_log_likelihood([1.0], w, m, s)
    np.testing.assert_allclose(got[0, 0], np.log(0.25 * stats.norm.pdf(1, 0, 1) + 0.75 * stats.norm.pdf(1, 3, 2)))
