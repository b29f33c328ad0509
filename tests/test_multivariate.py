"""Multivariate mixtures (gmmcourse.multivariate): EM against scikit-learn, the collapse guard,
and the Bayesian model's Gibbs sampler checked by simulation-based calibration, against NUTS on
the marginalised model, and against exact enumeration of the labelings of tiny data."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from genjax import const, seed
from scipy.special import gammaln, multigammaln
from scipy.stats import chi2 as chi2_dist
from scipy.stats import invwishart
from sklearn.mixture import GaussianMixture

from conftest import mc_close
from gmmcourse import multivariate as mv
from gmmcourse import multivariate_gibbs as mg
from gmmcourse import multivariate_model as mm


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
    # float32 stops where its rounding hides the change (the means along a flat ridge may differ)
    np.testing.assert_allclose(f32.loglik, f64.loglik, rtol=1e-5)
    assert f32.means.dtype == np.float64 and f32.means.shape == (3, 2)
    assert not f64.degenerate and f64.n == len(x)


def test_em_compiles_once_per_small_bucket(rng):
    """Small data are padded to their shape bucket: new sizes in it reuse EM's programs."""
    from gmmcourse import multivariate_em as mve

    x = _three_blobs(rng, 2)
    mv.em(x[:40], 2)
    before = (mve.em_run._cache_size(), mve.em_starts._cache_size())
    for n in (50, 123, 300):
        assert mv.em(x[:n], 2, key=n).n == n
    assert (mve.em_run._cache_size(), mve.em_starts._cache_size()) == before


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


# ----- the Bayesian model and its Gibbs sampler ------------------------------------------------

TINY_PRIOR = mv.NIWPrior(mean_loc=np.zeros(2), kappa=0.5, dof=5.0, scale=np.array([[1.0, 0.3], [0.3, 0.8]]), alpha=2.0)
"""A proper, moderately informative prior for the statistical checks on tiny data."""


def _mcse(q):
    """Monte Carlo standard error of the mean of q (chains, draws) (ArviZ)."""
    from arviz_stats.base import array_stats

    return float(array_stats.mcse(np.asarray(q), chain_axis=0, draw_axis=1))


def test_model_density_is_the_sweeps_table():
    """The sweep's z table is the GenJAX model's own point density (`mvn_point.assess`), and the
    Inverse-Wishart distribution's density is SciPy's."""
    with jax.enable_x64(True):
        key = jax.random.key(3)
        p = mm.as_prior(TINY_PRIOR, jnp.float64)

        @jax.jit
        def both(key):
            ch = seed(mm.mvn_gmm.simulate)(key, const(7), const(3), p).get_choices()
            w, m, c, x = ch["weights"], ch["components"]["mean"], ch["components"]["cov"], ch["points"]["x"]
            by_model = jax.vmap(lambda xi: jax.vmap(lambda z: mm.mvn_point.assess({"z": z, "x": xi}, w, m, c)[0])(
                jnp.arange(3)))(x)
            return mg.z_log_table(x, w, m, c), by_model, c

        table, by_model, c = both(key)
        np.testing.assert_allclose(table, by_model, rtol=1e-10)
        for j in range(3):
            np.testing.assert_allclose(mm.inverse_wishart.assess(c[j], p.dof, p.scale)[0],
                                       invwishart(df=5.0, scale=TINY_PRIOR.scale).logpdf(np.asarray(c[j])), rtol=1e-10)


