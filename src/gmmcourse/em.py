"""Maximum-likelihood EM for 1-D Gaussian mixtures (jitted; per-point arrays kept (K, N))."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.precision import x64_context
from gmmcourse.shapes import K_PAD, N_BUCKETS, RESTART_GROUP, bucket_jit, is_small, pad_em
from gmmcourse.validation import check_data, check_dtype, check_k, check_non_negative, check_positive_int

__all__ = ["EMResult", "em", "kmeans_plus_plus"]

_LOG_2PI = float(np.log(2 * np.pi))


class EMResult(NamedTuple):
    """A maximum-likelihood fit, components sorted by increasing mean.

    Attributes:
        weights, means, sds: numpy arrays of shape (K,).
        log_likelihood: total log-likelihood sum_i log p(x_i) at the fit.
        n_iter: EM iterations of the best restart.
        converged: whether the best restart met the tolerance before `max_iter`.
        restart_log_likelihoods: final log-likelihood of every restart, shape (restarts,).
    """

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool
    restart_log_likelihoods: np.ndarray


def kmeans_plus_plus(key, x, k, mask=None, n=None, k_active=None):
    """k-means++ seeding: `k` distinct data points, far apart with high probability, sorted.

    Args:
        key: PRNG key. x: (N,) data. k: static int.
        mask: optional (N,) bool, the real points of a padded `x` (padding is never chosen).
        n: number of real points (traced allowed); default N.
        k_active: number of seeds to draw (traced allowed, <= k); default k. The remaining
            k - k_active entries repeat the smallest seed.

    Returns:
        (k,) initial means.
    """
    n = x.shape[0] if n is None else n
    padded_k = k_active is not None
    k_active = k if k_active is None else k_active
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    centers = jnp.full((k,), first)

    def body(j, centers):
        d2 = jnp.min((x[None, :] - centers[:, None]) ** 2 + jnp.where(jnp.arange(k)[:, None] < j, 0.0, jnp.inf), axis=0)
        logits = jnp.where(d2 > 0, jnp.log(jnp.maximum(d2, 1e-300)), -jnp.inf)
        if mask is not None:
            logits = jnp.where(mask, logits, -jnp.inf)
        # if every point coincides with a centre (duplicates), fall back to uniform
        uniform = jnp.zeros_like(logits) if mask is None else jnp.where(mask, 0.0, -jnp.inf).astype(logits.dtype)
        logits = jnp.where(jnp.all(jnp.isneginf(logits)), uniform, logits)
        idx = jax.random.categorical(keys[j], logits)
        return centers.at[j].set(x[idx])

    centers = jax.lax.fori_loop(1, k_active, body, centers)
    if not padded_k:
        return jnp.sort(centers)
    active = jnp.arange(k) < k_active
    centers = jnp.sort(jnp.where(active, centers, jnp.inf))
    return jnp.where(active, centers, centers[0])


BLOCK = 50_000  # points per block: a block's (K, BLOCK) temporaries stay in the CPU's cache

PREFIXES = (32,)
"""E-step widths on small data: EM pads every data size up to the last small bucket
(`gmmcourse.shapes.N_BUCKETS`, one program for N = 1..2,048), and each E-step visits the
first 32 points when they hold the real ones, else all of them (`suff_stats`). More widths
would run mid-size data faster but add a copy of the E-step to the program per width
(256 as well: about 0.5 s more compilation)."""


def _block_stats(x, weights, means, variances, mask):
    """E-step on a block of points: sums over the block of r_ik, r_ik d_ik, r_ik d_ik^2 (each
    (K,), with d_ik = x_i - mean_k and r the responsibilities) and of log p(x_i).

    One exponential per (component, point) and one logarithm per point: the responsibilities
    reuse the exponentials of the log-sum-exp. Padded points (mask False) get responsibility
    exactly 0 (their normaliser is set to infinity) and add 0 to the log-likelihood; inactive
    components (weight 0) get exp(-inf) = 0.
    """
    d = x[None, :] - means[:, None]  # (K, B)
    lj = (jnp.log(weights) - 0.5 * (_LOG_2PI + jnp.log(variances)))[:, None] - 0.5 * d * d / variances[:, None]
    top = jnp.max(lj, axis=0)  # (B,)
    e = jnp.exp(lj - top[None, :])
    total = jnp.sum(e, axis=0)
    if mask is None:
        r = e / total[None, :]
        rd = r * d
        return jnp.sum(r, axis=1), jnp.sum(rd, axis=1), jnp.sum(rd * d, axis=1), jnp.sum(top + jnp.log(total))
    r = e / jnp.where(mask, total, jnp.inf)[None, :]
    rd = r * d
    return jnp.sum(r, axis=1), jnp.sum(rd, axis=1), jnp.sum(rd * d, axis=1), jnp.sum(jnp.where(mask, top + jnp.log(total), 0.0))


def suff_stats(x, weights, means, variances, mask=None, n=None):
    """`_block_stats` over all points, `BLOCK` points at a time (a `lax.scan` over full
    blocks, then the remainder): XLA:CPU then keeps each block's temporaries in cache
    instead of streaming (K, N) arrays through memory several times. `mask`: the real
    points of padded data (default: all). With padded small data (`mask` and the number
    `n` of real points given, real points first), only the shortest of the `PREFIXES`
    (or all of x) that holds the real points (`lax.switch` on the traced n): the sums are
    the prefix's (padding adds zeros), and data within the first prefix run as fast as in
    a program of their own."""
    k = weights.shape[0]
    if mask is not None and n is not None and x.shape[0] <= N_BUCKETS[-1]:
        widths = [w for w in PREFIXES if w < x.shape[0]] + [x.shape[0]]
        branches = [lambda x, mask, w=w: _block_stats(x[:w], weights, means, variances, mask[:w]) for w in widths]
        return jax.lax.switch(jnp.sum(jnp.asarray(widths[:-1]) < n), branches, x, mask)
    n = x.shape[0]
    full = n // BLOCK * BLOCK
    acc = (jnp.zeros(k, x.dtype), jnp.zeros(k, x.dtype), jnp.zeros(k, x.dtype), jnp.zeros((), x.dtype))
    if full:
        def body(acc, block):
            xb, mb = block
            return jax.tree.map(jnp.add, acc, _block_stats(xb, weights, means, variances, mb)), None

        blocks = None if mask is None else mask[:full].reshape(-1, BLOCK)
        acc, _ = jax.lax.scan(body, acc, (x[:full].reshape(-1, BLOCK), blocks))
    if full < n:
        acc = jax.tree.map(jnp.add, acc, _block_stats(x[full:], weights, means, variances, None if mask is None else mask[full:]))
    return acc


def _em_step(x, mask, n, active, weights, means, variances, reg_var):
    """One E+M step; returns new parameters and the log-likelihood of the OLD ones.

    The M-step's sums are taken about the old means (d = x - mean), which needs no second
    pass over x and avoids the cancellation of E[x^2] - E[x]^2. Inactive components keep
    weight 0 and variance 1. `n`: the number of real points (int).
    """
    nk, s1, s2, loglik = suff_stats(x, weights, means, variances, mask, n)
    nk = nk + 10 * jnp.finfo(x.dtype).tiny
    shift = s1 / nk
    variances = s2 / nk - shift**2 + reg_var
    weights = jnp.where(active, nk / n.astype(x.dtype), 0.0)
    variances = jnp.where(active, jnp.maximum(variances, reg_var), 1.0)
    return weights, means + shift, variances, loglik


def _em_one(key, x, mask, n, k, k_pad, max_iter, tol, reg_var):
    """One restart on padded data: `k` (traced) active components out of `k_pad` (static)."""
    dtype = x.dtype
    nf = n.astype(dtype)
    kf = k.astype(dtype)
    active = jnp.arange(k_pad) < k
    means = kmeans_plus_plus(key, x, k_pad, mask=mask, n=n, k_active=k)
    if mask is None:
        var = jnp.var(x)
    else:
        centre = jnp.sum(jnp.where(mask, x, 0.0)) / nf
        var = jnp.sum(jnp.where(mask, (x - centre) ** 2, 0.0)) / nf
    variances = jnp.where(active, var / kf**2 + reg_var, 1.0)
    weights = jnp.where(active, 1.0 / kf, 0.0).astype(dtype)

    def cond(state):
        _, _, _, ll, ll_prev, it = state
        return (it < max_iter) & ~(jnp.abs(ll - ll_prev) <= tol * nf)

    def body(state):
        w, m, v, ll, _, it = state
        w, m, v, ll_new = _em_step(x, mask, n, active, w, m, v, reg_var)
        return w, m, v, ll_new, ll, it + 1

    inf = jnp.asarray(jnp.inf, dtype)
    state = (weights, means, variances, -inf, inf, jnp.asarray(0, max_iter.dtype))
    w, m, v, ll_prev_step, _, it = jax.lax.while_loop(cond, body, state)
    final_ll = suff_stats(x, w, m, v, mask, n)[3]
    converged = jnp.abs(final_ll - ll_prev_step) <= tol * nf
    return w, m, v, final_ll, it, converged


@bucket_jit(data_arg=2, static_argnames=("k_pad",))
def _em_restarts(root, restart_ids, x, mask, n, k, k_pad, max_iter, tol, reg_var):
    """Restarts `restart_ids` (their keys are fold_in(root, id) = split(root, R)[id]) in
    parallel with `vmap`. Every argument but `k_pad` is traced: one program per data bucket,
    dtype, number of restarts in the group and `k_pad`."""
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(restart_ids)
    return jax.vmap(lambda key: _em_one(key, x, mask, n, k, k_pad, max_iter, tol, reg_var))(keys)


def em(
    x,
    k: int,
    *,
    restarts: int = 5,
    max_iter: int = 1000,
    tol: float = 1e-10,
    reg_var: float = 1e-6,
    seed: int = 0,
    dtype=np.float64,
) -> EMResult:
    """Fit a K-component 1-D Gaussian mixture by expectation-maximisation.

    Each restart starts from k-means++ seeds and iterates until the average
    log-likelihood per point changes by at most `tol` (or `max_iter` steps); the restart
    with the highest log-likelihood wins. `reg_var` is added to every variance, as
    scikit-learn's ``reg_covar``, so a component that collapses onto one point stays finite.

    Args:
        x: observations, shape (N,).
        k: number of components, 1 <= k <= N.
        restarts: number of random restarts (run in parallel with `vmap`).
        max_iter: iteration cap per restart.
        tol: convergence tolerance on the change of the mean log-likelihood per point.
        reg_var: non-negative variance floor added in every M-step.
        seed: integer seed for the restarts' initialisations.
        dtype: ``np.float64`` (default) or ``np.float32``.

    Returns:
        An `EMResult`, components sorted by mean.
    """
    x = check_data(x)
    return em_checked(x, check_k(k, x.shape[0]), restarts=check_positive_int(restarts, "restarts"),
                      max_iter=check_positive_int(max_iter, "max_iter"), tol=check_non_negative(tol, "tol"),
                      reg_var=check_non_negative(reg_var, "reg_var"), seed=seed, dtype=check_dtype(dtype))


def em_checked(x: np.ndarray, k: int, *, restarts: int = 5, max_iter: int = 1000, tol: float = 1e-10,
               reg_var: float = 1e-6, seed: int = 0, dtype=np.float64) -> EMResult:
    """`em` on arguments already checked (`x` by `validation.check_data`, `k` by `check_k`,
    ...): for callers that checked them themselves (`gibbs.posterior`), so that the data are
    validated once per call."""
    n = x.shape[0]
    small = is_small(n)
    k_pad = K_PAD if small and k <= K_PAD else k  # one program for K = 1..K_PAD on small data
    group = RESTART_GROUP if small else restarts  # restarts per compiled call
    # small data: padded to the last small bucket and masked, each E-step on a prefix that
    # holds the real points (one program for every N <= 2,048, see `suff_stats`); large data: its own
    # shape, no mask
    xp, mask = pad_em(x, dtype)
    with x64_context(dtype):
        root = jax.random.key(seed)
        args = (jnp.asarray(xp), None if mask is None else jnp.asarray(mask), np.int32(n), np.int32(k), k_pad, np.int32(max_iter),
                jnp.asarray(tol, dtype), jnp.asarray(reg_var, dtype))
        outs = [_em_restarts(root, np.arange(start, start + group, dtype=np.int32), *args)
                for start in range(0, restarts, group)]
        w, m, v, ll, it, conv = (np.concatenate([np.asarray(o[i]) for o in outs])[:restarts] for i in range(6))
    w, m, v = w[:, :k], m[:, :k], v[:, :k]
    lls = np.where(np.isfinite(ll), ll, -np.inf)
    best = int(np.argmax(lls))
    order = np.argsort(m[best])
    return EMResult(
        weights=w[best][order],
        means=m[best][order],
        sds=np.sqrt(v[best][order]),
        log_likelihood=float(ll[best]),
        n_iter=int(it[best]),
        converged=bool(conv[best]),
        restart_log_likelihoods=ll,
    )
