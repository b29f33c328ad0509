"""em against scikit-learn's GaussianMixture: same optimum, same log-likelihood."""

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from gmmcourse import BENTO_WEIGHTS, COFFEE_CAFFEINE, em
from gmmcourse.data import simulate_mixture


def sklearn_fit(x, k, seed=0):
    g = GaussianMixture(k, covariance_type="spherical", tol=1e-12, max_iter=20_000, n_init=5,
                        reg_covar=1e-6, random_state=seed).fit(x[:, None])
    order = np.argsort(g.means_.ravel())
    ll = g.score(x[:, None]) * x.size
    return g.weights_[order], g.means_.ravel()[order], np.sqrt(g.covariances_[order]), ll


def synthetic(n, seed=0):
    x, _ = simulate_mixture(jax.random.key(seed), n, np.array([0.5, 0.3, 0.2]), np.array([-4.0, 0.0, 5.0]), np.array([1.0, 0.7, 1.5]))
    return np.asarray(x, np.float64)


@pytest.mark.parametrize(
    "name, x, k",
    [("bento", BENTO_WEIGHTS, 2), ("coffee", COFFEE_CAFFEINE, 3), ("synthetic-1e3", synthetic(1_000), 3),
     ("synthetic-1e5", synthetic(100_000, 1), 3)],
)
def test_same_optimum_as_sklearn(name, x, k):
    fit = em(x, k, restarts=5)
    w, m, s, ll = sklearn_fit(x, k)
    assert fit.converged
    np.testing.assert_allclose(fit.log_likelihood, ll, rtol=1e-6)
    tol = 1e-4 if x.size < 10_000 else 2e-3  # parameters are flat directions of a big-N likelihood
    np.testing.assert_allclose(fit.means, m, rtol=tol, atol=tol)
    np.testing.assert_allclose(fit.sds, s, rtol=tol, atol=tol)
    np.testing.assert_allclose(fit.weights, w, rtol=tol, atol=tol)


def test_seed_answers():
    fit = em(COFFEE_CAFFEINE, 3)
    np.testing.assert_allclose(fit.means, [81.0, 118.6, 156.9], atol=1e-6)  # the blends' sample means
    np.testing.assert_allclose(fit.weights, [1 / 3] * 3, atol=1e-6)
    fit = em(BENTO_WEIGHTS, 2)
    np.testing.assert_allclose(fit.means, [350.25, 500.0], atol=1e-6)
    np.testing.assert_allclose(fit.weights, [0.4, 0.6], atol=1e-6)


def test_float32_close_to_float64():
    x = synthetic(5_000, 2)
    f64, f32 = em(x, 3), em(x, 3, dtype=np.float32)
    np.testing.assert_allclose(f32.log_likelihood, f64.log_likelihood, rtol=1e-4)
    np.testing.assert_allclose(f32.means, f64.means, atol=1e-2)


def test_k1_is_the_sample_mean_and_sd():
    fit = em(BENTO_WEIGHTS, 1)
    np.testing.assert_allclose(fit.means, [BENTO_WEIGHTS.mean()])
    np.testing.assert_allclose(fit.sds, [np.sqrt(BENTO_WEIGHTS.var() + 1e-6)])
    assert fit.weights.tolist() == [1.0]


def test_degenerate_data_stays_finite():
    fit = em(np.array([1.0, 1.0, 1.0, 5.0]), 2)
    assert np.all(np.isfinite(fit.sds)) and np.all(fit.sds > 0) and np.isfinite(fit.log_likelihood)


def test_restarts_pick_the_best():
    fit = em(synthetic(2_000, 3), 3, restarts=8, seed=4)
    assert fit.log_likelihood == pytest.approx(np.max(fit.restart_log_likelihoods))


def test_blocked_statistics_equal_direct_computation():
    """The E-step's blocked sums (full blocks + remainder) equal a direct computation."""
    import jax.numpy as jnp
    from scipy import stats
    from scipy.special import logsumexp

    from gmmcourse.em import BLOCK, suff_stats
    from gmmcourse.precision import x64_context

    x = synthetic(2 * BLOCK + 17, 5)
    w, m, v = np.array([0.5, 0.3, 0.2]), np.array([-4.0, 0.0, 5.0]), np.array([1.0, 0.5, 2.0])
    with x64_context(np.float64):
        got = [np.asarray(a) for a in suff_stats(jnp.asarray(x), jnp.asarray(w), jnp.asarray(m), jnp.asarray(v))]
    lj = np.log(w)[:, None] + stats.norm.logpdf(x[None, :], m[:, None], np.sqrt(v)[:, None])
    r = np.exp(lj - logsumexp(lj, axis=0))
    d = x[None, :] - m[:, None]
    np.testing.assert_allclose(got[0], r.sum(1), rtol=1e-10)
    np.testing.assert_allclose(got[1], (r * d).sum(1), rtol=1e-9)
    np.testing.assert_allclose(got[2], (r * d * d).sum(1), rtol=1e-10)
    np.testing.assert_allclose(got[3], logsumexp(lj, axis=0).sum(), rtol=1e-12)


def test_em_checks_and_pads_through_the_shared_helpers(monkeypatch):
    """EM validates its arguments with `gmmcourse.validation` and pads `x` with
    `gmmcourse.shapes` (the helpers the posterior path uses), each once per call: no check or
    padding of its own."""
    import importlib

    em_module = importlib.import_module("gmmcourse.em")
    calls = {}

    def counted(name):
        fn = getattr(em_module, name)

        def wrapper(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)
        monkeypatch.setattr(em_module, name, wrapper)

    for name in ("check_data", "check_dtype", "check_non_negative", "pad_em"):
        counted(name)
    fit = em(np.linspace(-2, 2, 21) ** 3, 2, restarts=2)
    assert calls == {"check_data": 1, "check_dtype": 1, "check_non_negative": 2, "pad_em": 1}, calls
    assert np.isfinite(fit.log_likelihood)
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got int32"):
        em(np.arange(5.0), 2, dtype=np.int32)
    with pytest.raises(ValueError, match="reg_var must be a non-negative number"):
        em(np.arange(5.0), 2, reg_var=-1.0)
