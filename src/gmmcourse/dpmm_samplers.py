"""The DP mixture's samplers as the book calls them, and label-free summaries of their draws.

`collapsed_gibbs` (Neal's algorithm 3, also for the `MFM`) and `blocked_gibbs` (truncated
stick-breaking) validate the data, centre them (and the prior's mean with them: the partition
posterior does not change under a common shift, and float32 sums stay accurate), pad them to a
bucket (`gmmcourse.shapes.bucket_size`), start every chain and run them all in one compiled
program (`gmmcourse.dpmm_sweeps.run_chains`). `DPPosterior` holds the draws, canonically
relabelled, with the number of occupied clusters, co-clustering, and split R-hat and ESS of the
number of clusters (ArviZ).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.dpmm_exact import MFM
from gmmcourse.dpmm_prior import DPPrior
from gmmcourse.dpmm_sweeps import run_chains
from gmmcourse.precision import x64_context
from gmmcourse.shapes import bucket_size
from gmmcourse.validation import check_positive_int

__all__ = ["DPPosterior", "collapsed_gibbs", "blocked_gibbs"]


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
