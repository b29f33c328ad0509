"""The numbers glued into chapters/stan_pymc.md (NUTS on the marginalised mixture), each
checked against a route that shares no code with the page: a fresh run of the package's
Gibbs sampler (another seed), the exact enumeration of `gmmcourse.exact`, closed forms, and a
NumPy simulation of the prior; and the claims the prose makes about them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from conftest import MC_Z, glued, mc_close, mcse
from gmmcourse import posterior
from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
from gmmcourse.exact import exact_predictive
from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def g():
    return glued("stan_pymc")


def _log_lik(x, w, mu, sd):
    """log p(x | w, mu, sd) per draw, float64 SciPy (the page uses JAX/NumPyro)."""
    terms = np.log(w)[..., None, :] + stats.norm.logpdf(np.asarray(x)[:, None], mu[..., None, :], sd[..., None, :])
    return logsumexp(terms, axis=-1).sum(axis=-1)


@pytest.fixture(scope="module")
def gibbs():
    """Label-free draws of the package's Gibbs sampler, seed 1 (the page uses seed 0)."""
    out = {}
    for name, x, prior in (("bentos", BENTO_WEIGHTS, BENTO_PRIOR), ("coffee", COFFEE_CAFFEINE, COFFEE_PRIOR)):
        post = posterior(x, prior.k, prior=prior, num_chains=4, num_samples=1000, seed=1)
        w, mu, sd = (np.asarray(a, np.float64) for a in (post.raw.weights, post.raw.means, post.raw.sds))
        order = np.argsort(mu, axis=-1)
        w, mu, sd = (np.take_along_axis(a, order, axis=-1) for a in (w, mu, sd))
        out[name] = {"w": w, "mu": mu, "sigma": sd, "loglik": _log_lik(x, w, mu, sd)}
    return out


def test_the_marginal_likelihood(g):
    want = _log_lik(BENTO_WEIGHTS, np.array([0.4, 0.6]), np.array([350.0, 500.0]), np.array([2.0, 2.0]))
    assert g["sp_loglik"] == pytest.approx(float(want), abs=1e-3)
    assert g["sp_loglik_diff"] < 1e-3


def test_nuts_diagnostics(g):
    for name in ("bento", "coffee"):
        assert g[f"sp_{name}_rhat"] < 1.01
        assert g[f"sp_{name}_ess"] > 400
    assert g["sp_gibbs_rhat"] < 1.01


def test_label_switching_claims(g):
    """Chains in mirror copies: R-hat as labelled far from 1, label-free near 1; the ordered
    run's means are the unordered run's sorted means."""
    assert g["sp_free_rhat"] > 1.1
    assert g["sp_free_sorted_rhat"] < 1.01
    assert g["sp_order_z"] < MC_Z


@pytest.mark.parametrize("data", ["bentos", "coffee"])
def test_nuts_against_a_fresh_gibbs_run(g, gibbs, data):
    """Every glued NUTS value within MC_Z combined MCSEs of a Gibbs run the page did not make."""
    k = 2 if data == "bentos" else 3
    names = [(f"{p}{j}", p, j) for p in ("w", "mu", "sigma") for j in range(k)] + [("loglikelihood", "loglik", None)]
    for tag, p, j in names:
        draws = gibbs[data][p] if j is None else gibbs[data][p][..., j]
        mc_close(g[f"sp_cmp_{data}_{tag}_nuts"], draws.mean(), np.hypot(g[f"sp_cmp_{data}_{tag}_nuts_mcse"], mcse(draws)),
                 what=f"NUTS {tag}")
        # the page's own Gibbs column, against this run too
        mc_close(g[f"sp_cmp_{data}_{tag}_gibbs"], draws.mean(),
                 np.hypot(g[f"sp_cmp_{data}_{tag}_gibbs_mcse"], mcse(draws)), what=f"the page's Gibbs {tag}")
    assert g["sp_cmp_worst_z"] < MC_Z


def test_predictive_density_against_exact(g):
    """The exact posterior predictive of a 351.5 g bento (enumeration of 2^20 labellings)."""
    ex = exact_predictive(BENTO_WEIGHTS, 351.5, BENTO_PRIOR, anchor=int(np.argmax(BENTO_WEIGHTS)))
    exact = float(np.exp(ex.log_density))
    assert g["sp_exact_density"] == pytest.approx(exact, rel=1e-9)
    for side in ("nuts", "gibbs"):
        mc_close(g[f"sp_cmp_bentos_p3515data_{side}"], exact, g[f"sp_cmp_bentos_p3515data_{side}_mcse"], what=side)
    assert g["sp_exact_z_nuts"] < MC_Z and g["sp_exact_z_gibbs"] < MC_Z


