"""Exact posterior of the Bayesian GMM on tiny data, by enumeration and quadrature.

Every assignment vector z in {0..K-1}^N is enumerated. Given z, the weights integrate out
analytically (Dirichlet-multinomial), each mean integrates out analytically given its sd
(Normal-Normal), and each sd is integrated numerically on a fine log-spaced grid. This is
the ground truth the Gibbs sampler is tested against; it costs K^N, so N <= ~10.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.special import gammaln, logsumexp

from gmmcourse.models import GMMPrior
from gmmcourse.validation import check_data

__all__ = ["ExactPosterior", "exact_posterior", "ExactEvidence", "enumerate_exact", "log_evidence",
           "ExactPredictive", "exact_predictive", "sd_summary"]

MAX_CONFIGS = 2_000_000


class ExactPosterior(NamedTuple):
    """Exact posterior quantities.

    Attributes:
        log_marginal: log p(x).
        assignment_probs: P(z_i = k | x), shape (N, K).
        mean_weights, mean_means, mean_sds: posterior means E[. | x], shape (K,).
        co_clustering: P(z_i = z_j | x), shape (N, N) (label-invariant).
    """

    log_marginal: float
    assignment_probs: np.ndarray
    mean_weights: np.ndarray
    mean_means: np.ndarray
    mean_sds: np.ndarray
    co_clustering: np.ndarray


def _sd_grid(x, prior, num):
    spread = max(float(np.ptp(x)), 1e-3)
    lo = min(1e-4 * spread, 1e-3)
    hi = max(100.0 * spread, 50.0 * (prior.sd_shape + 5) / prior.sd_rate)
    log_s = np.linspace(np.log(lo), np.log(hi), num)
    return np.exp(log_s), log_s[1] - log_s[0]


def exact_posterior(x, prior: GMMPrior, *, grid_size: int = 4000) -> ExactPosterior:
    """Exact posterior of `gmmcourse.models.gmm` for data `x` and prior `prior`.

    Args:
        x: observations, shape (N,), with K**N <= 2e6.
        prior: the `GMMPrior`.
        grid_size: points of the log-spaced sd grid.
    """
    x = check_data(x).astype(np.float64)
    n = x.shape[0]
    k = prior.k
    if k**n > MAX_CONFIGS:
        raise ValueError(f"exact enumeration needs K**N <= {MAX_CONFIGS}; got K={k}, N={n}")
    loc = np.asarray(prior.mean_loc, np.float64)
    tau2 = float(prior.mean_scale) ** 2
    a, b, alpha = float(prior.sd_shape), float(prior.sd_rate), float(prior.concentration)
    sd, dlog = _sd_grid(x, prior, grid_size)
    s2 = sd**2  # (G,)
    log_prior_sd = a * np.log(b) - gammaln(a) + (a - 1) * np.log(sd) - b * sd + np.log(sd) + np.log(dlog)  # includes d sd = sd dlog
    # trapezoid weights in log space
    log_prior_sd[[0, -1]] += np.log(0.5)

    cache: dict = {}

    def component(mask_key, kk):
        """log ∫∫ prior(mu, sd) prod N(x_i; mu, sd) over points in mask, plus E[mu], E[sd]."""
        key = (mask_key, kk)
        if key in cache:
            return cache[key]
        pts = x[list(mask_key)]
        m = pts.size
        if m == 0:
            res = (0.0, loc[kk], a / b)
        else:
            sx, sxx = pts.sum(), (pts**2).sum()
            post_prec = 1 / tau2 + m / s2  # (G,)
            post_mean = (loc[kk] / tau2 + sx / s2) / post_prec
            # log N(x | mu, s2) N(mu | loc, tau2) integrated over mu
            log_lik = (
                -0.5 * m * np.log(2 * np.pi * s2)
                - 0.5 * np.log(tau2 * post_prec)
                - 0.5 * (sxx / s2 + loc[kk] ** 2 / tau2 - post_mean**2 * post_prec)
            )
            terms = log_prior_sd + log_lik
            lz = logsumexp(terms)
            wts = np.exp(terms - lz)
            res = (lz, float(wts @ post_mean), float(wts @ sd))
        cache[key] = res
        return res

    configs = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)  # (C, N)
    log_post = np.empty(len(configs))
    e_means = np.empty((len(configs), k))
    e_sds = np.empty((len(configs), k))
    counts = np.stack([(configs == j).sum(1) for j in range(k)], axis=1)  # (C, K)
    log_pz = gammaln(k * alpha) - gammaln(n + k * alpha) + np.sum(gammaln(counts + alpha) - gammaln(alpha), axis=1)
    for c, z in enumerate(configs):
        total = log_pz[c]
        for j in range(k):
            lz, em_, es_ = component(tuple(np.flatnonzero(z == j)), j)
            total += lz
            e_means[c, j], e_sds[c, j] = em_, es_
        log_post[c] = total
    log_marginal = float(logsumexp(log_post))
    p = np.exp(log_post - log_marginal)
    onehot = configs[:, :, None] == np.arange(k)[None, None, :]  # (C, N, K)
    assignment = np.einsum("c,cnk->nk", p, onehot)
    same = (configs[:, :, None] == configs[:, None, :])
    co = np.einsum("c,cij->ij", p, same)
    mean_w = p @ ((counts + alpha) / (n + k * alpha))
    return ExactPosterior(log_marginal, assignment, mean_w, p @ e_means, p @ e_sds, co)


# --------------------------------------------------------------------------------------
# Vectorised enumeration: evidence, predictive, sd posteriors (JAX, float64)
# --------------------------------------------------------------------------------------

CHUNK = 4096  # configurations per jitted block


class ExactEvidence(NamedTuple):
    """Exact quantities from a full enumeration of the assignments.

    Attributes:
        log_evidence: log p(x) (marginal likelihood of the data under the prior).
        assignment_probs: P(z_i = k | x), shape (N, K). With ``anchor`` set (exchangeable
            prior), the labels are those of the enumeration in which point ``anchor`` is
            in component K-1, so column K-1 is P(z_i = z_anchor | x).
        sd_grid: the sd quadrature nodes, shape (G,).
        sd_mass: posterior probability mass of each sd at each node, shape (K, G) (only with
            ``sd_posterior=True``, else None); in the anchor's labelling.
        occupied: P(exactly j components hold at least one point | x), shape (K + 1,),
            j = 0..K (only with ``occupancy=True``, else None).
    """

    log_evidence: float
    assignment_probs: np.ndarray
    sd_grid: np.ndarray
    sd_mass: np.ndarray | None
    occupied: np.ndarray | None = None


def _is_exchangeable(prior: GMMPrior) -> bool:
    loc = np.asarray(prior.mean_loc, np.float64)
    return bool(np.all(loc == loc[0]))


def _log_grid(x, prior, spacing, sd_range=None):
    """Log-spaced sd nodes covering every component's integrand: returns u = log sd, du."""
    spread = max(float(np.ptp(x)), 1e-3)
    lo = min(1e-4 * spread, 1e-3)
    hi = 10.0 * spread + (float(prior.sd_shape) + 50.0) / float(prior.sd_rate)
    if sd_range is not None:
        lo, hi = sd_range
    num = int(np.ceil((np.log(hi) - np.log(lo)) / spacing)) + 1
    u = np.linspace(np.log(lo), np.log(hi), num)
    return u, u[1] - u[0]