def test_niw_draws_have_the_exact_marginals():
    """`draw_niw` (Bartlett's decomposition) against the NIW prior's exact marginals: a
    covariance's diagonal entry is Inverse-Gamma((dof - D + 1)/2, scale_jj/2), and a mean's
    coordinate is Student-t with dof - D + 1 degrees of freedom, location mean_loc_j and scale
    sqrt(scale_jj / (kappa (dof - D + 1))). One-sample Kolmogorov-Smirnov tests at level 1e-3."""
    from scipy.stats import invgamma, kstest, t as student_t

    n, dof, kappa = 20_000, 6.0, 0.5
    psi, loc = TINY_PRIOR.scale, np.array([0.3, -1.0])
    with jax.enable_x64(True):
        means, covs = jax.jit(mm.draw_niw)(jax.random.key(11), jnp.full(n, kappa), jnp.tile(loc, (n, 1)),
                                            jnp.full(n, dof), jnp.tile(psi, (n, 1, 1)))
    means, covs = np.asarray(means), np.asarray(covs)
    nu = dof - 2 + 1
    for j in range(2):
        assert kstest(covs[:, j, j], invgamma(nu / 2, scale=psi[j, j] / 2).cdf).pvalue > 1e-3
        assert kstest(means[:, j], student_t(nu, loc=loc[j], scale=np.sqrt(psi[j, j] / (kappa * nu))).cdf).pvalue > 1e-3
    assert np.all(np.linalg.eigvalsh(covs)[:, 0] > 0)


SBC_REPS, SBC_DRAWS, SBC_THIN, SBC_WARMUP, SBC_BINS = 300, 49, 4, 40, 10
SBC_ALPHA = 1e-3
"""Per-quantity level of the rank-uniformity test (3 quantities: family-wise level < 0.003)."""


def _sbc_quantities(x, w, m, c):
    """Label-free functions of the parameters: the mixture's mean of coordinate 0, its second
    moment of coordinate 1, and the data's log-likelihood."""
    loglik = jnp.sum(jax.scipy.special.logsumexp(mg.z_log_table(x, w, m, c), axis=1))
    return jnp.stack([jnp.sum(w * m[:, 0]), jnp.sum(w * (c[:, 1, 1] + m[:, 1] ** 2)), loglik])


def _sbc_ranks(n=8, k=2):
    """Simulation-based calibration (Talts et al. 2018): parameters and data from the GenJAX
    model's prior, then the Gibbs sampler from a k-means++ start; the rank of each true
    quantity among the thinned posterior draws is uniform on 0..SBC_DRAWS when the sampler
    targets the posterior."""
    p = mm.as_prior(TINY_PRIOR, jnp.float64)
    mask = jnp.ones(n, bool)

    def one(key):
        ksim, kinit, krun = jax.random.split(key, 3)
        ch = seed(mm.mvn_gmm.simulate)(ksim, const(n), const(k), p).get_choices()
        x = ch["points"]["x"]
        truth = _sbc_quantities(x, ch["weights"], ch["components"]["mean"], ch["components"]["cov"])
        params = mg.init_params(kinit, x, mask, p, k)

        def step(params, t):
            params = mg.sweep(jax.random.fold_in(krun, t), x, mask, *params, p)
            return params, _sbc_quantities(x, *params)

        _, qs = jax.lax.scan(step, params, jnp.arange(SBC_WARMUP + SBC_DRAWS * SBC_THIN))
        kept = qs[SBC_WARMUP + SBC_THIN - 1::SBC_THIN]
        return jnp.sum(kept < truth[None, :], axis=0)

    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(2026), SBC_REPS)))