def _prior_simulation(x, prior, sims, rng):
    """Data sets from the prior, by NumPy (the page runs the GenJAX model forward)."""
    k = prior.k
    w = rng.dirichlet(np.full(k, float(prior.concentration)), sims)
    mu = rng.normal(np.asarray(prior.mean_loc, np.float64), float(prior.mean_scale), (sims, k))
    sd = rng.gamma(float(prior.sd_shape), 1.0 / float(prior.sd_rate), (sims, k))
    z = (rng.random((sims, len(x), 1)) > np.cumsum(w, axis=1)[:, None, :]).sum(-1)
    z = np.minimum(z, k - 1)
    return np.take_along_axis(mu, z, 1) + np.take_along_axis(sd, z, 1) * rng.standard_normal(z.shape)


def test_prior_predictive_numbers(g):
    rng = np.random.default_rng(2026)
    sims = 40_000
    for name, x, prior in (("bento", BENTO_WEIGHTS, BENTO_PRIOR), ("coffee", COFFEE_CAFFEINE, COFFEE_PRIOR)):
        rep = _prior_simulation(x, prior, sims, rng)
        hit = rep.std(axis=1) >= x.std()
        se = np.hypot(g[f"sp_prior_sd_{name}_mcse"], hit.std() / np.sqrt(sims))
        mc_close(g[f"sp_prior_sd_{name}"], hit.mean(), se, what=name)
        if name == "bento":
            gap = np.diff(np.sort(rep, axis=1), axis=1).max(axis=1) >= 100.0
            mc_close(g["sp_prior_gap"], gap.mean(), np.hypot(g["sp_prior_gap_mcse"], gap.std() / np.sqrt(sims)))
    # closed forms: P(sd > 5) under Gamma(2, 1) is 6 e^-5; E|N(0, 50 sqrt 2)| = 100 / sqrt(pi)
    assert g["sp_prior_sigma5"] == pytest.approx(6 * np.exp(-5.0), rel=1e-12)
    assert g["sp_prior_typical_gap"] == pytest.approx(50 * np.sqrt(2) * np.sqrt(2 / np.pi), rel=1e-12)
    assert g["sp_data_gap"] == 144.0
    assert g["sp_prior_sd_bento"] < 0.05 < g["sp_prior_sd_coffee"], "the page says the bentos sit in the tail"


def _replicate(d, n, rng):
    u = rng.random(d["w"].shape[:2] + (n, 1))
    z = np.minimum((u > np.cumsum(d["w"], axis=-1)[..., None, :]).sum(-1), d["w"].shape[-1] - 1)
    return np.take_along_axis(d["mu"], z, -1) + np.take_along_axis(d["sigma"], z, -1) * rng.standard_normal(z.shape)


def test_posterior_predictive_p_values(g, gibbs):
    """Each p-value against the same check on the fresh Gibbs draws; the prose's claim that
    none is extreme."""
    rng = np.random.default_rng(7)
    stat = {"sd": lambda x: x.std(axis=-1), "min": lambda x: x.min(axis=-1), "max": lambda x: x.max(axis=-1),
            "largest_gap": lambda x: np.diff(np.sort(x, axis=-1), axis=-1).max(axis=-1)}
    values = []
    for name, data, x in (("bento", "bentos", BENTO_WEIGHTS), ("coffee", "coffee", COFFEE_CAFFEINE)):
        rep = _replicate(gibbs[data], len(x), rng)
        for s, fn in stat.items():
            hit = (fn(rep) >= fn(x)).astype(float)
            p = g[f"sp_ppc_{name}_{s}"]
            mc_close(p, hit.mean(), np.hypot(g[f"sp_ppc_{name}_{s}_mcse"], mcse(hit)), what=f"{name} {s}")
            values.append(p)
    assert g["sp_ppc_lo"] == min(values) and g["sp_ppc_hi"] == max(values)
    assert 0.05 < min(values) and max(values) < 0.95, "the page says the checks find no misfit"


def test_exercise_answers(g, gibbs):
    assert g["sp_ex1_naive"] == -np.inf
    assert g["sp_ex1_lse"] == pytest.approx(np.logaddexp(-1000.0, -1001.0), rel=1e-15)
    # E[min of two independent N(400, 50)] by quadrature of 2 x f(x) (1 - F(x))
    f = stats.norm(400.0, 50.0)
    want, _ = integrate.quad(lambda t: 2 * t * f.pdf(t) * f.sf(t), 0.0, 800.0, epsabs=1e-10)
    assert g["sp_ex2_min"] == pytest.approx(want, rel=1e-9)
    d = gibbs["coffee"]
    dens = d["w"] * stats.norm.pdf(100.0, d["mu"], d["sigma"])
    p = dens[..., 0] / dens.sum(-1)
    mc_close(g["sp_ex3_p"], p.mean(), np.hypot(g["sp_ex3_mcse"], mcse(p)))
