"""Tempered SMC evidence (`gmmcourse.smc`) against the exact evidence from enumeration."""

import numpy as np
import pytest

from conftest import MC_Z
from gmmcourse.data import COFFEE_CAFFEINE
from gmmcourse.exact import exact_posterior, log_evidence
from gmmcourse.models import GMMPrior, coffee_prior
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
    prior = coffee_prior(k)
    exact = log_evidence(CUPS, prior)
    res = smc_log_evidence(CUPS, prior, seed=100 + k, **BOOK)
    assert abs(res.log_evidence - exact) <= MC_Z * res.se + 0.05, (res.log_evidence, exact, res.se)
    assert np.all(res.min_ess > 1)


@pytest.mark.slow
def test_smc_evidence_check_has_power():
    """The check above rejects a sampler that targets another model: SMC run, with the
    book's settings, on the prior with mean scale 15 instead of 37.5 (exact log evidence
    1.9 nats lower; about 0.1 nats of standard error) is many of its own standard errors
    away from the exact evidence of the right prior (and matches its own)."""
    right = log_evidence(CUPS, coffee_prior(2))
    wrong_prior = GMMPrior.exchangeable(2, 125.0, 15.0)
    res = smc_log_evidence(CUPS, wrong_prior, seed=202, **BOOK)
    assert abs(res.log_evidence - log_evidence(CUPS, wrong_prior)) <= MC_Z * res.se + 0.05
    assert abs(res.log_evidence - right) > MC_Z * res.se + 0.05, (res.log_evidence, right, res.se)


def _p_k(runs_by_k: np.ndarray) -> np.ndarray:
    """P(K | x) from runs' log evidence (runs, K) under a uniform prior on K, as the book
    computes it: each K's evidence is the average of its runs'."""
    z = np.exp(runs_by_k - runs_by_k.max())
    return z.mean(0) / z.mean(0).sum()


@pytest.mark.slow
def test_smc_posterior_over_k_matches_exact():
    """P(K | x) from the book's settings (8 runs per K; K = 3 and 4 hold all but 1e-6 of
    the mass), in 8 independent replications with other seeds than the book's: their
    average is within MC_Z Monte Carlo standard errors (measured from the replications'
    spread) of the exact P(K = 3 | x) = 0.43, and the book's delta-method standard error
    of one replication agrees with that spread."""
    ks, reps = (3, 4), 8
    exact = np.array([log_evidence(CUPS, coffee_prior(k)) for k in ks])
    exact_p = _p_k(exact[None, :])[0]
    p3, delta_se = [], []
    for r in range(reps):
        res = [smc_log_evidence(CUPS, coffee_prior(k), seed=1000 + 10 * r + k, **BOOK)
               for k in ks]
        p = _p_k(np.stack([x.runs for x in res], axis=1))[0]
        p3.append(p)
        delta_se.append(p * (1 - p) * np.hypot(res[0].se, res[1].se))  # the book's se of P(K = 3)
    p3 = np.array(p3)
    sd = np.std(p3, ddof=1)  # Monte Carlo error of one replication: the book's P(K = 3 | x)
    mcse = sd / np.sqrt(reps)
    assert 0.01 < sd < 0.2, sd
    assert abs(p3.mean() - exact_p) <= MC_Z * mcse, (p3.mean(), exact_p, mcse)
    # chi-square with 7 degrees of freedom: a ratio outside [0.4, 2.5] has probability < 1 %
    assert 0.4 < np.median(delta_se) / sd < 2.5, (np.median(delta_se), sd)


@pytest.mark.slow
def test_smc_particles_weigh_both_modes():
    """The final weighted particles estimate the exact co-clustering of the bimodal K = 2
    posterior (where Gibbs chains get stuck) within their spread over runs."""
    prior = coffee_prior(2)
    exact = exact_posterior(CUPS, prior).co_clustering
    res = smc_log_evidence(CUPS, prior, seed=7, **BOOK)
    co, se = smc_co_clustering(res)
    assert res.assignments.shape == (8, 250, 10) and res.log_weights.shape == (8, 250)
    np.testing.assert_allclose(np.diag(co), 1.0)
    assert np.all(np.abs(co - exact) <= MC_Z * se + 0.02), np.max(np.abs(co - exact))
    lo, mid = int(np.argmin(CUPS)), int(np.argmin(np.abs(CUPS - 120)))
    assert 0.1 < co[lo, mid] < 0.5  # both modes are held: neither 0 nor 1
