"""Data recorded to a resolution (`posterior(..., rounding=delta)`, `enumerate_exact(...,
rounding=delta)`): with ties the plain model's posterior is improper; the rounding variance
delta**2 / 12 makes it proper, and the sampler agrees with the exact posterior under it."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import MC_Z
from gmmcourse import GMMPrior, posterior
from gmmcourse.exact import enumerate_exact, log_evidence
from gmmcourse.sweep import sd_log_target

TIED = np.array([-2.0, -2.0, -2.0, -2.3, -1.8, 2.0, 2.0, 2.4, 1.7])
TIED_PRIOR = GMMPrior(jnp.array([-2.0, 2.0]), 1.0)


def log_integral_below(lowest_u, rounding_var, m=8):
    """log of the integral over u = log sd in (lowest_u, 0) of a component on m equal values
    (sum of squares 0) under the Gamma(2, 1) prior: the package's own conditional target."""
    u = np.linspace(lowest_u, 0.0, 200_001)
    f = np.asarray(sd_log_target(jnp.asarray(u), m, 0.0, 2.0, 1.0, rounding_var))
    return float(logsumexp(f) + np.log(u[1] - u[0]))


def test_tied_cluster_integral_diverges_without_rounding_and_converges_with_it():
    c = (1 / 60) ** 2 / 12  # durations recorded to the second, in minutes
    plain = [log_integral_below(lo, 0.0) for lo in (-10.0, -20.0, -40.0)]
    rounded = [log_integral_below(lo, c) for lo in (-10.0, -20.0, -40.0)]
    assert plain[1] > plain[0] + 25 and plain[2] > plain[1] + 50  # grows like e^(6 |u|): no bound
    assert rounded[2] == pytest.approx(rounded[1], abs=1e-4)  # the tail below sd = e^-20 adds nothing
    assert np.isfinite(rounded[2])


def test_exact_evidence_infinite_with_ties_finite_with_rounding():
    prior = GMMPrior.exchangeable(2, 0.0, 3.0)
    assert log_evidence(TIED, prior) == np.inf  # three equal values: p(x | K = 2) unbounded
    finite = log_evidence(TIED, prior, rounding=1 / 60)
    assert np.isfinite(finite)
    # without ties the rounding correction is tiny and the plain evidence finite
    untied = TIED + np.arange(TIED.size) * 1e-2
    assert log_evidence(untied, prior, rounding=1e-3) == pytest.approx(log_evidence(untied, prior), abs=1e-3)


def test_gibbs_with_rounding_matches_exact_posterior():
    """Rounding 2 (variance 1/3) on tight tied clusters changes the sds' posterior a lot;
    the sampler's posterior means of the sds agree with the exact ones under it."""
    import arviz as az

    ex = enumerate_exact(TIED, TIED_PRIOR, sd_posterior=True, rounding=2.0)
    exact_sds = ex.sd_mass @ ex.sd_grid / ex.sd_mass.sum(1)
    plain = enumerate_exact(TIED + np.arange(TIED.size) * 1e-3, TIED_PRIOR, sd_posterior=True)
    plain_sds = plain.sd_mass @ plain.sd_grid / plain.sd_mass.sum(1)
    assert np.all(np.abs(exact_sds - plain_sds) > 0.05)  # the test has power: rounding matters here
    post = posterior(TIED, 2, prior=TIED_PRIOR, num_chains=4, num_samples=2000, seed=3, dtype=np.float64,
                     rounding=2.0)
    assert post.rounding == 2.0
    mcse = np.asarray(az.mcse(post.sds))
    err = np.abs(post.sds.mean((0, 1)) - exact_sds)
    assert np.all(err <= MC_Z * mcse), (post.sds.mean((0, 1)), exact_sds, mcse)
    # the assignment probabilities use the recorded values' variance too
    np.testing.assert_allclose(post.assignment_probs, ex.assignment_probs, atol=0.02)


def test_rounding_refuses_a_negative_resolution():
    with pytest.raises(ValueError, match="rounding must be a non-negative number"):
        posterior(TIED, 2, rounding=-1.0)
