"""Gibbs sampling of the Bayesian multivariate mixture (`gmmcourse.multivariate_model.mvn_gmm`)
and label-free summaries of its draws.

One sweep draws every z_i from its exact conditional (the (N, K) table of
log w_k + log N(x_i; mean_k, cov_k), the model's `mvn_point` density, by Gumbel-max), then the
weights from Dirichlet(alpha + n_k) and every component's (mean, cov) from its exact NIW
posterior (`draw_niw`). The parameters are the whole state: z is redrawn from them each sweep.

Compilation follows the 1-D sampler (`gmmcourse.gibbs`, `gmmcourse.shapes`): the data are padded
to a shape bucket (padded points are masked out of every count and sum), chains run in groups
of `gmmcourse.shapes.chain_group`, sweeps in chunks of `SWEEP_CHUNK` resumed from their state, so
one (start, chunk) pair of programs serves every N in a bucket and every number of chains, draws
and warm-up sweeps (for a given K, D and dtype). Sweep t of a chain uses the key
fold_in(chain key, t), so the draws do not depend on how the sweeps are chunked.

**Labels.** The posterior is symmetric under permuting components and the chains are not
relabelled: every summary here is label-free (the data's log-likelihood, the predictive density,
co-clustering), or matches labels explicitly (`assignment_probs`).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.multivariate_em import _inv_chol, check_points, kmeans_plus_plus
from gmmcourse.multivariate_model import NIWPrior, as_prior, check_prior, default_prior, draw_niw, niw_posterior
from gmmcourse.precision import x64_context
from gmmcourse.programs import exported_jit
from gmmcourse.shapes import RUN_ONCE_COMPILER_OPTIONS, SWEEP_CHUNK, bucket_jit, chain_group, pad
from gmmcourse.gamma import gamma
from gmmcourse.validation import check_dtype, check_k, check_non_negative_int, check_positive_int

__all__ = [
    "MvnDraws",
    "posterior",
    "sweep",
    "init_params",
    "update_params",
    "z_log_table",
    "assignment_probs",
    "co_clustering",
    "draw_log_likelihood",
    "predictive_log_density",
    "diagnostics",
]

_LOG_2PI = float(np.log(2 * np.pi))
DRAW_BATCH = 64
"""Draws per compiled call of the summaries, at most (fewer for large data: `_draw_batch`)."""
TABLE_ENTRIES = 4_000_000
"""Bound on a batch's (draws, N, K) table of the summaries (32 MB in float64)."""


@dataclasses.dataclass(frozen=True, eq=False)
class MvnDraws:
    """Posterior draws, components as sampled (not relabelled).

    Attributes:
        weights: (chains, draws, K). means: (chains, draws, K, D). covs: (chains, draws, K, D, D).
        prior: the `NIWPrior` used.
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    prior: NIWPrior

    @property
    def num_chains(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.weights.shape[1])


def z_log_table(x, weights, means, covs):
    """log p(z_i = k, x_i | parameters) = log w_k + log N(x_i; mean_k, cov_k), shape (N, K)."""
    pinv, logdet = _inv_chol(covs)
    diff = x[:, None, :] - means[None, :, :]
    y = jnp.einsum("kaj,nkj->nka", pinv, diff)
    return (jnp.log(weights) - logdet - 0.5 * x.shape[1] * _LOG_2PI)[None, :] - 0.5 * jnp.sum(y * y, axis=-1)


def update_params(key, x, onehot, prior: NIWPrior):
    """Draw (weights, means, covs) given the assignments (`onehot` (N, K), 0 rows for padding):
    Dirichlet(alpha + n_k) and every component's exact NIW posterior."""
    kw, kc = jax.random.split(key)
    kappa_n, m_n, dof_n, psi_n, counts = niw_posterior(onehot, x, prior)
    g = jnp.maximum(gamma(kw, prior.alpha + counts, x.dtype), jnp.finfo(x.dtype).tiny)
    means, covs = draw_niw(kc, kappa_n, m_n, dof_n, psi_n)
    return g / jnp.sum(g), means, covs


