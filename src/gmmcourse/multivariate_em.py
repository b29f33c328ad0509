"""Maximum-likelihood EM for multivariate Gaussian mixtures with full covariance (jitted).

The E-step works on the data transposed, (D, N), a block of points at a time (`BLOCK`), with
one (K, B) array per coordinate: for the small D of the course (D <= `UNROLL_D`) the quadratic
forms and the M-step's sums are written out coordinate by coordinate, which XLA fuses into a
few passes over the block (an einsum with a contraction of length 3 runs far slower on CPU).
The M-step's sums are taken about the old means, as `gmmcourse.em` does in 1-D: no second pass
over the data, no cancellation of E[x x^T] - E[x] E[x]^T. The maths is scikit-learn's
``GaussianMixture(covariance_type="full")``, with its ``reg_covar`` added to every covariance's
diagonal: from the same start both reach the same optimum (tests/test_multivariate.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.precision import x64_context
from gmmcourse.selection import FLOOR_FACTOR
from gmmcourse.shapes import XLA_DEFAULT_OPTIONS, bucket_jit, is_small, pad
from gmmcourse.validation import check_dtype, check_k, check_non_negative, check_positive_int

__all__ = [
    "MvnFit",
    "bic",
    "check_points",
    "em",
    "is_degenerate",
    "kmeans_plus_plus",
    "log_density",
    "n_params",
    "responsibilities",
]

_LOG_2PI = float(np.log(2 * np.pi))
BLOCK = 4096
"""Points per E-step block: a block's (K, B) temporaries stay in the CPU's cache."""
UNROLL_D = 8
"""Up to this dimension the E-step is written out per coordinate; above it, einsums."""
REG_COVAR = 1e-6
"""Default covariance floor (scikit-learn's ``reg_covar``)."""


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare fields, not fits
class MvnFit:
    """A maximum-likelihood fit of a K-component mixture of D-dimensional Gaussians.

    Attributes:
        weights: (K,). means: (K, D). covs: (K, D, D). Components sorted by their means'
            first coordinate (then the second, ...).
        loglik: total log-likelihood sum_i log p(x_i) at the fit.
        n_iter: EM iterations of the chosen run.
        converged: whether that run met the tolerance before `max_iter`.
        degenerate: whether the fit is collapsed (`is_degenerate`).
        n: number of data points; reg_covar: the floor the fit was run with.
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    loglik: float
    n_iter: int
    converged: bool
    degenerate: bool = False
    n: int = 0
    reg_covar: float = REG_COVAR

    @property
    def k(self) -> int:
        return int(self.weights.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def check_points(x, name: str = "x") -> np.ndarray:
    """Validate multivariate observations: a finite real array of shape (N, D), N, D >= 1
    (a 1-D array is taken as N points in one dimension). Returns a float64 (or float32)
    numpy array of shape (N, D)."""
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists
        raise ValueError(f"{name} must be an (N, D) array of numbers ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be an (N, D) array of real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got shape {arr.shape}")
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64)
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} row(s) with NaN or infinite values, e.g. rows "
                         f"{np.flatnonzero(bad)[:5].tolist()}")
    return arr


def n_params(k: int, d: int) -> int:
    """Free parameters of a K-component full-covariance mixture in D dimensions."""
    return (k - 1) + k * d + k * d * (d + 1) // 2


def bic(fit: MvnFit, n: int) -> float:
    """Bayesian information criterion -2 log L + p log N (p = `n_params`). Lower is better."""
    return -2.0 * fit.loglik + n_params(fit.k, fit.d) * np.log(n)


def is_degenerate(fit, n: int, reg_covar: float = REG_COVAR) -> bool:
    """A collapsed fit, the multivariate form of `gmmcourse.selection.is_degenerate`: some
    component's covariance has an eigenvalue at the floor EM adds (at most `FLOOR_FACTOR`
    times `reg_covar`: the component lies on a point or in a lower-dimensional subspace of
    the data), or it carries less weight than D + 1 points (fewer cannot span a D-dimensional
    covariance). The likelihood of such a fit grows without bound as the floor shrinks, so
    its log-likelihood and BIC say nothing about the data.

    Args:
        fit: anything with ``weights`` (K,) and ``covs`` (K, D, D).
        n: number of data points.
        reg_covar: the covariance floor the fit was run with.
    """
    covs = np.asarray(fit.covs, np.float64)
    weights = np.asarray(fit.weights, np.float64)
    d = covs.shape[-1]
    smallest = np.linalg.eigvalsh(covs)[:, 0]
    return bool(np.any(smallest <= FLOOR_FACTOR * reg_covar) or np.any(weights * n < d + 1))


def _inv_chol(covs):
    """(lower-triangular inverse Cholesky factors P with P^T P = cov^-1, (K, D, D); sum of
    log diag of the Cholesky factors, (K,))."""
    chol = jnp.linalg.cholesky(covs)
    eye = jnp.broadcast_to(jnp.eye(covs.shape[-1], dtype=covs.dtype), covs.shape)
    pinv = jax.lax.linalg.triangular_solve(chol, eye, left_side=True, lower=True)
    return pinv, jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _log_table(xt, log_w, means, pinv, logdet):
    """log w_k + log N(x_i; mean_k, cov_k) for a block, (K, B), and the differences
    d_j = x_j - mean_kj (a list of D arrays (K, B), or one (K, B, D) array above `UNROLL_D`)."""
    dim = xt.shape[0]
    const = (log_w - logdet - 0.5 * dim * _LOG_2PI)[:, None]
    if dim <= UNROLL_D:
        d = [xt[j][None, :] - means[:, j][:, None] for j in range(dim)]
        quad = 0.0
        for a in range(dim):
            y = pinv[:, a, 0][:, None] * d[0]
            for j in range(1, a + 1):
                y = y + pinv[:, a, j][:, None] * d[j]
            quad = quad + y * y
        return const - 0.5 * quad, d
    d = xt.T[None, :, :] - means[:, None, :]  # (K, B, D)
    y = jnp.einsum("kaj,kbj->kba", pinv, d)
    return const - 0.5 * jnp.sum(y * y, axis=-1), d


def _block_stats(xt, mask, log_w, means, pinv, logdet):
    """E-step on a block (xt: (D, B)): sums over its points of r_ik (K,), r_ik d_ik (K, D),
    r_ik d_ik d_ik^T (K, D, D) and of log p(x_i), with d_ik = x_i - mean_k. Padded points
    (mask False) get responsibility 0 and add 0 to the log-likelihood."""
    table, d = _log_table(xt, log_w, means, pinv, logdet)
    top = jnp.max(table, axis=0)
    e = jnp.exp(table - top[None, :])
    total = jnp.sum(e, axis=0)
    if mask is None:
        r, ll = e / total[None, :], jnp.sum(top + jnp.log(total))
    else:
        r, ll = e / jnp.where(mask, total, jnp.inf)[None, :], jnp.sum(jnp.where(mask, top + jnp.log(total), 0.0))
    nk = jnp.sum(r, axis=1)
    if isinstance(d, list):
        dim = len(d)
        rd = [r * dj for dj in d]
        s1 = jnp.stack([jnp.sum(v, axis=1) for v in rd], axis=1)
        s2 = [[None] * dim for _ in range(dim)]
        for a in range(dim):
            for b in range(a + 1):
                s2[a][b] = s2[b][a] = jnp.sum(rd[a] * d[b], axis=1)
        s2 = jnp.stack([jnp.stack(row, axis=1) for row in s2], axis=1)
    else:
        s1 = jnp.einsum("kb,kbj->kj", r, d)
        s2 = jnp.einsum("kb,kbi,kbj->kij", r, d, d)
    return nk, s1, s2, ll


def _stats(xt, mask, weights, means, covs):
    """`_block_stats` summed over all points, `BLOCK` at a time (a `lax.scan` over the full
    blocks, then the remainder)."""
    pinv, logdet = _inv_chol(covs)
    log_w = jnp.log(weights)
    dim, n = xt.shape
    k = weights.shape[0]
    full = n // BLOCK * BLOCK
    z = jnp.zeros((), xt.dtype)
    acc = (jnp.zeros(k, xt.dtype), jnp.zeros((k, dim), xt.dtype), jnp.zeros((k, dim, dim), xt.dtype), z)
    if full:
        blocks = xt[:, :full].reshape(dim, -1, BLOCK).transpose(1, 0, 2)
        mblocks = None if mask is None else mask[:full].reshape(-1, BLOCK)

        def body(acc, blk):
            xb, mb = blk
            return jax.tree.map(jnp.add, acc, _block_stats(xb, mb, log_w, means, pinv, logdet)), None

        acc, _ = jax.lax.scan(body, acc, (blocks, mblocks))
    if full < n:
        rest = _block_stats(xt[:, full:], None if mask is None else mask[full:], log_w, means, pinv, logdet)
        acc = jax.tree.map(jnp.add, acc, rest)
    return acc


def _m_step(stats, means, n, reg_covar):
    """New (weights, means, covs) from the E-step's sums about the old means."""
    nk, s1, s2, _ = stats
    nk = nk + 10 * jnp.finfo(means.dtype).tiny
    shift = s1 / nk[:, None]
    covs = s2 / nk[:, None, None] - shift[:, :, None] * shift[:, None, :]
    covs = 0.5 * (covs + jnp.swapaxes(covs, 1, 2)) + reg_covar * jnp.eye(means.shape[1], dtype=means.dtype)
    return nk / n, means + shift, covs


