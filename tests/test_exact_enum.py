"""The vectorised exact enumeration (`gmmcourse.exact.enumerate_exact`) and what the book
computes with it: evidence, posterior predictive of a new point, sd posteriors."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from gmmcourse.data import BENTO_WEIGHTS
from gmmcourse.exact import enumerate_exact, exact_posterior, exact_predictive, log_evidence, sd_summary
from gmmcourse.models import BENTO_PRIOR, GMMPrior

TINY_X = np.array([-2.1, -1.7, -2.5, 1.9, 2.4, 2.0, 0.3])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_enumeration_agrees_with_the_reference_enumeration(k):
    prior = GMMPrior(jnp.linspace(-2.0, 2.0, k), 1.0) if k > 1 else GMMPrior(jnp.array([0.0]), 2.0)
    ref = exact_posterior(TINY_X, prior)
    new = enumerate_exact(TINY_X, prior)
    np.testing.assert_allclose(new.log_evidence, ref.log_marginal, atol=1e-6)
    np.testing.assert_allclose(new.assignment_probs, ref.assignment_probs, atol=1e-7)


def test_anchor_uses_exchangeability():
    prior = GMMPrior.exchangeable(2, 0.0, 2.0)
    full = enumerate_exact(TINY_X, prior)
    anchored = enumerate_exact(TINY_X, prior, anchor=4)
    ref = exact_posterior(TINY_X, prior)
    np.testing.assert_allclose(anchored.log_evidence, full.log_evidence, atol=1e-10)
    np.testing.assert_allclose(anchored.assignment_probs[:, 1], ref.co_clustering[4], atol=1e-7)
    assert log_evidence(TINY_X, prior) == pytest.approx(full.log_evidence, abs=1e-10)
    with pytest.raises(ValueError):
        enumerate_exact(TINY_X, GMMPrior(jnp.array([0.0, 1.0]), 1.0), anchor=0)


def test_single_point_against_two_dimensional_quadrature():
    x0, prior = 0.7, GMMPrior(jnp.array([0.0]), 1.5)
    # the mean integrates out analytically: x0 | s ~ Normal(0, 1.5^2 + s^2)
    f = lambda s: stats.gamma.pdf(s, 2.0) * stats.norm.pdf(x0, 0, np.sqrt(1.5**2 + s**2))
    val, _ = integrate.quad(f, 0.0, 60, epsabs=0, epsrel=1e-12, limit=200)
    np.testing.assert_allclose(enumerate_exact(np.array([x0]), prior).log_evidence, np.log(val), rtol=1e-6)


def test_three_equal_points_have_infinite_evidence():
    """Gamma(2, 1) on an sd: three coincident points in one component make p(x) infinite
    (the integrand behaves like sd^(2-m) at 0), the singularity the prior removes only for m < 3."""
    assert enumerate_exact(np.array([1.0, 1.0, 1.0]), GMMPrior(jnp.array([0.0]), 1.5)).log_evidence == np.inf
    assert np.isfinite(enumerate_exact(np.array([1.0, 1.0, 2.0]), GMMPrior(jnp.array([0.0]), 1.5)).log_evidence)


def test_predictive_density_integrates_to_one():
    """p(x_new | x) from the ratio of marginal likelihoods is a density in x_new, and its
    classification probabilities sum to one."""
    x = TINY_X[:4]
    prior = GMMPrior(jnp.array([-2.0, 2.0]), 1.0)
    rng = (1e-3, 200.0)
    base = enumerate_exact(x, prior, sd_range=rng).log_evidence
    t = np.linspace(-5.0, 5.0, 481)  # x_new = 3 sinh(t) reaches +-220: the tails are heavy
    grid = 3 * np.sinh(t)
    dens = np.array([np.exp(enumerate_exact(np.append(x, g), prior, sd_range=rng).log_evidence - base) for g in grid])
    assert integrate.simpson(dens * 3 * np.cosh(t), x=t) == pytest.approx(1.0, abs=5e-6)
    pred = exact_predictive(x, grid[260], prior, sd_range=rng)
    assert pred.probs.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.exp(pred.log_density), dens[260], rtol=1e-8)


def test_sd_posterior_summary_against_a_known_density():
    """sd_summary on a Gamma(3, 2) density: mode (a-1)/b, median and mean a/b."""
    u = np.linspace(np.log(1e-3), np.log(40), 150)
    s = np.exp(u)
    mass = stats.gamma.pdf(s, 3, scale=0.5) * s * (u[1] - u[0])
    out = sd_summary(s, mass)
    assert out["mode"] == pytest.approx(1.0, rel=1e-4)
    assert out["median"] == pytest.approx(stats.gamma.median(3, scale=0.5), rel=1e-4)
    assert out["mean"] == pytest.approx(1.5, rel=1e-4)


def test_bento_exact_quantities_are_converged():
    """The book's exact bento numbers do not move when the sd grid is refined."""
    a = int(np.argmax(BENTO_WEIGHTS))
    coarse = enumerate_exact(BENTO_WEIGHTS, BENTO_PRIOR, anchor=a, sd_posterior=True)
    fine = enumerate_exact(BENTO_WEIGHTS, BENTO_PRIOR, anchor=a, sd_posterior=True, grid_spacing=0.05)
    assert coarse.log_evidence == pytest.approx(fine.log_evidence, abs=1e-9)
    for k in range(2):
        c, f = sd_summary(coarse.sd_grid, coarse.sd_mass[k]), sd_summary(fine.sd_grid, fine.sd_mass[k])
        for key in c:
            assert c[key] == pytest.approx(f[key], rel=1e-4)