def sweep(key, x, mask, weights, means, covs, prior: NIWPrior):
    """One Gibbs sweep: z | parameters (Gumbel-max on `z_log_table`, noise in (N, K) layout, so
    a point's draw does not depend on the padding after it), then parameters | z. `mask` (N,)
    marks the real points (None: all). Returns the new (weights, means, covs)."""
    kz, kp = jax.random.split(key)
    table = z_log_table(x, weights, means, covs)
    z = jnp.argmax(table + jax.random.gumbel(kz, table.shape, x.dtype), axis=1)
    onehot = (z[:, None] == jnp.arange(weights.shape[0])[None, :])
    if mask is not None:
        onehot = onehot & mask[:, None]
    return update_params(kp, x, onehot.astype(x.dtype), prior)


def init_params(key, x, mask, prior, k):
    """A chain's start: k-means++ seeds, every point to its nearest seed, then one exact draw of
    the parameters given those assignments."""
    ks, kp = jax.random.split(key)
    centres = kmeans_plus_plus(ks, x, k, mask)
    z = jnp.argmin(jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1), axis=1)
    onehot = (z[:, None] == jnp.arange(k)[None, :]) & mask[:, None]
    return update_params(kp, x, onehot.astype(x.dtype), prior)


@bucket_jit(data_arg=2, static_argnames=("k",), small_options=RUN_ONCE_COMPILER_OPTIONS)
def chain_start(root, chain_ids, x, mask, prior, k):
    """Starting states (weights, means, covs, key data) of chains `chain_ids` (chain c's key is
    fold_in(root, c))."""

    def one(c):
        kinit, krun = jax.random.split(jax.random.fold_in(root, c))
        return (*init_params(kinit, x, mask, prior, k), jax.random.key_data(krun))

    return jax.vmap(one)(chain_ids)


@bucket_jit(data_arg=2, static_argnames=("length",))
def chain_chunk(state, start, x, mask, prior, length):
    """`length` sweeps (numbers start, start + 1, ...) of every chain in `state`; returns the new
    state and the draws after each sweep, (chains, length, ...)."""
    ts = start + jnp.arange(length, dtype=start.dtype)

    def one(w, m, c, key_data):
        krun = jax.random.wrap_key_data(key_data)

        def step(params, t):
            params = sweep(jax.random.fold_in(krun, t), x, mask, *params, prior)
            return params, params

        (w, m, c), draws = jax.lax.scan(step, (w, m, c), ts)
        return (w, m, c, key_data), draws

    return jax.vmap(one)(*state)


def posterior(x, k: int, *, key, prior: NIWPrior | None = None, num_chains: int = 4, num_draws: int = 1000,
              num_warmup: int = 500, dtype=np.float64) -> MvnDraws:
    """Sample the posterior of `mvn_gmm` by Gibbs sampling (see the module docstring).

    Args:
        x: observations, shape (N, D).
        k: number of components, 1 <= k <= N.
        key: a JAX PRNG key or an integer seed.
        prior: an `NIWPrior` for D-dimensional data; default `default_prior(x, k)`.
        num_chains: independent chains (each from its own k-means++ start).
        num_draws: kept sweeps per chain. num_warmup: discarded sweeps per chain.
        dtype: float64 (default) or float32.

    Returns:
        `MvnDraws`, components as sampled.
    """
    x = check_points(x)
    n, d = x.shape
    k = check_k(k, n)
    num_chains = check_positive_int(num_chains, "num_chains")
    num_draws = check_positive_int(num_draws, "num_draws")
    num_warmup = check_non_negative_int(num_warmup, "num_warmup")
    prior = check_prior(default_prior(x, k) if prior is None else prior, d)
    dtype = check_dtype(dtype)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    xp, mask = pad(x, dtype)
    group = chain_group(n, num_chains)
    total = num_warmup + num_draws
    outs = []
    with x64_context(dtype):
        p = as_prior(prior, dtype)
        xj, mj = jnp.asarray(xp), jnp.asarray(mask)
        for first in range(0, num_chains, group):
            state = chain_start(key, np.arange(first, first + group, dtype=np.int32), xj, mj, p, k=k)
            kept = []
            for start in range(0, total, SWEEP_CHUNK):
                state, draws = chain_chunk(state, np.int32(start), xj, mj, p, length=SWEEP_CHUNK)
                if start + SWEEP_CHUNK > num_warmup:
                    kept.append((start, [np.asarray(a) for a in draws]))
            lo = num_warmup - kept[0][0]
            outs.append([np.concatenate(col, axis=1)[:, lo:lo + num_draws] for col in zip(*(c for _, c in kept))])
    w, m, c = (np.concatenate(col)[:num_chains].astype(np.float64) for col in zip(*outs))
    return MvnDraws(weights=w, means=m, covs=c, prior=prior)


