"""One Gibbs sweep on a GMM trace: the sampler the book teaches, one chain at a time.

One sweep of the sampler, for the model `gmmcourse.models.gmm`:

1. **z** -- for every point i and component k, the joint density
   ``p(z_i = k, x_i | weights, means, sds)`` is computed by the model's own
   `mixture_point.assess` (`z_log_table`); z_i is drawn from the normalised (K, N) table
   (`draw_z`: exact enumeration of the discrete choice).
2. **weights** -- Dirichlet(concentration + n_k), the exact conditional (conjugate).
3. **means** -- Normal, the exact conditional given z and sds (conjugate).
4. **sds** -- the Gamma(a, b) prior on a standard deviation is not conjugate, so each sd gets
   independence Metropolis-Hastings steps in u = log sd, with a Student-t proposal (5
   degrees of freedom) placed on the exact conditional: at its mode (a cubic's root, by
   Newton's method), scaled by its curvature there (a Laplace approximation,
   `sd_proposal`). The conditional density in u is
   exp((a - n_k) u - b e^u - S_k e^(-2u) / 2), with S_k the sum over the component's points
   of (x_i - mean_k)^2; its tails fall like exp(-e^|u|), far faster than the proposal's, so
   the acceptance ratio is bounded (the chain is uniformly ergodic) and an sd left far out
   in the tail by a move of the means or assignments is replaced at the first proposal.
   The proposal follows the prior as well as the likelihood, so it stays efficient where
   the data pull an sd into the prior's tail (one Gaussian for both bento recipes). An
   empty component's sd is drawn from its prior, the exact conditional.

Steps 2-4 are `update_params`; `sweep` is the whole sweep. The new choices are written into
the GenJAX trace with `update`, whose score is the log joint density tracked for
diagnostics (`log_joint`).

**Recorded to a resolution** (``rounding_var`` = ``delta**2 / 12``). Data recorded to the
nearest ``delta`` are modelled as the true value plus a rounding error of variance
``delta**2 / 12`` (Sheppard's correction): every likelihood term uses the variance
``sd**2 + delta**2 / 12``. With ties in the data the plain model's posterior can be improper
(a component on m >= 3 equal values has a likelihood growing like sd^-(m-1) as sd -> 0,
which a Gamma(2, 1) prior, vanishing only like sd, does not stop); the rounding variance
bounds every likelihood term, so the posterior is proper. ``rounding_var=0`` runs the plain
model's code unchanged.

**Label switching.** The posterior is symmetric under permuting components, so chains may
visit different labellings. `relabel` picks, among all K! `permutations`, the one whose
means are closest, in units of the pivot's sds, to a pivot fit; `scan_sweeps` relabels every
draw online. `run_chain` is one whole chain on unpadded data in a single scan: the
reference for `gmmcourse.chains`, which runs many chains fast on padded data and draws
exactly what it draws (tests/test_compile.py). `gmmcourse.gibbs.posterior` is the entry
point.
"""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from genjax import const
from jax.scipy.special import logsumexp

from gmmcourse.em import kmeans_plus_plus
from gmmcourse.gamma import gamma
from gmmcourse.models import GMMPrior, gmm, gmm_choices, gmm_params, mixture_point

__all__ = [
    "MAX_K_RELABEL",
    "SD_PROPOSAL_DF",
    "permutations",
    "z_log_table",
    "sd_proposal",
    "sd_log_target",
    "update_params",
    "draw_z",
    "sweep",
    "init_params",
    "init_trace",
    "log_joint",
    "relabel",
    "scan_sweeps",
    "start_chain",
    "run_chain",
]

MAX_K_RELABEL = 7
"""Largest K `relabel` supports: it enumerates the K! permutations (7! = 5040)."""
SD_PROPOSAL_DF = 5.0
"""Degrees of freedom of the sd proposal (Student-t in log sd)."""


def permutations(k: int) -> np.ndarray:
    """All permutations of range(k), shape (k!, k)."""
    return np.array(list(itertools.permutations(range(k))), dtype=np.int32)


def z_log_table(x, weights, means, sds):
    """log p(z_i = k, x_i | parameters) for every k and i, shape (K, N), by `assess`.

    The discrete choice is enumerated: the GenJAX point model is assessed at every
    (component, point) pair.
    """
    k = weights.shape[0]

    def assess(z, xi):
        logp, _ = mixture_point.assess({"z": z, "x": xi}, weights, means, sds)
        return logp

    return jax.vmap(lambda z: jax.vmap(lambda xi: assess(z, xi))(x))(jnp.arange(k))