def em_step(xt, mask, n, weights, means, covs, reg_covar):
    """One E+M step on (D, N) data: the new parameters and the log-likelihood of the old."""
    stats = _stats(xt, mask, weights, means, covs)
    return (*_m_step(stats, means, n, reg_covar), stats[3])


def kmeans_plus_plus(key, x, k: int, mask=None):
    """k-means++ seeding in D dimensions: `k` data points (rows of x, (N, D)), far apart with
    high probability. Padded points (mask False) are never chosen. Returns (k, D)."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    base = jnp.zeros(n) if mask is None else jnp.where(mask, 0.0, -jnp.inf)
    first = x[jax.random.categorical(keys[0], base)]
    centers = jnp.broadcast_to(first, (k, x.shape[1]))

    def body(j, centers):
        d2 = jnp.sum((x[None, :, :] - centers[:, None, :]) ** 2, axis=-1)
        d2 = jnp.min(jnp.where(jnp.arange(k)[:, None] < j, d2, jnp.inf), axis=0)
        logits = jnp.where(d2 > 0, jnp.log(jnp.maximum(d2, 1e-300)), -jnp.inf) + base
        logits = jnp.where(jnp.all(jnp.isneginf(logits)), base, logits)  # all points on centres
        return centers.at[j].set(x[jax.random.categorical(keys[j], logits)])

    return jax.lax.fori_loop(1, k, body, centers)


def _hard_init(x, mask, centers, n, reg_covar):
    """scikit-learn's k-means++ start: every point to its nearest centre, then one M-step."""
    k, dim = centers.shape
    d2 = jnp.sum((x[None, :, :] - centers[:, None, :]) ** 2, axis=-1)
    r = (jnp.argmin(d2, axis=0)[None, :] == jnp.arange(k)[:, None]) & mask[None, :]
    r = r.astype(x.dtype)
    nk = jnp.sum(r, axis=1) + 10 * jnp.finfo(x.dtype).tiny
    means = (r @ x) / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]
    covs = jnp.einsum("kn,kni,knj->kij", r, diff, diff) / nk[:, None, None] + reg_covar * jnp.eye(dim, dtype=x.dtype)
    return nk / n, means, covs