@pytest.mark.slow
def test_gibbs_simulation_based_calibration():
    ranks = _sbc_ranks()  # (reps, 3)
    assert ranks.shape == (SBC_REPS, 3) and ranks.min() >= 0 and ranks.max() <= SBC_DRAWS
    per_bin = (SBC_DRAWS + 1) // SBC_BINS
    for j, name in enumerate(["mixture mean", "second moment", "log-likelihood"]):
        counts = np.bincount(ranks[:, j] // per_bin, minlength=SBC_BINS)
        expected = SBC_REPS / SBC_BINS
        stat = float(np.sum((counts - expected) ** 2 / expected))
        p_value = float(chi2_dist.sf(stat, SBC_BINS - 1))
        assert p_value > SBC_ALPHA, f"SBC ranks of the {name} are not uniform: p = {p_value:.2g}, bins {counts}"


def _niw_log_marginal(x, prior):
    """log p(x) of points all in one component under the NIW prior (Murphy 2007, eq. 266),
    written from the textbook form (scatter about the sample mean plus shrinkage)."""
    n, d = x.shape
    psi0, k0, v0, m0 = prior.scale, prior.kappa, prior.dof, prior.mean_loc
    if n == 0:
        return 0.0
    xbar = x.mean(axis=0)
    s = (x - xbar).T @ (x - xbar)
    kn, vn = k0 + n, v0 + n
    psin = psi0 + s + k0 * n / kn * np.outer(xbar - m0, xbar - m0)
    return (-0.5 * n * d * np.log(np.pi) + multigammaln(vn / 2, d) - multigammaln(v0 / 2, d)
            + 0.5 * v0 * np.linalg.slogdet(psi0)[1] - 0.5 * vn * np.linalg.slogdet(psin)[1] + 0.5 * d * np.log(k0 / kn))


def _exact_co_clustering(x, k, prior):
    """P(z_i = z_j | x) by enumerating all K^N labelings (Dirichlet-multinomial times the
    components' NIW marginals)."""
    n = x.shape[0]
    a = prior.alpha
    logp, zs = [], []
    for z in itertools.product(range(k), repeat=n):
        z = np.array(z)
        counts = np.bincount(z, minlength=k)
        lp = gammaln(k * a) - gammaln(n + k * a) + np.sum(gammaln(counts + a) - gammaln(a))
        lp += sum(_niw_log_marginal(x[z == j], prior) for j in range(k))
        logp.append(lp)
        zs.append(z)
    logp = np.array(logp)
    post = np.exp(logp - logp.max())
    post /= post.sum()
    same = np.array([z[:, None] == z[None, :] for z in zs], float)
    return np.einsum("l,lij->ij", post, same)


TINY_X = np.array([[-1.2, -0.4], [-0.6, 0.3], [-0.9, -0.1], [0.8, 0.9], [1.3, 0.2], [0.2, 0.4]])


def test_gibbs_co_clustering_matches_exact_enumeration():
    exact = _exact_co_clustering(TINY_X, 2, TINY_PRIOR)
    draws = mv.posterior(TINY_X, 2, key=7, prior=TINY_PRIOR, num_chains=4, num_draws=4000, num_warmup=200)
    est = mv.co_clustering(draws, TINY_X)
    # per-draw Rao-Blackwellised co-clustering, for its MCSE
    probs = np.concatenate([mg.table_probs(t) for t in mg.log_joint_tables(draws, TINY_X)]).reshape(4, 4000, 6, 2)
    per_draw = np.einsum("cdik,cdjk->cdij", probs, probs)
    iu = np.triu_indices(6, 1)
    se = np.array([_mcse(per_draw[:, :, i, j]) for i, j in zip(*iu)])
    assert 0.2 < exact[iu].min() and exact[iu].max() < 0.95  # an informative check: no pair certain
    mc_close(est[iu], exact[iu], se, floor=1e-3)


def _nuts_marginal(x, k, prior, seed_=0, num_chains=2, num_samples=1500):
    """NUTS (NumPyro) on the model with the assignments summed out."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model(x):
        w = numpyro.sample("w", dist.Dirichlet(prior.alpha * jnp.ones(k)))
        with numpyro.plate("k", k):
            cov = numpyro.sample("cov", dist.InverseWishart(prior.dof, scale_matrix=jnp.asarray(prior.scale)))
            mu = numpyro.sample("mu", dist.MultivariateNormal(jnp.asarray(prior.mean_loc), cov / prior.kappa))
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(w), dist.MultivariateNormal(mu, cov)), obs=x)

    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(model), num_warmup=800, num_samples=num_samples, num_chains=num_chains,
                    chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.key(seed_), jnp.asarray(x))
        s = mcmc.get_samples(group_by_chain=True)
    return mv.MvnDraws(np.asarray(s["w"]), np.asarray(s["mu"]), np.asarray(s["cov"]), prior)


@pytest.mark.slow
def test_gibbs_agrees_with_nuts_on_the_marginalised_model(rng):
    """Label-free posterior means (the data's log-likelihood, the mixture's log density at
    fixed points) agree within their Monte Carlo standard errors."""
    x = np.concatenate([rng.normal([-1.5, 0], 0.6, (14, 2)), rng.normal([1.5, 0.5], [0.8, 0.4], (10, 2))])
    points = np.array([[0.0, 0.0], [-1.5, 0.0], [1.5, 1.0]])
    gibbs = mv.posterior(x, 2, key=3, prior=TINY_PRIOR, num_chains=4, num_draws=2000, num_warmup=300)
    nuts = _nuts_marginal(x, 2, TINY_PRIOR)
    for draws in (gibbs, nuts):
        assert mv.diagnostics(draws, x, points)["max_r_hat"] < 1.02
    quantities = []
    for draws in (gibbs, nuts):
        ll = mv.draw_log_likelihood(draws, x)
        dens = np.concatenate([np.log(np.exp(t).sum(axis=2)) for t in mg.log_joint_tables(draws, points)])
        dens = dens.reshape(*draws.weights.shape[:2], -1)
        quantities.append([(q.mean(), _mcse(q)) for q in [ll] + [dens[..., j] for j in range(points.shape[0])]])
    for (g, gse), (n_, nse) in zip(*quantities):
        mc_close(g, n_, np.hypot(gse, nse))


def test_gibbs_compiles_once_per_shape_bucket(rng):
    """Data sizes within a bucket, numbers of chains, draws and warm-up sweeps share the
    sampler's two programs (for a K, D and dtype)."""
    x = rng.normal(0, 1, (40, 3))
    mv.posterior(x[:20], 3, key=0, num_chains=2, num_draws=30, num_warmup=10)
    sizes = (mg.chain_start._cache_size(), mg.chain_chunk._cache_size())
    for n, chains, draws, warmup in [(25, 4, 150, 0), (31, 3, 7, 250), (17, 1, 101, 99)]:
        out = mv.posterior(x[:n], 3, key=1, num_chains=chains, num_draws=draws, num_warmup=warmup)
        assert out.means.shape == (chains, draws, 3, 3)
    assert (mg.chain_start._cache_size(), mg.chain_chunk._cache_size()) == sizes
    mv.posterior(x, 3, key=0, num_chains=2, num_draws=5, num_warmup=0)  # the next bucket: new programs
    assert mg.chain_chunk._cache_size() == sizes[1] + 1


def test_label_free_summaries(rng):
    x = np.concatenate([rng.normal([-3, 0], 0.5, (20, 2)), rng.normal([3, 1], 0.5, (15, 2))])
    draws = mv.posterior(x, 2, key=5, num_chains=3, num_draws=200, num_warmup=100)
    # swap the labels of one chain: label-free summaries do not change, matched ones follow
    perm = mv.MvnDraws(draws.weights.copy(), draws.means.copy(), draws.covs.copy(), draws.prior)
    for a in (perm.weights, perm.means, perm.covs):
        a[1] = a[1][:, ::-1]
    np.testing.assert_allclose(mv.co_clustering(perm, x), mv.co_clustering(draws, x), atol=1e-12)
    np.testing.assert_allclose(mv.predictive_log_density(perm, x), mv.predictive_log_density(draws, x), atol=1e-12)
    probs = mv.assignment_probs(perm, x)
    np.testing.assert_allclose(probs, mv.assignment_probs(draws, x), atol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert probs[:20, 0].min() > 0.99 and probs[20:, 1].min() > 0.99  # components ordered by first coordinate
    # the predictive density is the average of the draws' densities
    dens = np.exp(np.concatenate([np.log(np.exp(t).sum(axis=2)) for t in mg.log_joint_tables(draws, x[:3])]))
    np.testing.assert_allclose(mv.predictive_log_density(draws, x[:3]), np.log(dens.mean(axis=0)), rtol=1e-10)
    with pytest.raises(ValueError, match="prior.dof"):
        mv.posterior(x, 2, key=0, prior=TINY_PRIOR._replace(dof=0.5))
