"""The Gibbs sampler against exact answers, simulation-based calibration, and the seed data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from genjax import const, seed
from scipy import stats

from conftest import MC_Z, mc_close
from gmmcourse import BENTO_PRIOR, BENTO_WEIGHTS, COFFEE_CAFFEINE, COFFEE_PRIOR, GMMPrior, posterior
from gmmcourse.exact import exact_posterior
from gmmcourse.sweep import permutations, run_chain
from gmmcourse.models import as_prior, gmm

TINY_X = np.array([-2.1, -1.7, -2.5, 1.9, 2.4, 2.0, 0.3])
TINY_PRIOR = GMMPrior(jnp.array([-2.0, 2.0]), 1.0)


def ess_se(draws):
    """Monte Carlo standard error of the posterior mean of every component: sd / sqrt(ESS)."""
    import arviz as az

    ess = np.asarray(az.ess(draws, method="bulk"))
    return draws.std(axis=(0, 1)) / np.sqrt(ess)


def test_exact_posterior_against_brute_force_quadrature():
    """The enumeration module itself: N = 1, K = 1 against 2-D numerical integration."""
    from scipy import integrate

    import math

    x0, prior = 0.7, GMMPrior(jnp.array([0.0]), 1.5)
    # Gamma(2, 1) prior on the sd, Normal(0, 1.5) on the mean, Normal(m, s) likelihood, written
    # out with math: scipy.stats' per-call overhead made the ~200,000-point integral take ~50 s
    # of CPU (the densities agree with scipy.stats to rounding: checked below at one point)
    norm = lambda v, mu, sd: math.exp(-0.5 * ((v - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    f = lambda s, m: s * math.exp(-s) * norm(m, 0.0, 1.5) * norm(x0, m, s)
    assert math.isclose(f(1.3, -0.4), stats.gamma.pdf(1.3, 2.0) * stats.norm.pdf(-0.4, 0, 1.5)
                        * stats.norm.pdf(x0, -0.4, 1.3), rel_tol=1e-12)
    val, _ = integrate.dblquad(f, -12, 12, 1e-6, 40)
    e = exact_posterior(np.array([x0]), prior)
    np.testing.assert_allclose(e.log_marginal, np.log(val), rtol=1e-4)


def test_gibbs_matches_exact_on_tiny_data():
    exact = exact_posterior(TINY_X, TINY_PRIOR)
    post = posterior(TINY_X, 2, prior=TINY_PRIOR, num_chains=4, num_samples=4000, seed=11, dtype=np.float64)
    mc_close(post.means.mean((0, 1)), exact.mean_means, ess_se(post.means))
    mc_close(post.sds.mean((0, 1)), exact.mean_sds, ess_se(post.sds))
    mc_close(post.weights.mean((0, 1)), exact.mean_weights, ess_se(post.weights))
    # Rao-Blackwellised assignment probabilities: bounded by the indicator's binomial error
    ess = post.diagnostics()["min_ess_bulk"]
    se = np.sqrt(exact.assignment_probs * (1 - exact.assignment_probs) / ess) + 1e-3
    mc_close(post.assignment_probs, exact.assignment_probs, se)


def test_gibbs_matches_exact_three_components():
    x = np.array([0.1, -0.3, 3.2, 2.8, 6.1, 5.7])
    prior = GMMPrior(jnp.array([0.0, 3.0, 6.0]), 0.7)
    exact = exact_posterior(x, prior)
    post = posterior(x, 3, prior=prior, num_chains=4, num_samples=3000, seed=5, dtype=np.float64)
    mc_close(post.means.mean((0, 1)), exact.mean_means, ess_se(post.means))
    mc_close(post.sds.mean((0, 1)), exact.mean_sds, ess_se(post.sds))


def test_gibbs_detects_a_wrong_prior():
    """The exact comparison has power: the same data under another prior is far off."""
    exact = exact_posterior(TINY_X, TINY_PRIOR)
    wrong = posterior(TINY_X, 2, prior=GMMPrior(jnp.array([-2.0, 2.0]), 1.0, sd_shape=8.0), num_samples=2000, seed=1)
    err = np.abs(wrong.sds.mean((0, 1)) - exact.mean_sds)
    assert np.any(err > MC_Z * ess_se(wrong.sds))


@pytest.mark.slow
def test_simulation_based_calibration():
    """SBC (Talts et al. 2018) on label-invariant statistics of a small model.

    For L prior draws (theta, x), the rank of f(theta) among M thinned posterior draws given
    x is uniform on {0..M} iff the sampler targets the posterior. Checked with a chi-square
    test on binned ranks for f = mixture mean, smallest mean and largest sd.
    """
    n, k, L, M, thin = 8, 2, 300, 99, 5
    prior = GMMPrior(jnp.array([0.0, 0.0]), 3.0)
    p = as_prior(prior)
    keys = jax.random.split(jax.random.key(2026), L)
    sims = jax.vmap(lambda key: seed(gmm.simulate)(key, const(n), p).get_choices())(keys)
    xs = sims["points"]["x"]
    perms = jnp.asarray(permutations(k))
    run = jax.jit(jax.vmap(lambda key, x: run_chain(key, x, p, jnp.zeros(k), jnp.ones(k), perms, 100, M * thin, 2)))
    (raw, _, _), _ = run(jax.random.split(jax.random.key(7), L), xs)
    w, m, s = (np.asarray(a)[:, ::thin] for a in raw)  # (L, M, K)

    def stats_of(w, m, s):
        return {"mixture mean": np.sum(w * m, -1), "min mean": m.min(-1), "max sd": s.max(-1)}

    true = stats_of(*(np.asarray(sims[a]) for a in ("weights", "means", "sds")))
    drawn = stats_of(w, m, s)
    for name in true:
        ranks = np.sum(drawn[name] < true[name][:, None], axis=1)  # 0..M
        counts = np.bincount(ranks * 10 // (M + 1), minlength=10)
        pval = stats.chisquare(counts).pvalue
        assert pval > 1e-3, f"SBC ranks of {name} not uniform: counts {counts}, p = {pval:.2g}"


def test_sbc_detects_a_biased_sampler():
    """The SBC rank statistic has power: ranks against draws from the wrong sd prior fail."""
    rng = np.random.default_rng(0)
    true = rng.gamma(2.0, 1.0, size=300)
    drawn = rng.gamma(3.0, 1.0, size=(300, 99))
    ranks = np.sum(drawn < true[:, None], axis=1)
    assert stats.chisquare(np.bincount(ranks * 10 // 100, minlength=10)).pvalue < 1e-3


def test_coffee_posterior():
    post = posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=4, num_samples=1000, seed=0)
    d = post.diagnostics()
    assert d["max_r_hat"] < 1.01 and d["min_ess_bulk"] > 400
    # diagnostics() computes on the arrays what summary() tabulates: the same extremes
    table = post.summary()
    assert d == {"max_r_hat": table["r_hat"].max(), "min_ess_bulk": table["ess_bulk"].min(),
                 "min_ess_tail": table["ess_tail"].min()}
    np.testing.assert_allclose(post.means.mean((0, 1)), [81.0, 118.6, 156.9], atol=0.5)
    np.testing.assert_allclose(post.weights.mean((0, 1)), [1 / 3] * 3, atol=0.03)
    assert np.all(post.assignment_probs.max(1) > 0.999)  # well-separated blends: no doubt
    assert post.assignment_probs.shape == (30, 3)


def test_bento_posterior_and_label_invariance():
    post = posterior(BENTO_WEIGHTS, 2, prior=BENTO_PRIOR, num_chains=4, num_samples=1000, seed=3)
    assert post.diagnostics()["max_r_hat"] < 1.01
    np.testing.assert_allclose(post.means.mean((0, 1)), [350.3, 500.0], atol=0.5)
    # relabelled draws are ordered as the pivot; raw draws hold the same sets of values
    np.testing.assert_allclose(np.sort(post.raw.means, -1), np.sort(post.means, -1))
    # the data in another order give the same answer (exchangeability), up to MC error
    perm = np.random.default_rng(0).permutation(20)
    other = posterior(BENTO_WEIGHTS[perm], 2, prior=BENTO_PRIOR, num_chains=4, num_samples=1000, seed=4)
    np.testing.assert_allclose(other.assignment_probs, post.assignment_probs[perm], atol=1e-3)
    mc_close(other.means.mean((0, 1)), post.means.mean((0, 1)), np.sqrt(2) * ess_se(post.means))


def test_chains_differ_and_seed_reproducible():
    a = posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=2, num_samples=50, seed=9)
    b = posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=2, num_samples=50, seed=9)
    np.testing.assert_array_equal(a.means, b.means)
    assert not np.allclose(a.means[0], a.means[1])


def test_log_joint_is_the_model_density():
    post = posterior(COFFEE_CAFFEINE, 3, prior=COFFEE_PRIOR, num_chains=1, num_samples=3, seed=2)
    assert np.all(np.isfinite(post.log_joint))


def test_genjax_sampler_is_exactly_the_plain_jax_kernel():
    """Same keys, same draws: the GenJAX-driven sweep (assess-enumerated z, trace update)
    and the hand-written plain-JAX sweep are the same Markov chain, and the trace score is
    the hand-computed log joint."""
    from gmmcourse.plain import run_plain_chain

    p = as_prior(COFFEE_PRIOR)
    x = jnp.asarray(COFFEE_CAFFEINE, jnp.float32)
    perms = jnp.asarray(permutations(3))
    key = jax.random.key(42)
    (raw, _, lj), probs = run_chain(key, x, p, jnp.zeros(3), jnp.ones(3), perms, 20, 50, 2)
    draws, lj_plain, _ = run_plain_chain(key, x, p, 20, 50, 2)
    for a, b in zip(raw, draws):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(lj, lj_plain, rtol=1e-4)


def test_draw_z_frequencies():
    """The z draw (Gumbel-max): frequencies match the conditional probabilities (within 5
    binomial standard errors, several seeds), a component of probability 0 is never drawn,
    and the draw does not depend on the table's scale (log-probabilities shifted by 1e3)."""
    from gmmcourse.sweep import draw_z

    p = np.array([0.2, 0.5, 0.3, 0.0])
    n = 100_000
    with np.errstate(divide="ignore"):
        table = jnp.asarray(np.repeat(np.log(p)[:, None], n, axis=1) + 1e3, jnp.float32)
    for s in range(5):
        z, probs = draw_z(jax.random.key(s), table)
        freq = np.bincount(np.asarray(z), minlength=4) / n
        np.testing.assert_allclose(np.asarray(probs)[:, 0], p, atol=1e-4)  # float32 log-probabilities near 1e3
        assert freq[3] == 0
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n)), (s, freq)
    # power: a draw from other probabilities fails the same bound
    z, _ = draw_z(jax.random.key(0), jnp.asarray(np.log(np.repeat(np.array([[0.22], [0.48], [0.3]]), n, axis=1)),
                                                  jnp.float32))
    freq = np.bincount(np.asarray(z), minlength=3) / n
    assert not np.all(np.abs(freq - p[:3]) <= 5 * np.sqrt(p[:3] * (1 - p[:3]) / n))
