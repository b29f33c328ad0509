"""The Old Faithful data and the label-free posterior summaries (`summaries.co_clustering`,
`summaries.predictive_density`, `summaries.draw_assignment_probs`) against exact answers."""

import arviz as az
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import MC_Z, mc_close
from gmmcourse import GMMPrior, posterior
from gmmcourse.data import FAITHFUL_ERUPTIONS
from gmmcourse.exact import exact_posterior, exact_predictive
from gmmcourse.summaries import co_clustering, draw_assignment_probs, predictive_density

TINY_X = np.array([-2.1, -1.7, -2.5, 1.9, 2.4, 2.0, 0.3])
TINY_PRIOR = GMMPrior(jnp.array([-2.0, 2.0]), 1.0)


def test_faithful_matches_r_summary():
    """R: summary(faithful$eruptions) and sd(): 1.600 2.163 4.000 3.488 4.454 5.100; 1.141371."""
    x = FAITHFUL_ERUPTIONS
    assert x.shape == (272,) and not x.flags.writeable
    assert x[:6].tolist() == [3.6, 1.8, 3.333, 2.283, 4.533, 2.883]
    assert x.min() == 1.6 and x.max() == 5.1 and np.median(x) == 4.0
    assert round(float(np.mean(x)), 6) == 3.487783
    assert round(float(np.std(x, ddof=1)), 6) == 1.141371
    q = np.quantile(x, [0.25, 0.75])  # R's default type 7 = numpy's default
    np.testing.assert_allclose(q, [2.16275, 4.45425])


@pytest.fixture(scope="module")
def tiny_post():
    return posterior(TINY_X, 2, prior=TINY_PRIOR, num_chains=4, num_samples=4000, seed=3,
                     dtype=np.float64)


def test_co_clustering_matches_exact(tiny_post):
    post = tiny_post
    exact = exact_posterior(TINY_X, TINY_PRIOR).co_clustering
    co = co_clustering(TINY_X, post)
    np.testing.assert_allclose(np.diag(co), 1.0)
    np.testing.assert_allclose(co, co.T, atol=1e-12)
    p = draw_assignment_probs(TINY_X, post, raw=True)
    for i in range(len(TINY_X)):
        for j in range(i + 1, len(TINY_X)):
            per_draw = np.sum(p[..., i, :] * p[..., j, :], axis=-1)
            mc_close(co[i, j], exact[i, j], float(az.mcse(per_draw)), floor=1e-3)


def test_assignment_probs_per_draw_average_to_the_posterior_ones(tiny_post):
    post = tiny_post
    p = draw_assignment_probs(TINY_X, post)
    exact = exact_posterior(TINY_X, TINY_PRIOR).assignment_probs
    se = np.asarray(az.mcse(p))  # (N, K)
    mc_close(p.mean((0, 1)), exact, se, floor=1e-3)


def test_predictive_density_matches_exact(tiny_post):
    post = tiny_post
    grid = np.array([-2.0, 0.3, 1.0])
    dens = predictive_density(post, grid, interval=0.9)
    assert np.all(dens["lo"] <= dens["mean"]) and np.all(dens["mean"] <= dens["hi"])
    se = np.asarray(az.mcse(dens["draws"]))
    for g, m, s in zip(grid, dens["mean"], se):
        exact = np.exp(exact_predictive(TINY_X, float(g), TINY_PRIOR).log_density)
        assert abs(m - exact) <= MC_Z * s + 1e-4, (g, m, exact, s)
    # a proper density: integrates to 1 over a wide grid
    wide = np.linspace(-30, 30, 6001)
    assert abs(np.trapezoid(predictive_density(post, wide)["mean"], wide) - 1) < 1e-3