def sd_proposal(n_k, ss, a, b, iters: int = 12):
    """Centre and scale of the sd proposal: a Laplace approximation, in u = log sd, of the
    conditional p(sd | z, x, means) for a component of `n_k` points with sum of squares
    `ss` about its mean, under the Gamma(a, b) prior.

    The log density in u is f(u) = (a - n) u - b e^u - (ss/2) e^(-2u), strictly concave.
    Its mode s = e^u solves g(s) = b s^3 + (n - a) s^2 - ss = 0; Newton's method on g starts
    above the root (at the smaller of two upper bounds) where g is convex and increasing, so
    it decreases monotonically to it. The scale is 1 / sqrt(-f''(u)) at the mode.
    Only the proposal depends on these numbers, not the correctness of the MH step.

    Args:
        n_k, ss: counts and sums of squares, shape (K,) (ss > 0).
        a, b: the Gamma prior's shape and rate.

    Returns:
        (mode in log sd, scale in log sd), each (K,).
    """
    c = n_k - a
    upper = jnp.maximum(-c, 0.0) / b + jnp.cbrt(ss / b)  # g(upper) >= 0 for every n
    upper = jnp.where(c > 0, jnp.minimum(upper, jnp.sqrt(ss / jnp.maximum(c, 1e-30))), upper)

    def newton(_, s):
        g = (b * s + c) * s * s - ss
        dg = (3 * b * s + 2 * c) * s
        return jnp.maximum(s - g / dg, 0.5 * s)

    s = jax.lax.fori_loop(0, iters, newton, upper)
    curvature = b * s + 2 * ss / (s * s)
    return jnp.log(s), jax.lax.rsqrt(curvature)


def sd_log_target(u, n_k, ss, a, b, rounding_var=0.0):
    """log p(u | z, x, means) + const for u = log sd (Jacobian included): a component of
    `n_k` points with sum of squares `ss` about its mean, Gamma(a, b) prior on the sd, and
    observation variance sd**2 + `rounding_var` (0: the plain model,
    (a - n_k) u - b e^u - ss e^(-2u) / 2)."""
    if not rounding_var:  # a Python branch: the plain model's arithmetic, unchanged
        return (a - n_k) * u - b * jnp.exp(u) - 0.5 * ss * jnp.exp(-2 * u)
    var = jnp.exp(2 * u) + rounding_var
    return a * u - b * jnp.exp(u) - 0.5 * n_k * jnp.log(var) - 0.5 * ss / var


def update_params(key, x, z, sds, prior: GMMPrior, num_mh: int = 2, mask=None, rounding_var: float = 0.0):
    """Draw weights, means and sds given the assignments z (steps 2-4 of the sweep).

    Every Gamma variate of the step (the Dirichlet's and the empty components' prior draws
    of their sds) depends on the counts only, so they come from one call of
    `gmmcourse.gamma.gamma`: Gamma sampling is a rejection loop, slow to compile, and one
    call site compiles once. `mask` (N,) marks the real points of padded data: padding is left out
    of every count and sum. `rounding_var` (a Python float) is added to every sd**2 in the
    likelihood (see the module's note on recorded data).
    """
    k = prior.mean_loc.shape[0]
    dtype = x.dtype
    tiny = jnp.finfo(dtype).tiny
    kg, km, kn, ku = jax.random.split(key, 4)
    onehot = z[None, :] == jnp.arange(k)[:, None]  # (K, N)
    if mask is not None:
        onehot = onehot & mask[None, :]
    onehot = onehot.astype(dtype)
    n_k = jnp.sum(onehot, axis=1)
    a, b = prior.sd_shape, prior.sd_rate
    shapes = jnp.concatenate([
        prior.concentration + n_k,  # Dirichlet(concentration + n_k), as normalised Gammas
        jnp.full((num_mh * k,), SD_PROPOSAL_DF / 2),  # chi-square / 2 of the Student-t proposals
        jnp.broadcast_to(jnp.asarray(a, dtype), (num_mh * k,)),  # prior draws of empty components' sds
    ]).astype(dtype)
    g = gamma(kg, shapes, dtype)
    g_w = g[:k]
    g_chi, g_prior = g[k:k + num_mh * k].reshape(num_mh, k), g[k + num_mh * k:].reshape(num_mh, k)
    weights = jnp.maximum(g_w, tiny)
    weights = weights / jnp.sum(weights)
    # means | z, sds: Normal-Normal conjugacy
    var = sds**2 + rounding_var if rounding_var else sds**2
    precision = 1 / prior.mean_scale**2 + n_k / var
    centre = (prior.mean_loc / prior.mean_scale**2 + (onehot @ x) / var) / precision
    means = centre + jax.random.normal(km, (k,), dtype=dtype) * jax.lax.rsqrt(precision)
    # sds | z, means: independence MH in u = log sd, Student-t proposal centred on the
    # conditional's mode (`sd_proposal`); an exact prior draw if the component is empty
    ss = jnp.maximum(jnp.sum(onehot * (x[None, :] - means[:, None]) ** 2, axis=1), tiny)
    centre_u, scale_u = sd_proposal(n_k, ss, a, b)
    nu = SD_PROPOSAL_DF
    t = jax.random.normal(kn, (num_mh, k), dtype=dtype) * jax.lax.rsqrt(jnp.maximum(2 * g_chi, tiny) / nu)
    log_u = jnp.log(jax.random.uniform(ku, (num_mh, k), dtype=dtype))

    def log_target(u):  # log p(u | z, x, means) + const, Jacobian included
        return sd_log_target(u, n_k, ss, a, b, rounding_var)

    def log_proposal(u):  # Student-t(nu) in u, up to a constant
        return -0.5 * (nu + 1) * jnp.log1p(((u - centre_u) / scale_u) ** 2 / nu)

    for step in range(num_mh):
        u, prop = jnp.log(sds), centre_u + scale_u * t[step]
        log_accept = log_target(prop) - log_target(u) - log_proposal(prop) + log_proposal(u)
        new = jnp.where(log_u[step] < log_accept, jnp.exp(prop), sds)
        sds = jnp.where(n_k > 0, new, g_prior[step] / b)
    return weights, means, sds


