"""The numbers glued into the DP mixture chapter (chapters/dpmm.md), checked against the
package's exact values and their own Monte Carlo errors, and the claims the prose makes
about them."""

from __future__ import annotations

import pytest

from conftest import MC_Z, glued, mc_close
from gmmcourse import dpmm
from gmmcourse.data import COFFEE_CAFFEINE
from gmmcourse.dpmm import DPPrior

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def g():
    return glued("dpmm")


def test_restaurant_numbers(g):
    for alpha in ("0_5", "1_0", "5_0"):
        exact = dpmm.expected_clusters(30, float(alpha.replace("_", ".")))
        assert g[f"dpmm_ek_{alpha}"] == pytest.approx(exact, rel=1e-12)
        mc_close(g[f"dpmm_ek_sim_{alpha}"], exact, g[f"dpmm_ek_mcse_{alpha}"], what=f"alpha {alpha}")
    assert dpmm.truncation_bound(272, 1.0, int(g["dpmm_k_enough"])) < 1e-3
    assert dpmm.truncation_bound(272, 1.0, int(g["dpmm_k_enough"]) - 1) >= 1e-3


def test_exact_cups_and_the_samplers_agreement(g):
    exact = dpmm.exact_posterior(COFFEE_CAFFEINE[:10], DPPrior.for_data(COFFEE_CAFFEINE, alpha=1.0))
    assert g["dpmm_exact_k3"] == pytest.approx(exact.num_clusters[3], rel=1e-9)
    assert g["dpmm_exact_k4"] == pytest.approx(exact.num_clusters[4], rel=1e-9)
    assert g["dpmm_worst_z"] < MC_Z, "the page says the samplers agree with the exact answer"
    assert g["dpmm_worst_rhat"] < 1.01


def test_course_data_claims(g):
    """'The bentos and the coffee come out as the seed's two recipes and three blends.'"""
    assert g["dpmm_bento_mode"] == 2 and g["dpmm_coffee_mode"] == 3
    assert g["dpmm_faithful_mode"] > 2
    assert g["dpmm_course_rhat"] < 1.01


def test_pitfall_claims(g):
    """The DP's probability of three clusters falls as n grows and its mean number rises;
    the MFM's stays higher at every n the page shows."""
    dp = [g[f"dpmm_pit_dp_p3_{n}"] for n in (10, 25, 50, 100)]
    ek = [g[f"dpmm_pit_dp_ek_{n}"] for n in (10, 25, 50, 100)]
    assert dp == sorted(dp, reverse=True) and ek == sorted(ek)
    for n in (10, 25, 50):
        assert g[f"dpmm_pit_mfm_p3_{n}"] > g[f"dpmm_pit_dp_p3_{n}"]
    assert g["dpmm_pit_rhat"] < 1.01


def test_exercise_answers(g):
    assert g["dpmm_ex1"] == 0.5
    assert g["dpmm_ex2_h"] == pytest.approx(sum(1 / i for i in range(1, 273)))
    prior = DPPrior.for_data(COFFEE_CAFFEINE, alpha=1.0)
    for a in (0.1, 1.0, 10.0):
        want = dpmm.exact_posterior(COFFEE_CAFFEINE[:10], prior._replace(alpha=a)).num_clusters[3]
        assert g[f"dpmm_ex3_{str(a).replace('.', '_')}"] == pytest.approx(want, rel=1e-9)
