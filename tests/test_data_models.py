"""Data constants and the GenJAX models: shapes, supports and log densities by hand."""

import jax
import jax.numpy as jnp
import numpy as np
from genjax import const, seed
from scipy import stats

from gmmcourse.data import BENTO_TRUE, BENTO_WEIGHTS, COFFEE_CAFFEINE, simulate_mixture
from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR, GMMPrior, bento_model, gmm, gmm_choices, mixture_point


def test_seed_data():
    assert BENTO_WEIGHTS.shape == (20,) and COFFEE_CAFFEINE.shape == (30,)
    # the seed's two clusters and three blends (sample means of each group)
    assert BENTO_WEIGHTS[BENTO_WEIGHTS < 425].mean() == 350.25
    assert BENTO_WEIGHTS[BENTO_WEIGHTS > 425].mean() == 500.0
    groups = [COFFEE_CAFFEINE[(COFFEE_CAFFEINE > lo) & (COFFEE_CAFFEINE < hi)] for lo, hi in ((50, 100), (100, 140), (140, 200))]
    assert [g.size for g in groups] == [10, 10, 10]
    np.testing.assert_allclose([g.mean() for g in groups], [81.0, 118.6, 156.9])
    assert not BENTO_WEIGHTS.flags.writeable


def test_simulate_mixture_moments():
    x, z = simulate_mixture(jax.random.key(1), 200_000, *BENTO_TRUE)
    x, z = np.asarray(x), np.asarray(z)
    assert abs((z == 0).mean() - 0.7) < 5 * np.sqrt(0.21 / 200_000)
    assert abs(x[z == 1].mean() - 350) < 0.05 and abs(x[z == 0].std() - 2) < 0.02


def test_bento_model_simulate_and_assess():
    tr = seed(bento_model.simulate)(jax.random.key(0), const(20))
    ch = tr.get_choices()["bentos"]
    assert ch["x"].shape == (20,) and ch["z"].shape == (20,)
    assert set(np.unique(ch["z"]).tolist()) <= {0, 1}
    lp, _ = bento_model.assess(tr.get_choices(), const(20))
    w, m, s = BENTO_TRUE
    z, x = np.asarray(ch["z"]), np.asarray(ch["x"])
    by_hand = np.sum(np.log(w[z]) + stats.norm.logpdf(x, m[z], s[z]))
    np.testing.assert_allclose(lp, by_hand, rtol=1e-5)


def test_mixture_point_assess_by_hand():
    lp, _ = mixture_point.assess({"z": jnp.array(1), "x": jnp.array(425.0)}, jnp.array([0.7, 0.3]), jnp.array([500.0, 350.0]), jnp.array([2.0, 2.0]))
    np.testing.assert_allclose(lp, np.log(0.3) + stats.norm.logpdf(425, 350, 2), rtol=1e-5)


def test_gmm_assess_matches_hand_computation():
    prior = COFFEE_PRIOR
    tr = seed(gmm.simulate)(jax.random.key(3), const(30), prior)
    ch = tr.get_choices()
    lp, _ = gmm.assess(ch, const(30), prior)
    w, m, s = (np.asarray(ch[a], np.float64) for a in ("weights", "means", "sds"))
    z, x = np.asarray(ch["points"]["z"]), np.asarray(ch["points"]["x"], np.float64)
    by_hand = (
        stats.dirichlet.logpdf(w / w.sum(), np.ones(3))
        + stats.norm.logpdf(m, 125.0, 37.5).sum()
        + stats.gamma.logpdf(s, 2.0, scale=1.0).sum()
        + np.sum(np.log(w[z]) + stats.norm.logpdf(x, m[z], s[z]))
    )
    np.testing.assert_allclose(lp, by_hand, rtol=1e-4)
    np.testing.assert_allclose(-tr.get_score(), lp, rtol=1e-5)
    assert ch["weights"].shape == (3,) and np.all(np.asarray(ch["sds"]) > 0)


def test_gmm_one_component_has_no_weight_choice():
    prior = GMMPrior.exchangeable(1, 0.0, 1.0)
    ch = seed(gmm.simulate)(jax.random.key(0), const(4), prior).get_choices()
    assert "weights" not in ch
    lp, _ = gmm.assess(gmm_choices(None, ch["means"], ch["sds"], ch["points"]["z"], ch["points"]["x"]), const(4), prior)
    assert np.isfinite(lp)


def test_bento_prior_is_the_seeds():
    np.testing.assert_allclose(BENTO_PRIOR.mean_loc, [400.0, 400.0])
    assert BENTO_PRIOR.mean_scale == 50.0 and BENTO_PRIOR.sd_shape == 2.0 and BENTO_PRIOR.sd_rate == 1.0
