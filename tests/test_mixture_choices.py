"""The choice maps `gmm_choices` and `mvn_choices` build (one helper, `models.mixture_choices`):
rebuilt from a simulated trace's own values, each has the trace's addresses and the trace's
density, for K = 1 (no weight choice), 2 and 3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from genjax import const, seed

from gmmcourse import multivariate_model as mm
from gmmcourse.models import GMMPrior, gmm, gmm_choices


def _same_addresses(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gmm_choices_rebuild_the_trace(k):
    prior = GMMPrior.exchangeable(k, 0.0, 2.0)
    tr = seed(gmm.simulate)(jax.random.key(k), const(5), prior)
    ch = tr.get_choices()
    weights = ch["weights"] if k > 1 else None
    built = gmm_choices(weights, ch["means"], ch["sds"], ch["points"]["z"], ch["points"]["x"])
    _same_addresses(built, ch)
    lp, _ = gmm.assess(built, const(5), prior)
    np.testing.assert_allclose(lp, -tr.get_score(), rtol=1e-6)
    # parameters only: no "points"
    assert set(gmm_choices(weights, ch["means"], ch["sds"])) == ({"means", "sds"} | ({"weights"} if k > 1 else set()))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mvn_choices_rebuild_the_trace(k):
    d = 2
    prior = mm.as_prior(mm.NIWPrior(np.zeros(d), 0.5, d + 2.0, np.eye(d), 1.0), jnp.float32)
    tr = seed(mm.mvn_gmm.simulate)(jax.random.key(10 + k), const(5), const(k), prior)
    ch = tr.get_choices()
    weights = ch["weights"] if k > 1 else jnp.ones(1)
    built = mm.mvn_choices(weights, ch["components"]["mean"], ch["components"]["cov"],
                           ch["points"]["z"], ch["points"]["x"])
    _same_addresses(built, ch)
    lp, _ = mm.mvn_gmm.assess(built, const(5), const(k), prior)
    np.testing.assert_allclose(lp, -tr.get_score(), rtol=1e-5)
    only_x = mm.mvn_choices(weights, ch["components"]["mean"], ch["components"]["cov"], x=ch["points"]["x"])
    assert set(only_x["points"]) == {"x"}
