"""Every input-validation path gives a ValueError that names the argument."""

import numpy as np
import pytest

from gmmcourse import BENTO_WEIGHTS, GMMPrior, categorize, em, importance_sampling, posterior
from gmmcourse.data import simulate_mixture
from gmmcourse.selection import bic_table, loo_table
from gmmcourse.validation import check_data, check_k, check_params

GOOD = dict(weights=[0.7, 0.3], means=[500.0, 350.0], sds=[2.0, 2.0])


@pytest.mark.parametrize(
    "x, match",
    [
        ([], "empty"),
        ([1.0, np.nan], "NaN"),
        ([1.0, np.inf], "NaN or infinite"),
        ([[1.0, 2.0]], "1-D"),
        (["a", "b"], "numbers"),
        ([1 + 2j], "real"),
        ([[1.0], [2.0, 3.0]], "x"),
    ],
)
def test_bad_data(x, match):
    with pytest.raises(ValueError, match=match):
        check_data(x)


@pytest.mark.parametrize("k, match", [(0, ">= 1"), (-1, ">= 1"), (2.5, "integer"), (True, "integer"), (21, "more than")])
def test_bad_k(k, match):
    with pytest.raises(ValueError, match=match):
        check_k(k, 20)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("sds", [2.0, 0.0], "sds must be positive"),
        ("sds", [2.0, -1.0], "sds must be positive"),
        ("weights", [0.5, 0.6], "sum to 1"),
        ("weights", [1.2, -0.2], "non-negative"),
        ("means", [500.0, np.nan], "means contains NaN"),
        ("means", [500.0], "same shape"),
        ("weights", [], "weights must be a non-empty"),
        ("sds", [[2.0, 2.0]], "sds must be a non-empty 1-D"),
    ],
)
def test_bad_params(field, value, match):
    params = dict(GOOD, **{field: value})
    with pytest.raises(ValueError, match=match):
        check_params(**params)
    with pytest.raises(ValueError, match=match):
        categorize([400.0], **params)


def test_public_functions_validate():
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        em([1.0, np.nan, 2.0], 1)
    with pytest.raises(ValueError, match="k=3 components is more than"):
        em([1.0, 2.0], 3)
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        em(BENTO_WEIGHTS, 2, restarts=0)
    with pytest.raises(ValueError, match="tol"):
        em(BENTO_WEIGHTS, 2, tol=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        em(BENTO_WEIGHTS, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        posterior(BENTO_WEIGHTS, 0)
    with pytest.raises(ValueError, match="num_chains"):
        posterior(BENTO_WEIGHTS, 2, num_chains=0)
    with pytest.raises(ValueError, match="num_warmup"):
        posterior(BENTO_WEIGHTS, 2, num_warmup=-5)
    with pytest.raises(ValueError, match="prior has 3 components"):
        posterior(BENTO_WEIGHTS, 2, prior=GMMPrior.exchangeable(3, 400.0, 50.0))
    with pytest.raises(ValueError, match="prior.mean_scale"):
        posterior(BENTO_WEIGHTS, 2, prior=GMMPrior(np.array([1.0, 2.0]), -1.0))
    with pytest.raises(ValueError, match="prior must be"):
        posterior(BENTO_WEIGHTS, 2, prior={"loc": 1})
    with pytest.raises(ValueError, match="k <= 7"):
        posterior(np.arange(20.0), 8)
    with pytest.raises(ValueError, match="scale must be a positive"):
        GMMPrior.exchangeable(2, 0.0, 0.0)
    with pytest.raises(ValueError, match="num_particles"):
        importance_sampling(BENTO_WEIGHTS, GMMPrior.exchangeable(2, 400.0, 50.0), num_particles=0)
    with pytest.raises(ValueError, match="x is empty"):
        importance_sampling([], GMMPrior.exchangeable(2, 400.0, 50.0))
    with pytest.raises(ValueError, match="k_max"):
        bic_table(BENTO_WEIGHTS, 0)
    with pytest.raises(ValueError, match="k_max=30 components"):
        loo_table(BENTO_WEIGHTS, 30)
    with pytest.raises(ValueError, match="n must be >= 1"):
        import jax

        simulate_mixture(jax.random.key(0), 0, **GOOD)


def test_exported_functions_are_not_shadowed_by_their_submodules():
    """`from gmmcourse import em` is the function whatever was imported before."""
    import subprocess
    import sys

    code = ("import gmmcourse.em, gmmcourse.categorize, gmmcourse.selection\n"
            "from gmmcourse import em, categorize\n"
            "assert callable(em) and callable(categorize), (em, categorize)\n"
            "from gmmcourse.em import EMResult\n"
            "import pickle, cloudpickle, gmmcourse\n"
            "assert pickle.loads(pickle.dumps(gmmcourse)) is gmmcourse\n"
            "assert cloudpickle.loads(cloudpickle.dumps(gmmcourse)) is gmmcourse\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
