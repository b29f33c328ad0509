"""Dirichlet process mixtures of 1-D Gaussians: when the number of components is not fixed.

The model (Ferguson 1973; Antoniak 1974), with a conjugate prior on each cluster's mean and
variance so that clusters can be integrated out exactly:

* a partition of the n points drawn from the Chinese restaurant process with concentration
  ``alpha`` (equivalently, stick-breaking weights ``w_k = v_k prod_{l<k} (1 - v_l)``,
  ``v_k ~ Beta(1, alpha)``, and labels drawn from ``w``);
* for each cluster, ``sigma^2 ~ InverseGamma(a0, b0)`` and ``mu | sigma^2 ~ Normal(m0, sigma^2 / k0)``;
* ``x_i | cluster c ~ Normal(mu_c, sigma_c^2)``.

What is here:

* `crp`, `stick_breaking`, `dp_mixture`: the prior and the model as GenJAX generative functions
  (`simulate` draws from them; the tests check them against their exact laws);
* `expected_clusters`, `crp_log_prob`, `truncation_bound`: the exact laws used for that;
* `log_marginal`: log p(x_c) of one cluster's points under the conjugate prior (closed form);
* `exact_posterior`: the posterior over partitions by enumeration (Bell(n) partitions: 115,975
  at n = 10), hence exact P(number of clusters | x), the co-clustering matrix and log p(x);
* `collapsed_gibbs`: Neal's (2000) algorithm 3, each label drawn given the others with the
  clusters integrated out; the predictive of a point is a Student-t, evaluated by GenJAX's
  `student_t.assess`;
* `blocked_gibbs`: Ishwaran and James's (2001) truncated stick-breaking sampler (labels, sticks
  and cluster parameters drawn in blocks) with ``k_max`` sticks;
* `DPPosterior`: label-free summaries of either sampler's draws (number of occupied clusters,
  co-clustering) with split R-hat and ESS on the number of clusters (ArviZ).

Data are centred before sampling (and ``m0`` with them): the partition posterior does not
change under a common shift, and float32 sums stay accurate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from genjax import Const, beta, categorical, gen, inverse_gamma, normal
from genjax.core import distribution, wrap_logpdf, wrap_sampler
from jax.scipy.special import gammaln
from scipy.special import gammaln as np_gammaln

from gmmcourse.precision import x64_context
from gmmcourse.shapes import bucket_size
from gmmcourse.validation import check_positive_int

__all__ = [
    "DPPrior", "crp", "stick_breaking", "dp_mixture", "expected_clusters", "crp_log_prob", "truncation_bound",
    "MFM", "nig_posterior", "log_marginal", "set_partitions", "exact_posterior", "collapsed_gibbs", "blocked_gibbs", "DPPosterior",
]


class DPPrior(NamedTuple):
    """Hyper-parameters of the DP mixture.

    alpha: the concentration (larger: more clusters; E[K_n] grows like alpha log n).
    mean_loc, mean_strength: ``mu | sigma^2 ~ Normal(mean_loc, sigma^2 / mean_strength)``.
    var_shape, var_scale: ``sigma^2 ~ InverseGamma(var_shape, var_scale)`` (scale = rate of 1/sigma^2).
    """

    alpha: float = 1.0
    mean_loc: float = 0.0
    mean_strength: float = 0.1
    var_shape: float = 2.0
    var_scale: float = 1.0

    @classmethod
    def for_data(cls, x, alpha: float = 1.0, sd: float | None = None) -> "DPPrior":
        """A weakly informative prior on the data's scale: mean at the data's mean, a prior
        sample size of 0.1 points on it, and sigma^2 with prior mean ``sd**2`` (default: a
        quarter of the data's sd, so that one cluster is not the only fit)."""
        x = np.asarray(x, dtype=float)
        s = float(sd) if sd is not None else 0.25 * float(np.std(x))
        return cls(alpha=float(alpha), mean_loc=float(np.mean(x)), mean_strength=0.1, var_shape=2.0, var_scale=s * s)


# --------------------------------------------------------------------------- the prior in GenJAX


@gen
def crp(alpha, n: Const[int]):
    """The Chinese restaurant process: customer i sits at occupied table t with probability
    proportional to its count, at a new table with probability proportional to ``alpha``.
    Addresses ``"z0" ... "z{n-1}"``; tables are numbered in order of first use."""
    counts = jnp.zeros(n.value)
    labels = []
    for i in range(n.value):
        occupied = counts > 0
        new = jnp.sum(occupied)  # the next unused table
        logits = jnp.where(occupied, jnp.log(jnp.where(occupied, counts, 1.0)),
                           jnp.where(jnp.arange(n.value) == new, jnp.log(alpha), -jnp.inf))
        z = categorical(logits) @ f"z{i}"
        counts = counts.at[z].add(1.0)
        labels.append(z)
    return jnp.stack(labels)


@gen
def stick_breaking(alpha, k_max: Const[int]):
    """Weights of a DP truncated at ``k_max`` sticks: ``v_k ~ Beta(1, alpha)`` (addresses
    ``"v0" ...``), the last stick takes what is left. Returns the (k_max,) weights."""
    left = jnp.ones(())
    weights = []
    for k in range(k_max.value - 1):
        v = beta(1.0, alpha) @ f"v{k}"
        weights.append(left * v)
        left = left * (1.0 - v)
    weights.append(left)
    return jnp.stack(weights)


@gen
def dp_mixture(n: Const[int], prior: DPPrior, k_max: Const[int]):
    """The truncated DP mixture: sticks, each stick's (sigma^2, mu), then the points.
    Addresses: ``"sticks"`` (from `stick_breaking`), ``"s2_k"``, ``"mu_k"``, ``"z_i"``, ``"x_i"``."""
    w = stick_breaking(prior.alpha, k_max) @ "sticks"
    s2 = jnp.stack([inverse_gamma(prior.var_shape, prior.var_scale) @ f"s2_{k}" for k in range(k_max.value)])
    mu = jnp.stack([normal(prior.mean_loc, jnp.sqrt(s2[k] / prior.mean_strength)) @ f"mu_{k}"
                    for k in range(k_max.value)])
    xs = []
    for i in range(n.value):
        z = categorical(jnp.log(w)) @ f"z_{i}"
        xs.append(normal(mu[z], jnp.sqrt(s2[z])) @ f"x_{i}")
    return jnp.stack(xs)


# --------------------------------------------------------------------------- exact laws


def expected_clusters(n: int, alpha: float) -> float:
    """E[K_n] under the CRP: ``sum_{i=1}^n alpha / (alpha + i - 1)``."""
    i = np.arange(1, int(n) + 1)
    return float(np.sum(alpha / (alpha + i - 1)))


def crp_log_prob(sizes, alpha: float, n: int | None = None) -> float:
    """log P(a partition with these block sizes) under the CRP (Ewens' formula for one
    labelled partition): ``K log alpha + sum log Gamma(n_c) + log Gamma(alpha) - log Gamma(alpha + n)``."""
    sizes = np.asarray(sizes, dtype=float)
    sizes = sizes[sizes > 0]
    n = int(sizes.sum()) if n is None else n
    return float(len(sizes) * np.log(alpha) + np.sum(np_gammaln(sizes)) + np_gammaln(alpha) - np_gammaln(alpha + n))


def truncation_bound(n: int, alpha: float, k_max: int) -> float:
    """Ishwaran and James's (2001) bound on the total-variation distance between the
    marginal law of n points under the DP and under its ``k_max``-stick truncation:
    ``4 n exp(-(k_max - 1) / alpha)``."""
    return float(min(1.0, 4.0 * n * np.exp(-(k_max - 1) / alpha)))


@dataclass(frozen=True)
class MFM:
    """A mixture of finite mixtures (Miller and Harrison 2018): K ~ `k_pmf` on {1, 2, ...},
    weights ~ Dirichlet(gamma, ..., gamma), the same cluster prior. Its partition law is
    ``V_n(t) prod_c gamma^(n_c)`` (rising factorials), t the number of blocks, with
    ``V_n(t) = sum_{k >= t} k! / (k - t)! / ((gamma k)^(n)) p_K(k)``. Unlike the DP's, its
    posterior on the number of clusters concentrates at the truth for data from a finite mixture.
    Default: K - 1 ~ Poisson(1)."""

    gamma: float = 1.0
    k_pmf: tuple | None = None  # p_K(1), p_K(2), ...; None: K - 1 ~ Poisson(1)
    k_upper: int = 400

    def _log_pk(self) -> np.ndarray:
        k = np.arange(1, self.k_upper + 1)
        if self.k_pmf is None:
            return -1.0 - np_gammaln(k)  # Poisson(1) at k - 1
        pk = np.zeros(self.k_upper)
        pk[: len(self.k_pmf)] = self.k_pmf
        with np.errstate(divide="ignore"):
            return np.log(pk)

    def log_v(self, n: int) -> np.ndarray:
        """(n + 2,): log V_n(t) for t = 0 .. n + 1 (t = 0 unused: -inf)."""
        from scipy.special import logsumexp

        k = np.arange(1, self.k_upper + 1, dtype=float)
        lpk = self._log_pk()
        out = np.full(n + 2, -np.inf)
        rising = np_gammaln(self.gamma * k + n) - np_gammaln(self.gamma * k)
        for t in range(1, n + 2):
            ok = k >= t
            out[t] = logsumexp(np_gammaln(k[ok] + 1) - np_gammaln(k[ok] - t + 1) - rising[ok] + lpk[ok])
        return out

    def partition_log_prob(self, sizes, n: int | None = None) -> float:
        sizes = np.asarray(sizes, dtype=float)
        sizes = sizes[sizes > 0]
        n = int(sizes.sum()) if n is None else n
        return float(self.log_v(n)[len(sizes)] + np.sum(np_gammaln(sizes + self.gamma) - np_gammaln(self.gamma)))


def nig_posterior(count, total, total_sq, prior: DPPrior):
    """The Normal-Inverse-Gamma posterior of a cluster from its points' count, sum and sum of
    squares: ``(kappa_n, m_n, a_n, b_n)`` (the prior's own values for an empty cluster).
    Broadcasts; works on NumPy or JAX arrays."""
    xp = jnp if isinstance(count, jax.Array) else np
    n = count
    safe = xp.where(n > 0, n, 1.0)
    mean = xp.where(n > 0, total / safe, 0.0)
    ss = xp.maximum(total_sq - safe * mean * mean, 0.0) * (n > 0)
    k0, m0, a0, b0 = prior.mean_strength, prior.mean_loc, prior.var_shape, prior.var_scale
    kn = k0 + n
    return kn, (k0 * m0 + n * mean) / kn, a0 + n / 2.0, b0 + ss / 2.0 + k0 * n * (mean - m0) ** 2 / (2.0 * kn)


def log_marginal(count, total, total_sq, prior: DPPrior):
    """log p(x_c) of a cluster's points from their count, sum and sum of squares, under the
    Normal-Inverse-Gamma prior (0 for an empty cluster). Broadcasts; works on NumPy or JAX arrays."""
    xp = jnp if isinstance(count, jax.Array) else np
    lg = gammaln if xp is jnp else np_gammaln
    n = count
    k0, a0, b0 = prior.mean_strength, prior.var_shape, prior.var_scale
    kn, _, an, bn = nig_posterior(count, total, total_sq, prior)
    out = (lg(an) - lg(a0) + a0 * xp.log(b0) - an * xp.log(bn) + 0.5 * (xp.log(k0) - xp.log(kn))
           - 0.5 * n * xp.log(2.0 * np.pi))
    return xp.where(n > 0, out, 0.0)


def set_partitions(n: int) -> np.ndarray:
    """Every partition of n items as restricted growth strings, shape (Bell(n), n): item 0 is
    in block 0, item i in a block at most one above the largest block before it."""
    n = check_positive_int(n, "n")
    rows = np.zeros((1, 1), dtype=np.int8)
    for _ in range(1, n):
        top = rows.max(axis=1)
        reps = top + 2
        idx = np.repeat(np.arange(len(rows)), reps)
        new = np.concatenate([np.arange(r) for r in reps]).astype(np.int8)
        rows = np.concatenate([rows[idx], new[:, None]], axis=1)
    return rows


@dataclass
class ExactDP:
    """The exact posterior over partitions (`exact_posterior`)."""

    num_clusters: np.ndarray   # (n + 1,): P(K = k | x), K the number of occupied clusters
    co_clustering: np.ndarray  # (n, n): P(z_i = z_j | x)
    log_evidence: float        # log p(x)
    num_partitions: int


def exact_posterior(x, prior: DPPrior, chunk: int = 200_000, mfm: MFM | None = None) -> ExactDP:
    """P(partition | x) for every partition of the data (n <= 12: Bell(12) = 4,213,597), under
    the DP's partition law, or the `MFM`'s when given (the cluster prior is ``prior``'s)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n > 12:
        raise ValueError(f"exact enumeration is for n <= 12 points (Bell({n}) partitions is too many)")
    shift = float(np.mean(x))
    xc, pr = x - shift, prior._replace(mean_loc=prior.mean_loc - shift)
    parts = set_partitions(n)
    logs = np.empty(len(parts))
    ks = parts.max(axis=1) + 1
    for st in range(0, len(parts), chunk):
        p = parts[st:st + chunk]
        onehot = p[:, :, None] == np.arange(n)[None, None, :]          # (P, n, blocks)
        cnt = onehot.sum(axis=1).astype(float)
        s1 = np.einsum("pib,i->pb", onehot, xc)
        s2 = np.einsum("pib,i->pb", onehot, xc * xc)
        lm = log_marginal(cnt, s1, s2, pr).sum(axis=1)
        occupied = cnt > 0
        if mfm is None:
            lcrp = (occupied.sum(axis=1) * np.log(pr.alpha) + np.where(occupied, np_gammaln(np.where(occupied, cnt, 1.0)), 0).sum(1)
                    + np_gammaln(pr.alpha) - np_gammaln(pr.alpha + n))
        else:
            lcrp = (mfm.log_v(n)[occupied.sum(axis=1)]
                    + np.where(occupied, np_gammaln(cnt + mfm.gamma) - np_gammaln(mfm.gamma), 0).sum(1))
        logs[st:st + chunk] = lm + lcrp
    top = logs.max()
    w = np.exp(logs - top)
    z = w.sum()
    w /= z
    num = np.bincount(ks, weights=w, minlength=n + 1)
    co = np.zeros((n, n))
    for st in range(0, len(parts), chunk):
        p = parts[st:st + chunk]
        same = p[:, :, None] == p[:, None, :]
        co += np.einsum("p,pij->ij", w[st:st + chunk], same)
    return ExactDP(num_clusters=num, co_clustering=co, log_evidence=float(top + np.log(z)), num_partitions=len(parts))


# --------------------------------------------------------------------------- samplers


def _t_sample(key, df, loc, scale, sample_shape=()):
    shape = tuple(sample_shape) + jnp.broadcast_shapes(jnp.shape(df), jnp.shape(loc), jnp.shape(scale))
    return loc + scale * jax.random.t(key, df, shape)


student_t = distribution(wrap_sampler(_t_sample, name="student_t"), wrap_logpdf(jax.scipy.stats.t.logpdf),
                         name="student_t")
"""Student's t(df, loc, scale) as a GenJAX distribution with JAX's density (`jax.scipy.stats.t`).
GenJAX's own `genjax.student_t` wraps TFP's StudentT, whose careful log-beta normaliser
compiles to about 1.8 times the operations; the density is two thirds of a collapsed sweep's
time, so with it the sweep took about 1.3-1.5 times its plain-JAX twin's (benchmarks/bench_dpmm.py)."""


def _predictive_logpdf(xi, count, total, total_sq, prior: DPPrior):
    """log p(x_i | a cluster's other points): Student-t (2 a_n dof), by GenJAX's `assess` of `student_t`."""
    kn, mn, an, bn = nig_posterior(count, total, total_sq, prior)
    scale = jnp.sqrt(bn * (kn + 1.0) / (an * kn))
    logp, _ = student_t.assess(xi, 2.0 * an, mn, scale)
    return logp


def _collapsed_sweep(key, z, x, n, prior: DPPrior, rule, num_slots):
    """One sweep of Neal's algorithm 3 over the first ``n`` points of ``x`` (the rest is
    padding: ``n`` is traced, so one program serves every n in a `bucket_size`), labels in ``num_slots`` slots (a new
    cluster takes the first empty slot; with fewer slots than points, a step that finds none
    empty sets the returned flag and the caller refuses the draws). ``rule = (offset, log_new)``: an occupied cluster of size m
    weighs ``m + offset``, a new one ``exp(log_new[t])`` with t clusters among the other points
    (the DP: offset 0 and log alpha; the MFM: gamma and log gamma + log V_n(t+1) - log V_n(t)).
    Returns the new labels and whether a step found every slot taken."""
    offset, log_new = rule
    slots = jnp.arange(num_slots)
    real = jnp.arange(x.shape[0]) < n
    onehot = ((z[:, None] == slots[None, :]) & real[:, None]).astype(x.dtype)
    stats = (onehot.sum(0), onehot.T @ x, onehot.T @ (x * x))
    keys = jax.random.split(key, x.shape[0])  # threefry: the first n are those of split(key, n)

    def step(i, carry):
        z, (cnt, s1, s2), full = carry
        k = keys[i]
        xi, zi = x[i], z[i]
        cnt, s1, s2 = cnt.at[zi].add(-1.0), s1.at[zi].add(-xi), s2.at[zi].add(-xi * xi)
        occupied = cnt > 0
        full = full | jnp.all(occupied)
        first_empty = jnp.argmin(occupied)  # one is always empty with n slots (n - 1 other points)
        pred = jax.vmap(lambda c, a, b: _predictive_logpdf(xi, c, a, b, prior))(cnt, s1, s2)
        logits = jnp.where(occupied, jnp.log(jnp.where(occupied, cnt, 1.0) + offset) + pred,
                           jnp.where(slots == first_empty, log_new[jnp.sum(occupied)] + pred, -jnp.inf))
        new = jax.random.categorical(k, logits).astype(z.dtype)
        cnt, s1, s2 = cnt.at[new].add(1.0), s1.at[new].add(xi), s2.at[new].add(xi * xi)
        return z.at[i].set(new), (cnt, s1, s2), full

    z, _, full = jax.lax.fori_loop(0, n, step, (z, stats, jnp.zeros((), bool)))
    return z, full


def _blocked_sweep(key, z, x, n, prior: DPPrior, k_max: int):
    """One sweep of the truncated blocked Gibbs sampler over the first ``n`` points of ``x``
    (the rest is padding, left out of the clusters: ``n`` is traced, so one program serves
    every n in a `bucket_size`): cluster parameters and sticks given the labels, then every
    label given them (the padding's labels are drawn too, and discarded)."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    real = jnp.arange(x.shape[0]) < n
    onehot = ((z[:, None] == jnp.arange(k_max)[None, :]) & real[:, None]).astype(x.dtype)
    cnt, s1, s2 = onehot.sum(0), onehot.T @ x, onehot.T @ (x * x)
    kn, mn, an, bn = nig_posterior(cnt, s1, s2, prior)
    var = bn / jax.random.gamma(k1, an)
    mu = mn + jnp.sqrt(var / kn) * jax.random.normal(k2, (k_max,), x.dtype)
    after = jnp.cumsum(cnt[::-1])[::-1] - cnt  # points in later sticks
    ga = jax.random.gamma(k3, 1.0 + cnt)
    gb = jax.random.gamma(k4, prior.alpha + after)
    v = (ga / (ga + gb)).at[-1].set(1.0)
    logw = jnp.log(v) + jnp.concatenate([jnp.zeros(1, x.dtype), jnp.cumsum(jnp.log1p(-v[:-1]))])
    table = logw[None, :] - 0.5 * jnp.log(2 * jnp.pi * var)[None, :] - 0.5 * (x[:, None] - mu[None, :]) ** 2 / var[None, :]
    return jax.random.categorical(k5, table, axis=-1)


@partial(jax.jit, static_argnames=("k_max", "num_slots", "num_warmup", "num_samples"))
def run_chain(key, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples):
    """`num_samples` sweeps after `num_warmup`: the collapsed sampler when ``k_max == 0``, else
    the blocked one on ``k_max`` sticks. Returns the draws and whether the collapsed sampler
    ever found all its slots taken."""
    def body(carry, k):
        z, full = carry
        if k_max == 0:
            z, f = _collapsed_sweep(k, z, x, n, prior, rule, num_slots)
            full = full | f
        else:
            z = _blocked_sweep(k, z, x, n, prior, k_max)
        z = z.astype(jnp.int32)
        return (z, full), z

    kw, ks = jax.random.split(key)
    carry, _ = jax.lax.scan(body, (z0, jnp.zeros((), bool)), jax.random.split(kw, num_warmup))
    (_, full), draws = jax.lax.scan(body, carry, jax.random.split(ks, num_samples))
    return draws, full


@partial(jax.jit, static_argnames=("k_max", "num_slots", "num_warmup", "num_samples"))
def run_chains(keys, z0, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples):
    """`run_chain` for every chain (one compiled program per data bucket, not per call)."""
    return jax.vmap(lambda k, z: run_chain(k, z, x, n, prior, rule, k_max, num_slots, num_warmup, num_samples))(keys, z0)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel each draw's clusters in order of first appearance (a label-free form)."""
    out = np.empty_like(labels)
    flat = labels.reshape(-1, labels.shape[-1])
    res = out.reshape(-1, labels.shape[-1])
    for r, row in enumerate(flat):
        _, first, inv = np.unique(row, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        res[r] = order[inv]
    return out


@dataclass
class DPPosterior:
    """Draws of a DP mixture sampler: labels (chains, draws, n), canonical (clusters numbered
    in order of first appearance)."""

    labels: np.ndarray
    sampler: str

    @property
    def num_clusters(self) -> np.ndarray:
        """(chains, draws): the number of occupied clusters of each draw."""
        return self.labels.max(axis=-1) + 1

    def num_clusters_probs(self) -> np.ndarray:
        """(n + 1,): the fraction of draws with k occupied clusters."""
        n = self.labels.shape[-1]
        return np.bincount(self.num_clusters.ravel(), minlength=n + 1)[: n + 1] / self.num_clusters.size

    def co_clustering(self) -> np.ndarray:
        """(n, n): the fraction of draws in which points i and j share a cluster."""
        lab = self.labels.reshape(-1, self.labels.shape[-1])
        return (lab[:, :, None] == lab[:, None, :]).mean(axis=0)

    def diagnostics(self) -> dict:
        """Split R-hat and bulk ESS of the number of clusters (ArviZ), the label-free quantity."""
        from arviz_stats.base import array_stats

        k = self.num_clusters.astype(float)
        if np.all(k == k.flat[0]):  # a constant: no mixing question to answer
            return {"r_hat": 1.0, "ess_bulk": float(k.size)}
        return {"r_hat": float(array_stats.rhat(k, chain_axis=-2, draw_axis=-1)),
                "ess_bulk": float(array_stats.ess(k, chain_axis=-2, draw_axis=-1, method="bulk"))}


def _sample(x, prior: DPPrior, k_max, num_chains, num_samples, num_warmup, seed, name, z0_fn, mfm=None,
            max_clusters=None):
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError("x must hold at least one finite number")
    num_chains = check_positive_int(num_chains, "num_chains")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_warmup = int(num_warmup)
    shift = float(np.mean(x))
    # the data are padded to a bucket (n traced): one program for every n in the bucket
    size = bucket_size(x.size)
    slots = x.size if max_clusters is None else min(x.size, max_clusters)
    compiled_slots = size if max_clusters is None else min(size, max_clusters)
    with x64_context(np.float64):
        pr = DPPrior(*(jnp.asarray(v, jnp.float64) for v in prior._replace(mean_loc=prior.mean_loc - shift)))
        xs = jnp.asarray(np.pad(x - shift, (0, size - x.size)), jnp.float64)
        keys = jax.random.split(jax.random.key(seed), num_chains)
        z0 = np.zeros((num_chains, size), np.int32)
        for c, k in enumerate(keys):
            z0[c, :x.size] = np.asarray(z0_fn(c, k, x, slots))
        if mfm is None:
            rule = (jnp.float64(0.0), jnp.full(size + 1, jnp.log(pr.alpha)))
        else:
            lv = mfm.log_v(x.size)
            step = np.log(mfm.gamma) + lv[1:] - lv[:-1]  # t = 0 (no other point) only for n = 1
            step = np.pad(np.where(np.isfinite(step), step, 0.0), (0, size - x.size))
            rule = (jnp.float64(mfm.gamma), jnp.asarray(step))
        draws, full = run_chains(keys, jnp.asarray(z0), xs, jnp.int32(x.size), pr, rule, k_max, compiled_slots,
                                  num_warmup, num_samples)
        labels = np.asarray(draws)[..., :x.size]
    if k_max == 0 and slots < x.size and bool(np.any(full)):
        raise RuntimeError(f"a chain wanted more than {slots - 1} clusters (max_clusters={max_clusters}): "
                           "its draws are not from the posterior; raise max_clusters")
    return DPPosterior(labels=_canonical(labels), sampler=name)


def collapsed_gibbs(x, prior: DPPrior, *, num_chains: int = 4, num_samples: int = 1000, num_warmup: int = 200,
                    seed: int = 0, mfm: MFM | None = None, max_clusters: int | None = 64) -> DPPosterior:
    """Neal's (2000) algorithm 3 (clusters integrated out); with ``mfm``, the same sampler for
    the mixture of finite mixtures (Miller and Harrison's 2018 restaurant process).

    Each point's step weighs ``min(n, max_clusters)`` slots (not n: the work of a sweep grows
    with n times the slots); a chain that ever finds them all taken raises instead of
    returning draws that are not the posterior's (``max_clusters=None``: n slots, never full).
    Chain c starts from the data cut at quantiles into 1, 3, 6 or 10 clusters (c mod 4; at
    most the slots less one): over-dispersed starts for R-hat. Single-point moves empty a
    cluster more easily than they build one from a single broad cluster, which an all-in-one
    start showed (MFM chains stayed there for thousands of sweeps at n = 400)."""
    def z0(c, k, x, slots):
        groups = max(1, min((1, 3, 6, 10)[c % 4], slots - 1, x.size))
        ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
        return (ranks * groups // x.size).astype(np.int32)  # NumPy: no per-n program

    return _sample(x, prior, 0, num_chains, num_samples, num_warmup, seed, "collapsed" + (" (MFM)" if mfm else ""),
                   z0, mfm, max_clusters)


def blocked_gibbs(x, prior: DPPrior, *, k_max: int = 20, num_chains: int = 4, num_samples: int = 1000,
                  num_warmup: int = 200, seed: int = 0) -> DPPosterior:
    """Ishwaran and James's (2001) blocked Gibbs sampler on ``k_max`` sticks (see
    `truncation_bound` for the error of the truncation)."""
    k_max = check_positive_int(k_max, "k_max")

    def z0(c, k, x, slots):  # drawn for the bucket (no per-n program); the first n are randint(k, (n,))'s
        return np.asarray(jax.random.randint(k, (bucket_size(x.size),), 0, min(k_max, x.size)), np.int32)[:x.size]

    return _sample(x, prior, k_max, num_chains, num_samples, num_warmup, seed, f"blocked (k_max={k_max})", z0)