# ----- label-free summaries -------------------------------------------------------------------


def _batch_tables_fn(x, w, m, c):
    return jax.vmap(lambda w, m, c: z_log_table(x, w, m, c))(w, m, c)  # (B, N, K)


batch_tables = exported_jit(_batch_tables_fn, name=f"{__name__}.batch_tables")
"""The summaries' tables for a batch of draws: one program per (N, D, K, batch), kept between
processes (`gmmcourse.programs`); no data bucket (a summary's work grows with the padding)."""


def log_joint_tables(draws: MvnDraws, x):
    """Yield log p(z_i = k, x_i | draw) for batches of draws: (B, N, K) float64 numpy, in the
    order of the flattened (chain, draw) axes."""
    x = check_points(x).astype(np.float64)
    if x.shape[1] != draws.means.shape[-1]:
        raise ValueError(f"x has {x.shape[1]} columns but the draws are {draws.means.shape[-1]}-dimensional")
    k, d = draws.means.shape[-2:]
    w = draws.weights.reshape(-1, k)
    m, c = draws.means.reshape(-1, k, d), draws.covs.reshape(-1, k, d, d)
    batch = int(np.clip(TABLE_ENTRIES // (x.shape[0] * k), 1, DRAW_BATCH))
    with x64_context(np.float64):
        xj = jnp.asarray(x)
        for i in range(0, w.shape[0], batch):
            sl = slice(i, i + batch)
            wb, mb, cb = w[sl], m[sl], c[sl]
            pad = batch - wb.shape[0]  # one compiled shape for every batch
            if pad:
                wb, mb, cb = (np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) for a in (wb, mb, cb))
            yield np.asarray(batch_tables(xj, jnp.asarray(wb), jnp.asarray(mb), jnp.asarray(cb)))[:batch - pad]


def draw_log_likelihood(draws: MvnDraws, x) -> np.ndarray:
    """log p(x | parameters) of every draw, (chains, draws): a label-free quantity."""
    from scipy.special import logsumexp as np_logsumexp

    out = np.concatenate([np_logsumexp(t, axis=2).sum(axis=1) for t in log_joint_tables(draws, x)])
    return out.reshape(draws.weights.shape[:2])


def predictive_log_density(draws: MvnDraws, x) -> np.ndarray:
    """log of the posterior predictive density at every row of x, (N,): log of the average over
    draws of p(x_i | parameters) (the posterior mean of the mixture density)."""
    from scipy.special import logsumexp as np_logsumexp

    parts = [np_logsumexp(np_logsumexp(t, axis=2), axis=0) for t in log_joint_tables(draws, x)]
    return np_logsumexp(np.stack(parts), axis=0) - np.log(draws.weights.shape[0] * draws.weights.shape[1])


def table_probs(t):
    """Assignment probabilities (B, N, K) from a batch of `log_joint_tables`."""
    from scipy.special import softmax

    return softmax(t, axis=2)


def co_clustering(draws: MvnDraws, x) -> np.ndarray:
    """Posterior co-clustering P(z_i = z_j | data), (N, N): the average over draws of
    sum_k p_ik p_jk, with p_ik = P(z_i = k | x_i, parameters) (Rao-Blackwellised; label-free);
    the diagonal is 1. Memory grows as N^2: meant for up to a few thousand points."""
    x = check_points(x)
    total = np.zeros((x.shape[0], x.shape[0]))
    for t in log_joint_tables(draws, x):
        p = table_probs(t)
        total += np.einsum("dik,djk->ij", p, p)
    co = total / (draws.weights.shape[0] * draws.weights.shape[1])
    np.fill_diagonal(co, 1.0)
    return co


def assignment_probs(draws: MvnDraws, x, *, reference=None) -> np.ndarray:
    """Posterior assignment probabilities P(z_i = k | data), (N, K), with labels matched draw by
    draw: each draw's components are permuted to best agree with `reference` (the permutation
    maximising sum_i sum_k reference_ik p_i,perm(k), by the Hungarian algorithm), then averaged.

    Args:
        draws: `MvnDraws`. x: (N, D) data.
        reference: (N, K) assignment probabilities whose component order the output follows;
            default: those of the draw with the highest log-likelihood, its components ordered by
            their means' first coordinate (then the second, ...).
    """
    from scipy.optimize import linear_sum_assignment

    x = check_points(x)
    k = draws.weights.shape[-1]
    if reference is None:
        ll = draw_log_likelihood(draws, x).reshape(-1)
        best = int(np.argmax(ll))
        means = draws.means.reshape(-1, *draws.means.shape[2:])[best]
        order = np.lexsort(means.T[::-1])
        one = MvnDraws(*(a.reshape(-1, *a.shape[2:])[best:best + 1][None] for a in
                         (draws.weights, draws.means, draws.covs)), draws.prior)
        reference = table_probs(next(log_joint_tables(one, x)))[0][:, order]
    reference = np.asarray(reference, np.float64)
    if reference.shape != (x.shape[0], k):
        raise ValueError(f"reference must have shape ({x.shape[0]}, {k}), got {reference.shape}")
    total = np.zeros((x.shape[0], k))
    for t in log_joint_tables(draws, x):
        p = table_probs(t)
        overlap = np.einsum("ij,dik->djk", reference, p)
        for pd, ov in zip(p, overlap):
            _, perm = linear_sum_assignment(ov, maximize=True)
            total += pd[:, perm]
    return total / (draws.weights.shape[0] * draws.weights.shape[1])


def diagnostics(draws: MvnDraws, x, points=None) -> dict:
    """Convergence of label-free quantities: split R-hat and bulk/tail ESS (ArviZ) of the data's
    log-likelihood and of the log mixture density at fixed `points` (default: the data's mean and
    the points with the smallest, median and largest first coordinate).

    Returns:
        dict with ``max_r_hat``, ``min_ess_bulk``, ``min_ess_tail`` and ``per_quantity``
        ({name: {"r_hat", "ess_bulk", "ess_tail"}}).
    """
    from arviz_stats.base import array_stats
    from arviz_stats.validate import validate_ci_prob
    from scipy.special import logsumexp as np_logsumexp

    x = check_points(x)
    if points is None:
        o = np.argsort(x[:, 0])
        points = np.vstack([x.mean(axis=0), x[o[0]], x[o[len(o) // 2]], x[o[-1]]])
    points = check_points(points, "points")
    dens = np.concatenate([np_logsumexp(t, axis=2) for t in log_joint_tables(draws, points)])
    quantities = {"log_likelihood": draw_log_likelihood(draws, x)}
    for j in range(points.shape[0]):
        quantities[f"log_density_point{j}"] = dens[:, j].reshape(draws.weights.shape[:2])
    table = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        for name, q in quantities.items():
            table[name] = {
                "r_hat": float(array_stats.rhat(q, chain_axis=0, draw_axis=1)),
                "ess_bulk": float(array_stats.ess(q, chain_axis=0, draw_axis=1, method="bulk")),
                "ess_tail": float(array_stats.ess(q, chain_axis=0, draw_axis=1, method="tail",
                                                  prob=validate_ci_prob(None))),
            }
    return {"max_r_hat": max(v["r_hat"] for v in table.values()),
            "min_ess_bulk": min(v["ess_bulk"] for v in table.values()),
            "min_ess_tail": min(v["ess_tail"] for v in table.values()),
            "per_quantity": table}