def draw_z(key, table):
    """Draw every z_i from the normalised (K, N) table of log p(z_i = k, x_i | parameters)
    (Gumbel-max); also return the (K, N) conditional probabilities.

    The Gumbel noise is drawn in (N, K) layout: point i's noise is then the same whatever
    padding follows the data (see `gmmcourse.shapes`)."""
    probs = jnp.exp(table - logsumexp(table, axis=0, keepdims=True))
    noise = jax.random.gumbel(key, table.shape[::-1], dtype=table.dtype).T
    z = jnp.argmax(table + noise, axis=0).astype(jnp.int32)
    return z, probs


def sweep(key, trace, x, prior: GMMPrior, num_mh: int = 2, mask=None, rounding_var: float = 0.0):
    """One Gibbs sweep on a `gmm` trace. Returns the new trace and the (K, N) conditional
    assignment probabilities P(z_i = k | x_i, parameters) used to draw z. With `mask`
    (padded data), padded points are drawn too but left out of the parameter updates;
    `rounding_var` is added to every sd**2 in the likelihood."""
    weights, means, sds = gmm_params(trace.get_choices())
    kz, kp = jax.random.split(key)
    obs_sds = jnp.sqrt(sds**2 + rounding_var) if rounding_var else sds
    z, probs = draw_z(kz, z_log_table(x, weights, means, obs_sds))
    weights, means, sds = update_params(kp, x, z, sds, prior, num_mh, mask, rounding_var)
    new_trace, _, _ = trace.update(gmm_choices(weights, means, sds, z=z))
    return new_trace, probs


def _masked_sd(x, mask, n):
    """Standard deviation of the real points (all of x when `mask` is None)."""
    if mask is None:
        mask, n = jnp.ones(x.shape, bool), x.shape[0]
    nf = jnp.asarray(n, x.dtype)
    centre = jnp.sum(jnp.where(mask, x, 0.0)) / nf
    return jnp.sqrt(jnp.sum(jnp.where(mask, (x - centre) ** 2, 0.0)) / nf)


def init_params(key, x, prior: GMMPrior, mask=None, n=None):
    """A starting state (weights, means, sds, z): k-means++ seeds for the means (matched to
    the prior locations' order), sds = sd(x)/K, equal weights, z = the nearest mean.
    For padded data, `mask` marks the real points and `n` counts them."""
    k = prior.mean_loc.shape[0]
    seeds = kmeans_plus_plus(key, x, k, mask=mask, n=n)
    rank = jnp.argsort(jnp.argsort(prior.mean_loc))  # component with the j-th smallest loc gets the j-th seed
    means = seeds[rank]
    sds = jnp.full((k,), jnp.maximum(_masked_sd(x, mask, n) / k, 1e-3), dtype=x.dtype)
    weights = jnp.full((k,), 1.0 / k, dtype=x.dtype)
    z = jnp.argmin(jnp.abs(x[None, :] - means[:, None]), axis=0).astype(jnp.int32)
    return weights, means, sds, z


