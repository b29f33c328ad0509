"""The DP mixture (gmmcourse.dpmm): its prior against exact laws, the exact partition
posterior against an independent route, and both samplers against the exact posterior."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from genjax import Const, seed
from scipy import stats
from scipy.special import gammaln

from conftest import mc_close
from gmmcourse import dpmm
from gmmcourse.dpmm import DPPrior

BELL = [1, 2, 5, 15, 52, 203, 877, 4140, 21147, 115975]
X = np.array([1.0, 1.3, 0.8, 5.0, 5.4, 4.9, 9.0, 1.1])


def test_set_partitions_are_every_partition_once():
    for n, bell in enumerate(BELL, start=1):
        p = dpmm.set_partitions(n)
        assert p.shape == (bell, n)
        assert len({r.tobytes() for r in p}) == bell
        assert np.all(p[:, 0] == 0) and np.all(np.diff(np.maximum.accumulate(p, axis=1), axis=1) <= 1)


def _sequential_log_marginal(x, prior):
    """log p(x_c) by the chain rule: each point's Student-t predictive given the ones before."""
    total = 0.0
    for i in range(len(x)):
        past = np.asarray(x[:i])
        n = len(past)
        mean = past.mean() if n else 0.0
        ss = ((past - mean) ** 2).sum() if n else 0.0
        k0, m0, a0, b0 = prior.mean_strength, prior.mean_loc, prior.var_shape, prior.var_scale
        kn, an = k0 + n, a0 + n / 2
        mn = (k0 * m0 + n * mean) / kn
        bn = b0 + ss / 2 + k0 * n * (mean - m0) ** 2 / (2 * kn)
        total += stats.t(2 * an, loc=mn, scale=np.sqrt(bn * (kn + 1) / (an * kn))).logpdf(x[i])
    return total


def test_log_marginal_is_the_chain_of_predictives():
    prior = DPPrior(alpha=1.0, mean_loc=2.0, mean_strength=0.3, var_shape=2.5, var_scale=1.7)
    for x in (X[:1], X[:3], X):
        got = dpmm.log_marginal(np.float64(len(x)), x.sum(), (x * x).sum(), prior)
        assert got == pytest.approx(_sequential_log_marginal(x, prior), rel=1e-10)


def test_crp_probability_is_the_seating_product():
    alpha = 0.7
    for z in ([0, 0, 1, 0, 2, 1], [0, 1, 2, 3], [0, 0, 0]):
        p, counts = 0.0, []
        for i, t in enumerate(z):
            if t == len(counts):
                p += np.log(alpha / (alpha + i))
                counts.append(1)
            else:
                p += np.log(counts[t] / (alpha + i))
                counts[t] += 1
        assert dpmm.crp_log_prob(np.bincount(z), alpha) == pytest.approx(p, rel=1e-12)


def test_exact_posterior_by_brute_force_over_labellings():
    """n = 5: every labelling in {0..4}^5, weighted by the CRP's seating probability of its
    canonical form (divided by the labellings that share it) and the chain-rule marginals."""
    x, prior = X[:5], DPPrior.for_data(X[:5], alpha=1.3)
    ex = dpmm.exact_posterior(x, prior)
    canon = {}
    for lab in itertools.product(range(5), repeat=5):
        _, first, inv = np.unique(lab, return_index=True, return_inverse=True)
        c = tuple(np.argsort(np.argsort(first))[inv])
        canon.setdefault(c, 0)
    logs = {}
    for c in canon:
        c = np.array(c)
        lp = dpmm.crp_log_prob(np.bincount(c), prior.alpha)
        lp += sum(_sequential_log_marginal(x[c == b], prior) for b in range(c.max() + 1))
        logs[tuple(c)] = lp
    top = max(logs.values())
    z = sum(np.exp(v - top) for v in logs.values())
    num = np.zeros(6)
    for c, v in logs.items():
        num[max(c) + 1] += np.exp(v - top) / z
    assert len(logs) == 52
    np.testing.assert_allclose(ex.num_clusters, num, atol=1e-12)
    assert ex.log_evidence == pytest.approx(top + np.log(z), rel=1e-12)


def _crp_draws(alpha, n, num):
    sim = jax.vmap(lambda k: seed(dpmm.crp.simulate)(k, alpha, Const(n)).get_retval())
    return np.asarray(sim(jax.random.split(jax.random.key(0), num)))


