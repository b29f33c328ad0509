"""Exact laws of the DP mixture: what the samplers and the GenJAX prior are checked against.

* `expected_clusters`, `crp_log_prob`, `truncation_bound`: the Chinese restaurant process's
  expected number of clusters, its probability of one partition (Ewens' formula), and the
  stick-breaking truncation's error bound;
* `MFM`: the mixture of finite mixtures' partition law (Miller and Harrison 2018);
* `set_partitions`, `exact_posterior`: the posterior over partitions by enumeration (Bell(n)
  partitions: 115,975 at n = 10), hence exact P(number of clusters | x), the co-clustering
  matrix and log p(x) (`ExactDP`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammaln as np_gammaln

from gmmcourse.dpmm_prior import log_marginal
from gmmcourse.validation import check_positive_int

if TYPE_CHECKING:
    from gmmcourse.dpmm_prior import DPPrior

__all__ = ["expected_clusters", "crp_log_prob", "truncation_bound", "MFM", "set_partitions", "ExactDP",
           "exact_posterior"]


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