def init_trace(key, x, prior: GMMPrior, mask=None, n=None):
    """A `gmm` trace holding `init_params`' starting state and the data."""
    weights, means, sds, z = init_params(key, x, prior, mask, n)
    trace, _ = gmm.generate(gmm_choices(weights, means, sds, z, x), const(int(x.shape[0])), prior)
    return trace


def log_joint(trace, mask=None):
    """log p(weights, means, sds, z, x) of a `gmm` trace (minus its score); with `mask`,
    of the real points only (the padded points' per-point scores are left out)."""
    if mask is None:
        return -trace.get_score()
    parts = trace._choices  # the sub-traces by address; "points" holds one score per point
    rest = sum(jnp.sum(sub._score) for name, sub in parts.items() if name != "points")
    return -(rest + jnp.sum(jnp.where(mask, parts["points"]._score, 0.0)))


def relabel(means, pivot_means, pivot_sds, perms):
    """The permutation (a row of `perms`) whose permuted means best match the pivot's, in
    units of the pivot's sds: `means[perm]` is the relabelled draw."""
    cost = jnp.sum(((means[perms] - pivot_means[None, :]) / pivot_sds[None, :]) ** 2, axis=1)
    return perms[jnp.argmin(cost)]


def scan_sweeps(carry, ts, krun, x, prior, pivot_means, pivot_sds, perms, num_warmup, num_mh, mask=None, total=None,
                 rounding_var=0.0):
    """Sweeps number `ts` of one chain in a `lax.scan`; sweep t uses the key
    fold_in(krun, t) (= split(krun, T)[t] for any T > t), so a run cut into chunks draws
    exactly what one long scan draws. Sweeps t >= num_warmup (and t < total) add their
    conditional assignment probabilities to the running sum."""

    def step(carry, t):
        trace, perm_before, prob_sum = carry
        # the conditional probabilities this sweep uses come from the parameters before it:
        # relabel them with those parameters' permutation
        trace, probs = sweep(jax.random.fold_in(krun, t), trace, x, prior, num_mh, mask, rounding_var)
        keep = t >= num_warmup if total is None else (t >= num_warmup) & (t < total)
        prob_sum = prob_sum + jnp.where(keep, probs[perm_before], 0.0)
        raw = gmm_params(trace.get_choices())
        perm = relabel(raw[1], pivot_means, pivot_sds, perms)
        return (trace, perm, prob_sum), (raw, tuple(a[perm] for a in raw), log_joint(trace, mask))

    return jax.lax.scan(step, carry, ts)


def start_chain(key, x, prior, pivot_means, pivot_sds, perms, mask=None, n=None):
    """A chain's starting carry for `scan_sweeps` (`init_trace`, its relabelling permutation,
    a zero sum of assignment probabilities) and the key of its sweeps, from its key."""
    kinit, krun = jax.random.split(key)
    trace = init_trace(kinit, x, prior, mask, n)
    perm0 = relabel(trace.get_choices()["means"], pivot_means, pivot_sds, perms)
    zeros = jnp.zeros((prior.mean_loc.shape[0], x.shape[0]), x.dtype)
    return (trace, perm0, zeros), krun


@partial(jax.jit, static_argnames=("num_warmup", "num_samples", "num_mh", "rounding_var"))
def run_chain(key, x, prior, pivot_means, pivot_sds, perms, num_warmup, num_samples, num_mh, rounding_var=0.0):
    """One chain on unpadded data: `num_warmup` + `num_samples` sweeps in a single
    `lax.scan`, keeping the draws after warm-up (the reference for the padded, chunked path
    of `gmmcourse.gibbs.posterior`, which draws the same, seed for seed; tests and
    benchmarks). Returns ((raw draws, relabelled draws, log joint), mean assignment
    probabilities (K, N)), draws as in `scan_sweeps`."""
    carry, krun = start_chain(key, x, prior, pivot_means, pivot_sds, perms)
    total = num_warmup + num_samples
    (_, _, prob_sum), outs = scan_sweeps(carry, jnp.arange(total), krun, x, prior, pivot_means, pivot_sds, perms,
                                          num_warmup, num_mh, rounding_var=rounding_var)
    outs = jax.tree.map(lambda a: a[num_warmup:], outs)
    return outs, prob_sum / num_samples


