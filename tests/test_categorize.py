"""categorize: Bayes' rule with known parameters, by hand, by enumeration, at extremes."""

import jax
import numpy as np
from genjax import const
from scipy import stats

from gmmcourse import BENTO_TRUE, categorize
from gmmcourse.categorize import log_predictive
from gmmcourse.models import bento_model


def test_hand_computation():
    w, m, s = BENTO_TRUE
    x = np.array([351.0, 499.0, 420.0])
    num = w[:, None] * stats.norm.pdf(x[None, :], m[:, None], s[:, None])
    expected = (num / num.sum(0)).T
    np.testing.assert_allclose(categorize(x, w, m, s), expected, rtol=1e-5, atol=1e-12)


def test_matches_enumeration_with_genjax_model():
    """P(z_i = k | x) from enumerating z in the GenJAX bento model's joint density."""
    x = np.array([349.0, 503.0, 424.0, 426.0, 425.0])
    logp = np.empty((2, x.size))
    for i, xi in enumerate(x):
        for k in range(2):
            z = np.zeros(1, np.int32) + k
            lp, _ = bento_model.assess({"bentos": {"z": z, "x": np.array([xi])}}, const(1))
            logp[k, i] = lp
    probs = np.exp(logp - np.logaddexp(logp[0], logp[1]))
    np.testing.assert_allclose(categorize(x, *BENTO_TRUE), probs.T, rtol=1e-4, atol=1e-30)


def test_midpoint_is_set_by_weights_when_sds_equal():
    p = categorize([425.0], *BENTO_TRUE)
    np.testing.assert_allclose(p[0], [0.7, 0.3], rtol=1e-5)


def test_stable_far_from_all_components():
    w, m = [0.7, 0.3], [500.0, 350.0]
    # unequal sds: 425 g is 37.5 sds from 500 (sd 2) but 25 sds from 350 (sd 3); direct
    # computation underflows to 0/0, log space gives the exact answer
    p = np.asarray(categorize([425.0, 1e4, -1e4], w, m, [2.0, 3.0]))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1)
    log_ratio = np.log(0.3) + stats.norm.logpdf(425, 350, 3) - np.log(0.7) - stats.norm.logpdf(425, 500, 2)
    np.testing.assert_allclose(p[0, 1], 1 / (1 + np.exp(-log_ratio)), rtol=1e-6)
    # far away on either side the wider component wins: the tails decide, not the means
    assert p[1, 1] > 0.999 and p[2, 1] > 0.999
    lpd = np.asarray(log_predictive([425.0], *BENTO_TRUE))
    assert lpd[0] < -600  # an outlier: hundreds of nats below a typical bento


def test_output_shape_and_float32_input():
    p = categorize(np.array([1.0, 2.0, 3.0], np.float32), [0.2, 0.3, 0.5], [0.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert p.shape == (3, 3)


def test_jit_compatible_internals():
    from gmmcourse.categorize import log_joint_by_component

    out = jax.jit(log_joint_by_component)(np.zeros(4), np.array([0.5, 0.5]), np.zeros(2), np.ones(2))
    assert out.shape == (2, 4)
