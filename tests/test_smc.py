"""Tempered SMC evidence (`gmmcourse.smc`) against the exact evidence from enumeration."""

import numpy as np
import pytest

from conftest import MC_Z
from gmmcourse.data import COFFEE_CAFFEINE
from gmmcourse.exact import log_evidence
from gmmcourse.models import GMMPrior
from gmmcourse.smc import smc_log_evidence, tempering_schedule


def test_schedule_runs_from_prior_to_posterior():
    b = tempering_schedule(50)
    assert b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_smc_evidence_matches_exact(k):
    """Tolerance from the estimator's own spread over 8 independent runs (plus 0.05 nats for
    the small downward bias of the log of an average)."""
    cups = COFFEE_CAFFEINE[:10]
    prior = GMMPrior.exchangeable(k, 125.0, 37.5)
    exact = log_evidence(cups, prior)
    res = smc_log_evidence(cups, prior, num_particles=1000, num_steps=200, num_runs=8, seed=1)
    assert abs(res.log_evidence - exact) <= MC_Z * res.se + 0.05, (res.log_evidence, exact, res.se)