def _tables(n, a, b, tau2, u, du, rounding_var=0.0):
    """Data-free parts of the log integrand on the grid u = log sd (rows: group size m).
    The observations' variance is sd**2 + `rounding_var` (the prior stays on sd)."""
    s = np.exp(u)
    s2 = s**2 + rounding_var
    m_all = np.arange(n + 1, dtype=np.float64)
    m_safe = np.maximum(m_all, 1.0)[:, None]
    v = tau2 + s2[None, :] / m_safe  # (N+1, G): variance of the group mean's marginal
    t0 = (
        a * np.log(b) - gammaln(a) + a * u[None, :] - b * s[None, :]  # Gamma(s) * ds/du = s
        - 0.5 * m_all[:, None] * np.log(2 * np.pi * s2[None, :])
        + 0.5 * np.log(2 * np.pi * s2[None, :] / m_safe)
        - 0.5 * np.log(2 * np.pi * v)
    )
    logw = np.full(u.shape, np.log(du))
    logw[[0, -1]] += np.log(0.5)
    return t0, 1.0 / (2 * s2), 1.0 / (2 * v), logw


_BLOCK_FNS: dict = {}


def _block_fn(k, want_sd):
    """Compiled (`gmmcourse.programs.exported_jit`): a block of configuration codes ->
    per-config log p(x, z), the one-hot assignments and (optionally) each component's sd
    posterior weights on the grid."""
    if (k, want_sd) in _BLOCK_FNS:
        return _BLOCK_FNS[(k, want_sd)]
    import jax.numpy as jnp
    from jax.scipy.special import gammaln as jgammaln
    from jax.scipy.special import logsumexp as jlse

    def block(codes, fixed, powers, xj, locj, t0, qa, qb, logw, du, alpha):
        n = xj.shape[0]
        digits = (codes[:, None] // powers[None, :]) % k  # (C, N)
        digits = jnp.where(fixed[None, :] >= 0, fixed[None, :], digits)
        onehot = (digits[:, :, None] == jnp.arange(k)[None, None, :]).astype(xj.dtype)  # (C, N, K)
        cnt = onehot.sum(1)  # (C, K)
        sx = jnp.einsum("cnk,n->ck", onehot, xj)
        sxx = jnp.einsum("cnk,n->ck", onehot, xj**2)
        mi = cnt.astype(jnp.int32)
        mean = sx / jnp.maximum(cnt, 1.0)
        ss = jnp.maximum(sxx - sx * mean, 0.0)
        d2 = (mean - locj[None, :]) ** 2
        h = t0[mi] - ss[..., None] * qa - d2[..., None] * qb[mi]  # (C, K, G)
        lse = jlse(h + logw, axis=-1)
        slope = (h[..., 1] - h[..., 0]) / du  # d log integrand / du at the lower end
        tail = jnp.where(slope > 0, h[..., 0] - jnp.log(jnp.where(slope > 0, slope, 1.0)), jnp.inf)
        comp = jnp.where(cnt > 0, jnp.logaddexp(lse, tail), 0.0)
        lpz = jgammaln(k * alpha) - jgammaln(n + k * alpha) + jnp.sum(jgammaln(cnt + alpha) - jgammaln(alpha), axis=1)
        total = lpz + comp.sum(1)
        if not want_sd:
            return total, onehot, None
        wsd = jnp.exp(h + logw - comp[..., None])  # (C, K, G)
        prior_w = jnp.exp(t0[0] + logw)  # an empty component's sd: its prior
        wsd = jnp.where(cnt[..., None] > 0, wsd, prior_w / prior_w.sum())
        return total, onehot, wsd

    from gmmcourse.programs import exported_jit  # kept between processes, like the samplers' programs

    name = f"gmmcourse.exact.block_k{k}{'_sd' if want_sd else ''}"
    _BLOCK_FNS[(k, want_sd)] = exported_jit(block, name=name)
    return _BLOCK_FNS[(k, want_sd)]


def enumerate_exact(x, prior: GMMPrior, *, anchor: int | None = None, sd_posterior: bool = False,
                    grid_spacing: float = 0.1, sd_range: tuple | None = None, rounding: float = 0.0,
                    occupancy: bool = False) -> ExactEvidence:
    """Exact evidence and assignment probabilities by enumerating all K^N assignments.

    Vectorised (JAX, float64, blocks of configurations); the weights and means integrate out
    analytically and each sd on a log-spaced trapezoid grid (with an analytic power-law
    correction below the first node), so the result is exact to quadrature error (~1e-9).
    With ``anchor`` set and an exchangeable prior, point ``anchor`` is fixed in component
    K-1 and the evidence is multiplied by K (every labelling of a partition has the same
    probability), halving the work for K = 2.

    Args:
        x: data, shape (N,), with K^N (or K^(N-1) with an anchor) at most 2^22.
        prior: the `GMMPrior` (K = prior.k).
        anchor: index of a point whose component is labelled K-1 (exchangeable priors only).
        sd_posterior: also return each sd's posterior mass on the grid.
        grid_spacing: spacing of the log sd grid.
        sd_range: (lowest, highest) sd node; by default from the data's range and the prior.
        rounding: the resolution the data were recorded to: each likelihood term has
            variance sd**2 + rounding**2 / 12 (as `gmmcourse.gibbs.posterior(...,
            rounding=...)`). With rounding 0 and m >= 3 equal values the evidence can be
            infinite (returned as inf): a component on them has a likelihood growing like
            sd^-(m-1) as sd -> 0, faster than the Gamma prior vanishes.
        occupancy: also return P(exactly j components are occupied | x), j = 0..K.
    """
    import jax.numpy as jnp

    from gmmcourse.precision import x64_context

    x = check_data(x).astype(np.float64)
    n, k = x.shape[0], prior.k
    if anchor is not None and not _is_exchangeable(prior):
        raise ValueError("anchor needs an exchangeable prior (equal mean_loc)")
    free = n - (1 if anchor is not None else 0)
    if k**free > 2**22:
        raise ValueError(f"exact enumeration needs K^N <= 2^22; got K={k}, N={n}")
    centre = float(np.mean(x))
    loc = np.asarray(prior.mean_loc, np.float64) - centre
    u, du = _log_grid(x, prior, grid_spacing, sd_range)
    with x64_context(np.float64):
        xc = x - centre
        if anchor is not None:
            # enumerate the other points' labels in the low digits; the anchor is fixed
            order = [i for i in range(n) if i != anchor] + [anchor]
            xc = xc[order]
        fixed = np.full(n, -1, np.int64)
        if anchor is not None:
            fixed[n - 1] = k - 1
        t0, qa, qb, logw = _tables(n, float(prior.sd_shape), float(prior.sd_rate), float(prior.mean_scale) ** 2, u, du,
                                   float(rounding) ** 2 / 12.0)
        consts = tuple(jnp.asarray(c) for c in (k ** np.arange(n, dtype=np.int64), xc, loc, t0, qa, qb, logw,
                                                 du, float(prior.concentration)))
        fn = _block_fn(k, sd_posterior)

        def block(codes, fixed):
            return fn(codes, fixed, *consts)

        total_configs = k**free
        starts = range(0, total_configs, CHUNK)
        fixed_j = jnp.asarray(fixed)
        logs = []
        for st in starts:
            codes = jnp.arange(st, st + CHUNK, dtype=jnp.int64)
            lt, _, _ = block(codes, fixed_j)
            lt = np.array(lt)
            lt[max(0, total_configs - st):] = -np.inf  # padding past the last configuration
            logs.append(lt)
        logs = np.concatenate(logs)[:total_configs]
        log_z = float(logsumexp(logs))
        if not np.isfinite(log_z):  # an unbounded likelihood (ties, rounding 0): no posterior
            return ExactEvidence(log_z, np.full((n, k), np.nan), np.exp(u), None, None)
        occupied = _occupancy(logs, log_z, n, k, anchor is not None) if occupancy else None
        assign = np.zeros((n, k))
        sd_mass = np.zeros((k, u.size)) if sd_posterior else None
        for j, st in enumerate(starts):
            codes = jnp.arange(st, st + CHUNK, dtype=jnp.int64)
            p = np.exp(logs[st:st + CHUNK] - log_z)
            if np.max(p, initial=0.0) < 1e-22:  # skipped mass < 2^22 * 1e-22 < 1e-15
                continue
            p_pad = np.zeros(CHUNK)
            p_pad[: p.size] = p
            _, onehot, wsd = block(codes, fixed_j)
            assign += np.einsum("c,cnk->nk", p_pad, np.asarray(onehot))
            if sd_posterior:
                sd_mass += np.einsum("c,ckg->kg", p_pad, np.asarray(wsd))
    if anchor is not None:
        inv = np.empty(n, np.int64)
        inv[order] = np.arange(n)
        assign = assign[inv]
        log_z += float(np.log(k))
    return ExactEvidence(log_z, assign, np.exp(u), sd_mass, occupied)


def _occupancy(logs, log_z, n, k, anchored):
    """P(exactly j components occupied | x), j = 0..K, from every configuration's log p(x, z)
    (configuration c's label of point i is digit i of c in base K; an anchored point is in
    component K-1)."""
    free = n - 1 if anchored else n
    p = np.exp(logs - log_z)
    codes = np.arange(logs.size, dtype=np.int64)
    used = np.zeros((logs.size, k), bool)
    if anchored:
        used[:, k - 1] = True
    for i in range(free):
        used[codes, (codes // k**i) % k] = True
    return np.bincount(used.sum(1), weights=p, minlength=k + 1)


def log_evidence(x, prior: GMMPrior, *, rounding: float = 0.0) -> float:
    """Exact log p(x) of `gmm` under `prior` (enumeration; an anchor when exchangeable);
    `rounding` as in `enumerate_exact`."""
    anchor = int(np.argmax(np.asarray(x))) if _is_exchangeable(prior) and prior.k > 1 else None
    return enumerate_exact(x, prior, anchor=anchor, rounding=rounding).log_evidence


class ExactPredictive(NamedTuple):
    """The posterior predictive of a new point, exactly.

    Attributes:
        log_density: log p(x_new | x) = log p(x, x_new) - log p(x).
        probs: P(z_new = k | x_new, x), shape (K,) (in the anchor's labelling, if any).
        log_evidence: log p(x); log_evidence_with_new: log p(x, x_new).
    """

    log_density: float
    probs: np.ndarray
    log_evidence: float
    log_evidence_with_new: float


def exact_predictive(x, x_new: float, prior: GMMPrior, *, anchor: int | None = None, **kwargs) -> ExactPredictive:
    """Exact posterior predictive density and classification of one new point, as a ratio
    of marginal likelihoods (both by `enumerate_exact`, which gets `kwargs`)."""
    x = check_data(x).astype(np.float64)
    base = enumerate_exact(x, prior, anchor=anchor, **kwargs)
    both = enumerate_exact(np.append(x, float(x_new)), prior, anchor=anchor, **kwargs)
    return ExactPredictive(both.log_evidence - base.log_evidence, both.assignment_probs[-1],
                           base.log_evidence, both.log_evidence)


def sd_summary(grid, mass) -> dict:
    """Mode, median and mean of an sd posterior given as mass on log-spaced nodes.

    The density in u = log sd (mass / du) is smooth, so a cubic spline of its logarithm
    through the nodes gives the mode and median to well below the grid spacing.
    """
    from scipy.interpolate import CubicSpline

    grid, mass = np.asarray(grid, np.float64), np.asarray(mass, np.float64) / np.sum(mass)
    u = np.log(grid)
    keep = mass > 1e-300
    spline = CubicSpline(u[keep], np.log(mass[keep]))
    fine = np.linspace(u[keep][0], u[keep][-1], 200_001)
    dens_u = np.exp(spline(fine))
    mode = float(np.exp(fine[np.argmax(dens_u * np.exp(-fine))]))  # density in sd = dens_u / sd
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens_u[1:] + dens_u[:-1]) * np.diff(fine))])
    median = float(np.exp(np.interp(0.5 * cdf[-1], cdf, fine)))
    return {"mode": mode, "median": median, "mean": float(mass @ grid)}
