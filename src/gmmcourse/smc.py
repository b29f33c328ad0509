"""Marginal likelihood p(x | K) by sequential Monte Carlo with likelihood tempering.

Importance sampling from the prior fails on mixtures (`gmmcourse.importance`): the posterior
is too far from the prior for one jump. SMC {Del Moral, Doucet and Jasra 2006} makes the jump
in small steps. The particles target the tempered posteriors

    pi_t(theta, z) ∝ p(theta) p(z | theta) p(x | z, theta)^beta_t,   0 = beta_0 < ... < beta_T = 1,

starting from prior draws made by the GenJAX model (`gmm.simulate`). At each step a particle
is reweighted by p(x | z, theta)^(beta_t - beta_{t-1}), the particles are resampled when
their effective sample size falls below half, and each particle is moved by Gibbs sweeps
that leave pi_t invariant:

* z_i ∝ w_k N(x_i; mu_k, sd_k)^beta, from the Gibbs sweep's table of ``mixture_point.assess``
  (GenJAX, `gmmcourse.sweep.z_log_table`);
* weights | z ~ Dirichlet(concentration + n_k) (the z prior is not tempered);
* mu_k | z, sd ~ Normal with the likelihood's precision scaled by beta;
* log sd_k by random-walk Metropolis-Hastings under Gamma(a, b) x tempered likelihood.

The product over steps of the average incremental weight is an unbiased estimate of
p(x | K); its logarithm is reported, with the spread over independent runs.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from genjax import const, seed
from jax.scipy.special import logsumexp

from gmmcourse.gamma import gamma
from gmmcourse.models import GMMPrior, as_prior, gmm, gmm_params
from gmmcourse.precision import x64_context
from gmmcourse.programs import exported_jit
from gmmcourse.sweep import z_log_table
from gmmcourse.validation import check_data, check_positive_int

__all__ = ["SMCResult", "smc_log_evidence", "smc_co_clustering", "tempering_schedule"]

MH_SCALES = (0.15, 0.5)  # random-walk steps on log sd, alternated


class SMCResult(NamedTuple):
    """SMC estimates of log p(x | K) from independent runs.

    Attributes:
        log_evidence: log of the average of the runs' evidence estimates (each unbiased).
        runs: every run's log evidence estimate, shape (num_runs,).
        se: standard error of ``log_evidence`` (delta method over the runs).
        min_ess: smallest effective sample size seen before a resampling, per run.
        assignments: every run's final particles' assignments z, shape (num_runs,
            num_particles, N): weighted by ``log_weights``, draws from the posterior.
        log_weights: the final particles' normalised log weights, (num_runs, num_particles).
    """

    log_evidence: float
    runs: np.ndarray
    se: float
    min_ess: np.ndarray
    assignments: np.ndarray | None = None
    log_weights: np.ndarray | None = None


def tempering_schedule(num_steps: int, power: float = 4.0) -> np.ndarray:
    """beta_t = (t / T)^power, t = 0..T: small steps near the prior, where they matter."""
    return (np.arange(num_steps + 1) / num_steps) ** power


def _log_lik_table(x, weights, means, sds):
    """log N(x_i; mu_k, sd_k), shape (K, N): the Gibbs sweep's table of
    log p(z_i = k, x_i | parameters) (`gmmcourse.sweep.z_log_table`, the GenJAX point
    model's `assess`) less log w_k."""
    return z_log_table(x, weights, means, sds) - jnp.log(weights)[:, None]


def _gibbs_move(key, x, state, beta, prior, num_mh):
    """One sweep leaving the tempered posterior at `beta` invariant."""
    weights, means, sds, _ = state
    k = means.shape[0]
    kz, kw, km, ks = jax.random.split(key, 4)
    ll = _log_lik_table(x, weights, means, sds)  # (K, N)
    z = jax.random.categorical(kz, (jnp.log(weights)[:, None] + beta * ll).T, axis=-1)  # (N,)
    onehot = (z[None, :] == jnp.arange(k)[:, None]).astype(x.dtype)
    n_k = onehot.sum(1)
    if k > 1:
        g = gamma(kw, prior.concentration + n_k, x.dtype)
        weights = jnp.maximum(g, jnp.finfo(x.dtype).tiny)
        weights = weights / weights.sum()
    prec = 1 / prior.mean_scale**2 + beta * n_k / sds**2
    centre = (prior.mean_loc / prior.mean_scale**2 + beta * (onehot @ x) / sds**2) / prec
    means = centre + jax.random.normal(km, (k,), x.dtype) / jnp.sqrt(prec)
    ss = jnp.sum(onehot * (x[None, :] - means[:, None]) ** 2, axis=1)
    a, b = prior.sd_shape, prior.sd_rate

    def log_target(s):  # in u = log s, with the Jacobian s
        return a * jnp.log(s) - b * s + beta * (-n_k * jnp.log(s) - ss / (2 * s**2))

    keys = jax.random.split(ks, 2 * num_mh)
    for step in range(num_mh):
        scale = MH_SCALES[step % len(MH_SCALES)]
        prop = sds * jnp.exp(scale * jax.random.normal(keys[2 * step], (k,), x.dtype))
        log_u = jnp.log(jax.random.uniform(keys[2 * step + 1], (k,), x.dtype))
        sds = jnp.where(log_u < log_target(prop) - log_target(sds), prop, sds)
    return weights, means, sds, z.astype(jnp.int32)


def _log_lik(x, state):
    weights, means, sds, z = state
    ll = _log_lik_table(x, weights, means, sds)
    return jnp.sum(jnp.take_along_axis(ll, z[None, :], axis=0))


@partial(jax.jit, static_argnames=("num_particles", "num_mh"))
def _smc_run(key, x, prior, betas, num_particles, num_mh):
    n = x.shape[0]
    k = prior.mean_loc.shape[0]
    k_init, k_loop = jax.random.split(key)
    traces = jax.vmap(lambda kk: seed(gmm.simulate)(kk, const(n), prior))(jax.random.split(k_init, num_particles))
    choices = traces.get_choices()
    weights, means, sds = gmm_params(choices)
    if k == 1:
        weights = jnp.ones((num_particles, 1), x.dtype)
    state = (weights.astype(x.dtype), means.astype(x.dtype), sds.astype(x.dtype), choices["points"]["z"].astype(jnp.int32))
    logw = jnp.full((num_particles,), -jnp.log(num_particles), x.dtype)  # normalised

    def step(carry, inputs):
        state, logw, log_z, min_ess = carry
        key, beta_prev, beta = inputs
        k_res, k_move = jax.random.split(key)
        inc = (beta - beta_prev) * jax.vmap(lambda *s: _log_lik(x, s))(*state)
        lw = logw + inc
        log_z = log_z + logsumexp(lw)
        lw = lw - logsumexp(lw)
        ess = 1.0 / jnp.sum(jnp.exp(2 * lw))
        min_ess = jnp.minimum(min_ess, ess)

        def resample(args):
            state, lw = args
            idx = jax.random.categorical(k_res, lw, shape=(num_particles,))
            return jax.tree.map(lambda a: a[idx], state), jnp.full_like(lw, -jnp.log(num_particles))

        state, lw = jax.lax.cond(ess < num_particles / 2, resample, lambda a: a, (state, lw))
        moves = jax.random.split(k_move, num_particles)
        state = jax.vmap(lambda kk, *s: _gibbs_move(kk, x, s, beta, prior, num_mh))(moves, *state)
        return (state, lw, log_z, min_ess), None

    steps = betas.shape[0] - 1
    inputs = (jax.random.split(k_loop, steps), betas[:-1], betas[1:])
    init = (state, logw, jnp.zeros((), x.dtype), jnp.asarray(num_particles, x.dtype))
    (state, lw, log_z, min_ess), _ = jax.lax.scan(step, init, inputs)
    return log_z, min_ess, state[3], lw


# XLA:CPU spends minutes optimising this program at its default level (-O2: 130 s for K = 4
# on a loaded 2-core machine) and runs it in seconds; at -O1 it compiles ~4x faster and
# runs barely slower (29 s + 5 s against 130 s + 4 s, same machine).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def smc_runs(keys, x, prior, betas, num_particles, num_mh):
    """Independent runs, one per key, vectorised."""
    return jax.vmap(lambda kk: _smc_run(kk, x, prior, betas, num_particles, num_mh))(keys)


_RUNS = exported_jit(smc_runs, compiler_options=COMPILER_OPTIONS)
"""The vectorised runs, compiled once per shape with `COMPILER_OPTIONS` and kept between
processes (`gmmcourse.programs.exported_jit`)."""


def smc_log_evidence(x, prior: GMMPrior, *, num_particles: int = 1000, num_steps: int = 100,
                     num_runs: int = 4, num_mh: int = 4, seed: int = 0) -> SMCResult:
    """Estimate log p(x) of `gmm` under `prior` by tempered SMC (see the module docstring).

    Args:
        x: data, shape (N,).
        prior: the `GMMPrior` (K = prior.k).
        num_particles: particles per run.
        num_steps: tempering steps (beta_t = (t/T)^4).
        num_runs: independent runs (vectorised); their spread is the Monte Carlo error.
        num_mh: random-walk MH steps on each sd per move.
        seed: integer seed.
    """
    x = check_data(x)
    num_particles = check_positive_int(num_particles, "num_particles")
    num_steps = check_positive_int(num_steps, "num_steps")
    num_runs = check_positive_int(num_runs, "num_runs")
    with x64_context(np.float64):
        xj = jnp.asarray(x, jnp.float64)
        p = as_prior(prior, jnp.float64)
        betas = jnp.asarray(tempering_schedule(num_steps), jnp.float64)
        keys = jax.random.split(jax.random.key(seed), num_runs)
        outs = _RUNS(keys, xj, p, betas, num_particles=num_particles, num_mh=num_mh)
        log_z, min_ess, z_final, lw_final = (np.asarray(a) for a in outs)
    est = float(logsumexp(log_z) - np.log(num_runs))
    # delta method: se of log(mean Z) = sd(Z_r) / (sqrt(R) mean Z)
    z = np.exp(log_z - log_z.max())
    se = float(np.std(z, ddof=1) / np.sqrt(num_runs) / z.mean()) if num_runs > 1 else float("nan")
    return SMCResult(est, log_z, se, min_ess, z_final, lw_final)


def smc_co_clustering(result: SMCResult) -> tuple[np.ndarray, np.ndarray]:
    """Posterior co-clustering P(z_i = z_j | x) from the final particles of every run.

    Each run gives a self-normalised estimate (its particles' weighted share with
    z_i = z_j); the runs are independent, so their average is the estimate and the spread
    of the run estimates over sqrt(runs) its standard error (the bias of a self-normalised
    estimate is of order 1/particles, well below that).

    Returns:
        (estimate, standard error), each (N, N).
    """
    z, lw = result.assignments, result.log_weights
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    w = w / w.sum(axis=1, keepdims=True)  # (R, P)
    same = z[:, :, :, None] == z[:, :, None, :]  # (R, P, N, N)
    per_run = np.einsum("rp,rpij->rij", w, same)
    r = per_run.shape[0]
    se = per_run.std(axis=0, ddof=1) / np.sqrt(r) if r > 1 else np.full(per_run.shape[1:], np.nan)
    return per_run.mean(axis=0), se
