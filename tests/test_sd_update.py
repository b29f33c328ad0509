"""The sd update of the Gibbs sampler (`sweep.update_params`, `sweep.sd_proposal`).

The earlier sd step (independence MH with the flat-prior conditional as proposal) stalled
when the data pulled an sd into the tail of its Gamma prior: one Gaussian for both bento
recipes gave R-hat ~1.8. These tests would have caught it: the K = 1 bento posterior must
mix (R-hat < 1.01 over several seeds) and its sd moments must match quadrature, and the sd
step alone must leave its exact conditional invariant.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from conftest import mc_close
from gmmcourse import BENTO_WEIGHTS, GMMPrior, posterior
from gmmcourse.exact import enumerate_exact
from gmmcourse.sweep import sd_proposal, update_params
from gmmcourse.models import as_prior, bento_prior
from gmmcourse.precision import x64_context

K1_PRIOR = bento_prior(1)  # the bento prior with one component


@pytest.mark.parametrize("n,ss", [(1, 0.3), (1, 5e3), (2, 1e-4), (5, 40.0), (20, 1.1e5), (300, 7.0), (1000, 1e8)])
def test_sd_proposal_centre_is_the_conditional_mode(n, ss):
    """The Newton iteration solves b s^3 + (n - a) s^2 = ss (the mode in log sd)."""
    a, b = 2.0, 1.0
    with x64_context(np.float64):
        u, scale = sd_proposal(jnp.array([float(n)]), jnp.array([ss]), a, b)
    s = float(np.exp(u[0]))
    assert b * s**3 + (n - a) * s**2 == pytest.approx(ss, rel=1e-9)
    assert float(scale[0]) == pytest.approx(1 / np.sqrt(b * s + 2 * ss / s**2), rel=1e-9)


def _conditional_cdf(n, q, a, b):
    """CDF of p(s) ∝ s^(a-1-n) exp(-b s - q / (2 s^2)) on a fine log grid (quadrature)."""
    u = np.linspace(np.log(1e-3), np.log(1e3), 200_001)
    s = np.exp(u)
    logp = (a - n) * u - b * s - q / (2 * s**2)
    p = np.exp(logp - logsumexp(logp))
    return lambda v: np.interp(np.log(v), u, np.cumsum(p))


@pytest.mark.parametrize("n,spread", [(1, 1.0), (3, 0.2), (20, 74.5), (50, 4.0)])
def test_sd_step_leaves_its_conditional_invariant(n, spread):
    """With the mean pinned (prior scale 1e-6 at loc 0), iterating `update_params` is a
    Markov chain on the sd alone whose stationary law is the sd's exact conditional; its
    thinned draws pass a Kolmogorov-Smirnov test against quadrature. Case n = 20, spread
    74.5 is the K = 1 bento fit."""
    x = np.random.default_rng(n).normal(0, spread, n)
    q = float(np.sum(x**2))
    with x64_context(np.float64):
        prior = as_prior(GMMPrior(jnp.array([0.0]), 1e-6), jnp.float64)
        xj, z = jnp.asarray(x), jnp.zeros(n, jnp.int32)

        def step(sds, key):
            _, _, sds = update_params(key, xj, z, sds, prior, num_mh=1)
            return sds, sds[0]

        keys = jax.random.split(jax.random.key(n), 20_000)
        _, draws = jax.lax.scan(step, jnp.array([10.0 * spread]), keys)
    draws = np.asarray(draws)[1000::10]  # thinned: nearly independent draws
    pval = stats.kstest(draws, _conditional_cdf(n, q, 2.0, 1.0)).pvalue
    assert pval > 1e-4, (n, spread, pval)
    accept = np.mean(np.diff(np.asarray(draws)) != 0)
    assert accept > 0.5  # the Laplace proposal is close to the conditional


def test_sd_step_test_has_power():
    """The KS check above rejects 1,900 draws from a slightly wrong conditional: shape a + 1,
    the error of forgetting the Jacobian of u = log sd (n = 3 points)."""
    rng = np.random.default_rng(0)
    x = np.random.default_rng(3).normal(0, 0.2, 3)
    q = float(np.sum(x**2))
    grid = np.exp(np.linspace(np.log(1e-3), np.log(1e3), 200_001))
    cdf_wrong = _conditional_cdf(3, q, 3.0, 1.0)(grid)
    draws = np.interp(rng.uniform(size=1900), cdf_wrong, grid)  # inverse-CDF draws
    assert stats.kstest(draws, _conditional_cdf(3, q, 2.0, 1.0)).pvalue < 1e-4


@pytest.fixture(scope="module")
def k1_exact():
    ex = enumerate_exact(BENTO_WEIGHTS, K1_PRIOR, sd_posterior=True)
    mass = ex.sd_mass[0] / ex.sd_mass[0].sum()
    mean = float(mass @ ex.sd_grid)
    return mean, float(np.sqrt(mass @ (ex.sd_grid - mean) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_gaussian_for_the_bentos_mixes(seed, k1_exact):
    """K = 1 on the bentos: the sd sits at ~43 g, deep in the Gamma(2, 1) prior's tail.
    R-hat < 1.01 and the sd's posterior mean and sd agree with quadrature within MCSE."""
    post = posterior(BENTO_WEIGHTS, 1, prior=K1_PRIOR, num_chains=4, num_samples=1000, seed=seed,
                     dtype=np.float64)
    sds = post.sds[..., 0]
    assert float(az.rhat(sds)) < 1.01
    assert float(az.rhat(post.means[..., 0])) < 1.01
    assert float(az.ess(sds)) > 1000
    mean, sd = k1_exact
    mc_close(sds.mean(), mean, float(az.mcse(sds)))
    mc_close(sds.std(), sd, float(az.mcse(sds, method="sd")))
