"""Tempered SMC evidence (`gmmcourse.smc`) against the exact evidence from enumeration."""

import numpy as np
import pytest

from conftest import MC_Z
from gmmcourse.data import COFFEE_CAFFEINE
from gmmcourse.exact import exact_posterior, log_evidence
from gmmcourse.models import GMMPrior
from gmmcourse.smc import smc_co_clustering, smc_log_evidence, tempering_schedule

CUPS = COFFEE_CAFFEINE[:10]
BOOK = dict(num_particles=250, num_steps=60, num_runs=8)  # the settings of the book's table


def test_schedule_runs_from_prior_to_posterior():
    b = tempering_schedule(50)
    assert b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_smc_evidence_matches_exact(k):
    """The book's settings, on other seeds than the book's. Tolerance from the estimator's
    own spread over 8 independent runs (plus 0.05 nats for the small downward bias of the
    log of an average)."""
    prior = GMMPrior.exchangeable(k, 125.0, 37.5)
    exact = log_evidence(CUPS, prior)
    res = smc_log_evidence(CUPS, prior, seed=100 + k, **BOOK)
    assert abs(res.log_evidence - exact) <= MC_Z * res.se + 0.05, (res.log_evidence, exact, res.se)
    assert np.all(res.min_ess > 1)


def test_smc_test_has_power():
    """The check above fails for the evidence of another prior (mean scale 20 instead of
    37.5): a wrong target is many standard errors away."""
    wrong = log_evidence(CUPS, GMMPrior.exchangeable(2, 125.0, 20.0))
    right = log_evidence(CUPS, GMMPrior.exchangeable(2, 125.0, 37.5))
    assert abs(wrong - right) > MC_Z * 0.1 + 0.05  # 0.1: the largest se of the book's runs at K = 2


@pytest.mark.slow
def test_smc_particles_weigh_both_modes():
    """The final weighted particles estimate the exact co-clustering of the bimodal K = 2
    posterior (where Gibbs chains get stuck) within their spread over runs."""
    prior = GMMPrior.exchangeable(2, 125.0, 37.5)
    exact = exact_posterior(CUPS, prior).co_clustering
    res = smc_log_evidence(CUPS, prior, seed=7, **BOOK)
    co, se = smc_co_clustering(res)
    assert res.assignments.shape == (8, 250, 10) and res.log_weights.shape == (8, 250)
    np.testing.assert_allclose(np.diag(co), 1.0)
    assert np.all(np.abs(co - exact) <= MC_Z * se + 0.02), np.max(np.abs(co - exact))
    lo, mid = int(np.argmin(CUPS)), int(np.argmin(np.abs(CUPS - 120)))
    assert 0.1 < co[lo, mid] < 0.5  # both modes are held: neither 0 nor 1