@bucket_jit(data_arg=0, data_axis=1, small_options=XLA_DEFAULT_OPTIONS)
def em_run(xt, mask, n, weights, means, covs, tol, reg_covar, max_iter):
    """EM from one start until the mean log-likelihood per point changes by at most `tol`.
    `xt`: the data transposed, (D, N); `mask`: the real points of padded data (None: all);
    `n`: their number. One program per data bucket, K, D and dtype."""
    nf = n.astype(xt.dtype)

    def cond(state):
        *_, ll, ll_prev, it = state
        return (it < max_iter) & ~(jnp.abs(ll - ll_prev) <= tol * nf)

    def body(state):
        w, m, c, ll, _, it = state
        w, m, c, ll_new = em_step(xt, mask, nf, w, m, c, reg_covar)
        return w, m, c, ll_new, ll, it + 1

    inf = jnp.asarray(jnp.inf, xt.dtype)
    w, m, c, ll_last, _, it = jax.lax.while_loop(cond, body, (weights, means, covs, -inf, inf, jnp.int32(0)))
    final = _stats(xt, mask, w, m, c)[3]
    return w, m, c, final, it, jnp.abs(final - ll_last) <= tol * nf


@bucket_jit(data_arg=1, static_argnames=("k",), small_options=XLA_DEFAULT_OPTIONS)
def em_starts(keys, x, mask, n, k, reg_covar):
    """k-means++ starts for every key, (R, ...)."""
    nf = n.astype(x.dtype)
    return jax.vmap(lambda key: _hard_init(x, mask, kmeans_plus_plus(key, x, k, mask), nf, reg_covar))(keys)


