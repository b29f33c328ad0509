"""`gmmcourse.gamma.gamma` (Marsaglia-Tsang in one loop) draws Gamma(a, 1) exactly."""

import jax
import numpy as np
import pytest
from scipy import stats

from gmmcourse.gamma import gamma
from gmmcourse.precision import x64_context

N = 40_000


def _draws(a, dtype=np.float32, seed=0):
    with x64_context(dtype):
        keys = jax.random.split(jax.random.key(seed), N // 4)
        g = jax.jit(jax.vmap(lambda k: gamma(k, np.asarray(a, dtype), dtype)))(keys)
        return np.asarray(g, np.float64).reshape(-1, len(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_shape_has_the_gamma_distribution(dtype):
    # one array of mixed shapes, as the Gibbs step uses it (boosted a < 1, a = 1, large a)
    a = [0.05, 0.3, 1.0, 2.5, 3.0, 31.0, 1e4, 0.7]
    g = _draws(a * 4, dtype).reshape(-1, 4, len(a)).transpose(2, 0, 1).reshape(len(a), -1)  # each shape 4 times a call
    assert np.all(g >= 0) and np.all(np.isfinite(g))  # float32: Gamma(0.05) < 1e-38 (-> 0) w.p. ~1 %
    # float32 rounds a Gamma(0.05) draw to 0 with probability F(tiny) ~ 1 % (so does
    # jax.random.gamma): probability integral transform, uniform within that atom
    tiny = np.finfo(dtype).tiny
    fill = np.random.default_rng(1).uniform(size=g.shape[1])
    for shape, draws in zip(a, g):
        cdf = stats.gamma(shape).cdf
        pit = np.where(draws > tiny, cdf(draws), fill * cdf(tiny))
        p = stats.kstest(pit, "uniform").pvalue
        assert p > 1e-4, (shape, p)
        # mean within 4.5 Monte Carlo standard errors (sd of a Gamma(a) is sqrt(a))
        assert abs(draws.mean() - shape) < 4.5 * np.sqrt(shape / draws.size), (shape, draws.mean())


def test_the_ks_check_has_power():
    """The same check rejects Gamma(a + 0.05) draws for a = 2.5 and a = 0.3: it can fail."""
    for shape in (2.5, 0.3):
        draws = _draws([shape + 0.05] * 4).ravel()
        assert stats.kstest(draws, stats.gamma(shape).cdf).pvalue < 1e-4


def test_seeds_give_new_draws_and_the_same_seed_the_same():
    a = [0.5, 2.0]
    assert np.array_equal(_draws(a, seed=3), _draws(a, seed=3))
    assert not np.allclose(_draws(a, seed=3), _draws(a, seed=4))