def test_crp_in_genjax_has_the_exact_number_of_tables():
    alpha, n, num = 1.5, 12, 4000
    k = _crp_draws(alpha, n, num).max(axis=1) + 1
    mc_close(k.mean(), dpmm.expected_clusters(n, alpha), k.std() / np.sqrt(num))
    # P(K_n = k) = |s(n, k)| alpha^k Gamma(alpha) / Gamma(alpha + n) (unsigned Stirling numbers of the first kind)
    s = np.zeros((n + 1, n + 1))
    s[0, 0] = 1
    for m in range(1, n + 1):
        for j in range(1, m + 1):
            s[m, j] = s[m - 1, j - 1] + (m - 1) * s[m - 1, j]
    exact = s[n] * alpha ** np.arange(n + 1) * np.exp(gammaln(alpha) - gammaln(alpha + n))
    assert exact.sum() == pytest.approx(1.0)
    freq = np.bincount(k, minlength=n + 1) / num
    mc_close(freq, exact, np.sqrt(exact * (1 - exact) / num), floor=1e-3)


def test_stick_breaking_first_weight_is_beta():
    alpha, num = 2.0, 4000
    sim = jax.vmap(lambda k: seed(dpmm.stick_breaking.simulate)(k, alpha, Const(10)).get_retval())
    w = np.asarray(sim(jax.random.split(jax.random.key(1), num)))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert stats.kstest(w[:, 0], stats.beta(1, alpha).cdf).pvalue > 1e-4
    # E[w_2] = E[v_2] E[1 - v_1] = (1/(1+a)) (a/(1+a))
    mc_close(w[:, 1].mean(), alpha / (1 + alpha) ** 2, w[:, 1].std() / np.sqrt(num))


def test_truncation_bound():
    assert dpmm.truncation_bound(100, 1.0, 30) == pytest.approx(400 * np.exp(-29))
    assert dpmm.truncation_bound(100, 5.0, 2) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["collapsed", "blocked"])
def test_samplers_match_the_exact_partition_posterior(sampler):
    """P(K | x) and the co-clustering matrix within Monte Carlo error: binomial standard errors
    with the ESS of the number of clusters (ArviZ), halved for the co-clustering entries (their
    indicators can mix more slowly than K)."""
    prior = DPPrior.for_data(X, alpha=1.0)
    ex = dpmm.exact_posterior(X, prior)
    run = dpmm.collapsed_gibbs if sampler == "collapsed" else dpmm.blocked_gibbs
    post = run(X, prior, num_chains=4, num_samples=2500, num_warmup=300, seed=3)
    d = post.diagnostics()
    assert d["r_hat"] < 1.01, d
    ess = d["ess_bulk"]
    p = ex.num_clusters
    mc_close(post.num_clusters_probs(), p, np.sqrt(p * (1 - p) / ess), floor=2e-3)
    co = np.clip(ex.co_clustering, 0.0, 1.0)
    mc_close(post.co_clustering(), co, np.sqrt(co * (1 - co) / (ess / 2)), floor=2e-3)


def test_mfm_partition_law_sums_to_one_and_matches_the_dp_structure():
    """Sum over every partition of n = 7 of the MFM's partition law is 1 (an independent check
    of V_n), and for K fixed at one component every point shares one cluster."""
    mfm = dpmm.MFM(gamma=1.0)
    parts = dpmm.set_partitions(7)
    total = sum(np.exp(mfm.partition_log_prob(np.bincount(p), 7)) for p in parts)
    assert total == pytest.approx(1.0, rel=1e-9)
    one = dpmm.MFM(gamma=0.5, k_pmf=(1.0,))
    assert np.exp(one.partition_log_prob([7])) == pytest.approx(1.0)
    assert np.exp(one.partition_log_prob([3, 4])) == pytest.approx(0.0, abs=1e-300)


@pytest.mark.slow
def test_mfm_sampler_matches_the_exact_mfm_posterior():
    prior = DPPrior.for_data(X, alpha=1.0)
    mfm = dpmm.MFM(gamma=1.0)
    ex = dpmm.exact_posterior(X, prior, mfm=mfm)
    post = dpmm.collapsed_gibbs(X, prior, mfm=mfm, num_chains=4, num_samples=2500, num_warmup=300, seed=5)
    d = post.diagnostics()
    assert d["r_hat"] < 1.01, d
    p = ex.num_clusters
    mc_close(post.num_clusters_probs(), p, np.sqrt(p * (1 - p) / d["ess_bulk"]), floor=2e-3)
    # the MFM puts less mass on extra small clusters than the DP does, on the same data and cluster prior
    dp = dpmm.exact_posterior(X, prior)
    assert ex.num_clusters[4:].sum() < dp.num_clusters[4:].sum()


def test_a_chain_that_runs_out_of_slots_is_refused():
    """Fewer slots than the posterior needs (X has three or more clusters with probability
    0.98): an error, never silently wrong draws; enough slots: no error."""
    prior = DPPrior.for_data(X, alpha=1.0)
    with pytest.raises(RuntimeError, match="more than 2 clusters"):
        dpmm.collapsed_gibbs(X, prior, num_chains=2, num_samples=50, num_warmup=10, max_clusters=3)
    post = dpmm.collapsed_gibbs(X, prior, num_chains=2, num_samples=50, num_warmup=10, max_clusters=None)
    assert post.num_clusters.max() >= 3