def _as_init(init, k: int, dim: int):
    if isinstance(init, MvnFit):
        init = (init.weights, init.means, init.covs)
    try:
        w, m, c = (np.asarray(a, np.float64) for a in init)
    except (TypeError, ValueError):
        raise ValueError("init must be an MvnFit or a tuple (weights (K,), means (K, D), covs (K, D, D))") from None
    if w.shape != (k,) or m.shape != (k, dim) or c.shape != (k, dim, dim):
        raise ValueError(f"init must have shapes ({k},), ({k}, {dim}), ({k}, {dim}, {dim}); "
                         f"got {w.shape}, {m.shape}, {c.shape}")
    if not (np.all(np.isfinite(w)) and np.all(w > 0) and abs(w.sum() - 1) < 1e-6):
        raise ValueError(f"init weights must be positive and sum to 1, got {w}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
        raise ValueError("init means and covs must be finite")
    if not np.allclose(c, np.swapaxes(c, 1, 2)) or np.any(np.linalg.eigvalsh(c)[:, 0] <= 0):
        raise ValueError("init covs must be symmetric positive definite")
    return w, m, c


def _sorted(w, m, c):
    order = np.lexsort(m.T[::-1])
    return w[order], m[order], c[order]


def em(x, k: int, *, key=None, init=None, max_iter: int = 500, tol: float = 1e-8, reg_covar: float = REG_COVAR,
       n_init: int = 1, dtype=np.float64) -> MvnFit:
    """Fit a K-component full-covariance Gaussian mixture to (N, D) data by EM.

    Each run starts from `init` or, without one, as scikit-learn's ``init_params="k-means++"``
    does: k-means++ seeds, every point given to its nearest seed, one M-step. It iterates
    until the mean log-likelihood per point changes by at most `tol` (or `max_iter` steps).
    Of `n_init` runs the one with the highest log-likelihood among the non-degenerate ones
    wins (`is_degenerate`); if every run collapsed, the best of them, flagged
    ``degenerate=True``.

    Args:
        x: observations, shape (N, D) (a 1-D array is N points in one dimension).
        k: number of components, 1 <= k <= N.
        key: a JAX PRNG key or an integer seed for the k-means++ starts (default 0).
        init: a start (an `MvnFit` or a tuple (weights, means, covs)); then `n_init` is 1.
        max_iter: iteration cap per run.
        tol: tolerance on the change of the mean log-likelihood per point.
        reg_covar: non-negative number added to every covariance's diagonal in each M-step.
        n_init: number of k-means++ starts.
        dtype: float64 (default) or float32.

    Returns:
        An `MvnFit`.
    """
    x = check_points(x)
    n, dim = x.shape
    k = check_k(k, n)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    tol = check_non_negative(tol, "tol")
    reg_covar = check_non_negative(reg_covar, "reg_covar")
    dtype = check_dtype(dtype)
    # small data are padded to their shape bucket (masked): one program per bucket, not per N
    xp, mask = pad(x, dtype) if is_small(n) else pad(x, dtype, size=n)
    with x64_context(dtype):
        xa = jnp.asarray(xp)
        xt = jnp.asarray(np.ascontiguousarray(xp.T))
        mask = jnp.asarray(mask)
        reg = jnp.asarray(reg_covar, dtype)
        if init is not None:
            starts = [tuple(jnp.asarray(a, dtype) for a in _as_init(init, k, dim))]
        else:
            if key is None or isinstance(key, (int, np.integer)):
                key = jax.random.key(0 if key is None else int(key))
            w0, m0, c0 = em_starts(jax.random.split(key, n_init), xa, mask, np.int32(n), k, reg)
            starts = [(w0[i], m0[i], c0[i]) for i in range(n_init)]
        runs = []
        for w, m, c in starts:
            out = em_run(xt, mask if is_small(n) else None, np.int32(n), w, m, c, jnp.asarray(tol, dtype), reg,
                       np.int32(max_iter))
            w, m, c, ll, it, conv = (np.asarray(a) for a in out)
            w, m, c = _sorted(w.astype(np.float64), m.astype(np.float64), c.astype(np.float64))
            runs.append(MvnFit(w, m, c, float(ll), int(it), bool(conv),
                               degenerate=is_degenerate_arrays(w, c, n, reg_covar), n=n, reg_covar=float(reg_covar)))
    lls = np.array([r.loglik if np.isfinite(r.loglik) else -np.inf for r in runs])
    ok = [i for i, r in enumerate(runs) if not r.degenerate]
    best = max(ok, key=lambda i: lls[i]) if ok else int(np.argmax(lls))
    return runs[best]


def is_degenerate_arrays(weights, covs, n, reg_covar) -> bool:
    """`is_degenerate` on bare arrays."""
    return is_degenerate(MvnFit(weights, np.zeros(covs.shape[:2]), covs, 0.0, 0, True), n, reg_covar)


def _table_np(fit: MvnFit, x) -> np.ndarray:
    """log w_k + log N(x_i; mean_k, cov_k), (N, K), in float64 numpy."""
    x = check_points(x).astype(np.float64)
    if x.shape[1] != fit.d:
        raise ValueError(f"x has {x.shape[1]} columns but the fit is {fit.d}-dimensional")
    chol = np.linalg.cholesky(np.asarray(fit.covs, np.float64))
    out = np.empty((x.shape[0], fit.k))
    for j in range(fit.k):
        y = np.linalg.solve(chol[j], (x - fit.means[j]).T)
        out[:, j] = (np.log(fit.weights[j]) - np.sum(np.log(np.diag(chol[j]))) - 0.5 * fit.d * _LOG_2PI
                     - 0.5 * np.sum(y * y, axis=0))
    return out


def log_density(fit: MvnFit, x) -> np.ndarray:
    """log p(x_i | fit) for every row of x, (N,)."""
    from scipy.special import logsumexp

    return logsumexp(_table_np(fit, x), axis=1)


def responsibilities(fit: MvnFit, x) -> np.ndarray:
    """P(z_i = k | x_i, fit), (N, K); rows sum to 1."""
    from scipy.special import softmax

    return softmax(_table_np(fit, x), axis=1)
