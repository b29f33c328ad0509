"""Multivariate mixtures (gmmcourse.multivariate): EM against scikit-learn, the collapse guard,
and the Bayesian model's Gibbs sampler checked by simulation-based calibration, against NUTS on
the marginalised model, and against exact enumeration of the labelings of tiny data."""

import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from gmmcourse import multivariate as mv


def _three_blobs(rng, d=3, n=(150, 100, 60), spread=2.0):
    centres = rng.normal(0, spread, (3, d))
    scales = rng.uniform(0.5, 1.5, (3, d))
    return np.concatenate([rng.normal(c, s, (m, d)) for c, s, m in zip(centres, scales, n)])


def _sklearn(x, start, **kw):
    w, m, c = start
    g = GaussianMixture(len(w), covariance_type="full", weights_init=w, means_init=m,
                        precisions_init=np.linalg.inv(c), init_params="random", reg_covar=1e-6, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: scikit-learn warns it did not converge
        g.fit(x)
    o = np.lexsort(g.means_.T[::-1])
    return g.weights_[o], g.means_[o], g.covariances_[o], g


@pytest.mark.parametrize("d", [3, 9])  # 9 > UNROLL_D: the einsum E-step
def test_em_reaches_sklearns_optimum_from_the_same_start(rng, d):
    x = _three_blobs(rng, d)
    start = mv.em(x, 3, key=1, max_iter=1)  # a k-means++ start, one step in
    start = (start.weights, start.means, start.covs)
    fit = mv.em(x, 3, init=start, tol=1e-12, max_iter=2000)
    w, m, c, g = _sklearn(x, start, tol=1e-12, max_iter=2000)
    assert fit.converged and g.converged_
    np.testing.assert_allclose(fit.weights, w, atol=1e-9)
    np.testing.assert_allclose(fit.means, m, atol=1e-8)
    np.testing.assert_allclose(fit.covs, c, atol=1e-8)
    np.testing.assert_allclose(fit.loglik, g.score(x) * len(x), rtol=1e-12)
    np.testing.assert_allclose(mv.log_density(fit, x), g.score_samples(x), atol=1e-9)
    np.testing.assert_allclose(mv.responsibilities(fit, x), g.predict_proba(x)[:, np.lexsort(g.means_.T[::-1])],
                               atol=1e-9)
    np.testing.assert_allclose(mv.bic(fit, len(x)), g.bic(x), rtol=1e-12)
    # step by step, not only at the optimum: 5 steps each from the same start
    fit5 = mv.em(x, 3, init=start, tol=0.0, max_iter=5)
    w5, m5, c5, _ = _sklearn(x, start, tol=0.0, max_iter=5)
    assert fit5.n_iter == 5
    np.testing.assert_allclose(fit5.means, m5, atol=1e-10)
    np.testing.assert_allclose(fit5.covs, c5, atol=1e-10)


def test_em_float32_and_restarts(rng):
    x = _three_blobs(rng, 2)
    f64 = mv.em(x, 3, n_init=3, key=0)
    f32 = mv.em(x, 3, n_init=3, key=0, dtype=np.float32)
    np.testing.assert_allclose(f32.means, f64.means, atol=1e-2)  # float32 stops at its own rounding
    assert not f64.degenerate and f64.n == len(x)


def test_em_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        mv.em(np.zeros((2, 3, 4)), 1)
    with pytest.raises(ValueError, match="NaN"):
        mv.em(np.array([[0.0, np.nan], [1.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="init must have shapes"):
        mv.em(np.zeros((5, 2)), 2, init=(np.ones(2) / 2, np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1))))


def test_collapse_guard(rng):
    """A component started on one point with a tiny covariance collapses onto it: EM's
    likelihood then grows without bound; the fit is flagged, and restarts skip it."""
    x = rng.normal(0, 1, (60, 2))
    good = mv.em(x, 2, key=0)
    assert not good.degenerate and not mv.is_degenerate(good, len(x))
    start = (np.array([0.9, 0.1]), np.stack([x.mean(0), x[7]]), np.stack([np.cov(x.T), 1e-8 * np.eye(2)]))
    bad = mv.em(x, 2, init=start)
    assert bad.loglik > good.loglik  # the trap: a higher likelihood
    assert bad.degenerate and mv.is_degenerate(bad, len(x))
    # a component with a proper spread but the weight of only D = 2 points is flagged too
    thin = mv.MvnFit(np.array([1 - 2 / 60, 2 / 60]), good.means, np.stack([np.eye(2), np.eye(2)]), 0.0, 1, True)
    assert mv.is_degenerate(thin, 60)
    assert not mv.is_degenerate(mv.MvnFit(np.array([0.9, 0.1]), good.means, thin.covs, 0.0, 1, True), 60)
    # a covariance flat along one direction (points on a line) sits at the floor
    flat = np.array([[1.0, 1.0], [1.0, 1.0]]) + 1e-6 * np.eye(2)
    assert mv.is_degenerate(mv.MvnFit(np.array([0.5, 0.5]), good.means, np.stack([np.eye(2), flat]), 0.0, 1, True), 60)
