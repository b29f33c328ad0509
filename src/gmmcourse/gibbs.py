"""Bayesian GMM inference that works: `posterior`, a Gibbs sampler driven by the GenJAX model.

`posterior(x, k)` samples the posterior of `gmmcourse.models.gmm` and returns a `Posterior`:
relabelled draws of weights, means and sds, Rao-Blackwellised assignment probabilities,
the log joint density of every draw, and ArviZ summaries and diagnostics. The work is done
in three modules, one job each:

* `gmmcourse.sweep` -- one Gibbs sweep on a GMM trace (the functions the book shows:
  `z_log_table`, `draw_z`, `update_params`, `sd_proposal`, `sweep`), relabelling against a
  pivot, and `run_chain`, one chain on the caller's data;
* `gmmcourse.chains` -- running many chains fast: padded data, chain groups, sweep chunks,
  programs built while EM fits the pivot;
* `gmmcourse.summaries` -- label-free summaries of the draws (`draw_assignment_probs`,
  `co_clustering`, `predictive_density`).

The walk from data to the compiled program: `posterior` validates `x` and pads it to its
bucket once (`gmmcourse.shapes.pad`), starts building the chains' programs in the package's
thread pool (`gmmcourse.chains.prepare`) while `gmmcourse.em.em` fits the pivot (EM pads to
its own bucket), then runs the chains (`gmmcourse.chains.sample`) and relabels nothing
after: every draw was relabelled online against the pivot (components sorted by mean), so
reported component j is "the component near the pivot's j-th mean". Raw (unrelabelled)
draws are kept for teaching.

**Recorded to a resolution** (``posterior(..., rounding=delta)``): every likelihood term uses
the variance ``sd**2 + delta**2 / 12``, which keeps the posterior proper when the data have
ties (see `gmmcourse.sweep`). The default ``rounding=0`` runs the plain model's code.

The names chapters and notebooks import from here (`z_log_table`, `sd_proposal`,
`draw_assignment_probs`, ...) are re-exported from their modules.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from gmmcourse.chains import prepare, sample
from gmmcourse.em import em, em_checked
from gmmcourse.models import GMMPrior, as_prior
from gmmcourse.precision import x64_context
from gmmcourse.programs import start
from gmmcourse.shapes import K_PAD, N_BUCKETS, bucket_size, pad
from gmmcourse.summaries import co_clustering, draw_assignment_probs, predictive_density
from gmmcourse.sweep import (MAX_K_RELABEL, SD_PROPOSAL_DF, draw_z, init_params, init_trace, log_joint, permutations,
                             relabel, run_chain, sd_log_target, sd_proposal, sweep, update_params, z_log_table)
from gmmcourse.validation import check_data, check_k, check_positive_int

__all__ = [
    "Draws",
    "Posterior",
    "posterior",
    "warm_up",
    # re-exported from gmmcourse.sweep
    "MAX_K_RELABEL",
    "SD_PROPOSAL_DF",
    "sweep",
    "z_log_table",
    "update_params",
    "sd_proposal",
    "sd_log_target",
    "init_params",
    "init_trace",
    "draw_z",
    "permutations",
    "log_joint",
    "relabel",
    "run_chain",
    # re-exported from gmmcourse.summaries
    "draw_assignment_probs",
    "co_clustering",
    "predictive_density",
]


class Draws(NamedTuple):
    """Posterior draws of the component parameters, each (chains, samples, K)."""

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray


class Posterior(NamedTuple):
    """Result of `posterior`.

    Attributes:
        weights, means, sds: relabelled draws, each (chains, samples, K), components in the
            order of the pivot (increasing mean).
        assignment_probs: P(z_i = k | data), shape (N, K), Rao-Blackwellised: the average over
            draws of the exact conditional P(z_i = k | x_i, parameters), relabelled per draw.
        log_joint: log p(parameters, z, x) of every draw, (chains, samples) (the trace score).
        raw: the same draws before relabelling (`Draws`).
        pivot: the EM fit used for relabelling (`gmmcourse.em.EMResult`).
        prior: the `GMMPrior` used.
        rounding: the recording resolution the likelihood allowed for (0: none).
    """

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    assignment_probs: np.ndarray
    log_joint: np.ndarray
    raw: Draws
    pivot: object
    prior: GMMPrior
    rounding: float = 0.0

    @property
    def num_chains(self) -> int:
        return self.means.shape[0]

    @property
    def num_samples(self) -> int:
        return self.means.shape[1]

    def to_arviz(self):
        """The relabelled draws as an ArviZ `DataTree` (dims: chain, draw, component)."""
        import arviz_base

        dims = {name: ["component"] for name in ("weights", "means", "sds")}
        return arviz_base.from_dict(
            {
                "posterior": {"weights": self.weights, "means": self.means, "sds": self.sds},
                "sample_stats": {"lp": self.log_joint},
            },
            dims=dims,
        )

    def summary(self):
        """ArviZ summary table: mean, sd, interval, ESS (bulk, tail), R-hat per parameter.

        A parameter that never varies (the weight of a one-component mixture) has no ESS or
        R-hat: NaN, without ArviZ's 0/0 warnings."""
        import warnings

        import arviz_stats

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            return arviz_stats.summary(self.to_arviz(), round_to="none")

    def diagnostics(self) -> dict:
        """Worst-case convergence numbers over all parameters (weights, means, sds): max
        R-hat and min bulk/tail ESS, the extremes of `summary`'s columns (computed by the
        same ArviZ functions on the arrays, without building the table)."""
        import warnings

        from arviz_stats.base import array_stats
        from arviz_stats.validate import validate_ci_prob

        draws = np.concatenate([np.moveaxis(np.asarray(a), -1, 0)
                                for a in (self.weights, self.means, self.sds)])  # (3K, chains, draws)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            r_hat = array_stats.rhat(draws, chain_axis=-2, draw_axis=-1)
            bulk = array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk")
            tail = array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="tail", prob=validate_ci_prob(None))
        return {
            "max_r_hat": float(np.nanmax(r_hat)),
            "min_ess_bulk": float(np.nanmin(bulk)),
            "min_ess_tail": float(np.nanmin(tail)),
        }


def posterior(
    x,
    k: int,
    *,
    prior: GMMPrior | None = None,
    num_chains: int = 4,
    num_samples: int = 1000,
    num_warmup: int = 200,
    num_mh: int = 2,
    seed: int = 0,
    dtype=np.float32,
    rounding: float = 0.0,
) -> Posterior:
    """Sample the posterior of the Bayesian GMM `gmmcourse.models.gmm` by Gibbs sampling.

    Compiled once per (data-size bucket, K, dtype): the data are padded to a bucket of
    `gmmcourse.shapes`, chains run in groups and sweeps in fixed-size chunks, so new data
    sizes within a bucket and new `num_samples`, `num_warmup` or `num_chains` reuse the
    compiled program (the draws are those of one long scan per chain).

    Args:
        x: observations, shape (N,).
        k: number of components (1 <= k <= N, and k <= 7 for relabelling).
        prior: a `GMMPrior` with K = k components; default: means ~ Normal(mean(x), 2 sd(x))
            for every component, sds ~ Gamma(2, 1), weights ~ Dirichlet(1).
        num_chains: independent chains, run in parallel with `jax.vmap`.
        num_samples: kept sweeps per chain.
        num_warmup: discarded sweeps per chain.
        num_mh: Metropolis-Hastings steps per sd per sweep (independence proposal, see
            `gmmcourse.sweep.sd_proposal`).
        seed: integer seed.
        dtype: float32 (default) or float64.
        rounding: the resolution the data were recorded to (0: exact values). Each
            likelihood term then has variance sd**2 + rounding**2 / 12, which keeps the
            posterior proper when the data have ties (see `gmmcourse.sweep`).

    Returns:
        A `Posterior` (relabelled draws, assignment probabilities, diagnostics helpers).
    """
    x = check_data(x)
    n = x.shape[0]
    k = check_k(k, n)
    if k > MAX_K_RELABEL:
        raise ValueError(f"k={k}: relabelling enumerates k! permutations and supports k <= {MAX_K_RELABEL}")
    num_chains = check_positive_int(num_chains, "num_chains")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_mh = check_positive_int(num_mh, "num_mh")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    num_warmup = int(num_warmup)
    if prior is None:
        spread = float(np.std(x)) if n > 1 else 1.0
        prior = GMMPrior.exchangeable(k, loc=float(np.mean(x)), scale=2 * max(spread, 1e-3))
    if not isinstance(prior, GMMPrior):
        raise ValueError(f"prior must be a gmmcourse.models.GMMPrior, got {type(prior).__name__}")
    if prior.k != k:
        raise ValueError(f"prior has {prior.k} components (len(prior.mean_loc)) but k={k}")
    for name in ("mean_scale", "sd_shape", "sd_rate", "concentration"):
        v = np.asarray(getattr(prior, name))
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"prior.{name} must be positive and finite, got {v}")
    if not np.all(np.isfinite(np.asarray(prior.mean_loc))):
        raise ValueError("prior.mean_loc contains NaN or infinite values")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(rounding, bool) or not isinstance(rounding, (int, float, np.floating, np.integer)) \
            or not (np.isfinite(rounding) and rounding >= 0):
        raise ValueError(f"rounding must be a non-negative number, got {rounding!r}")
    rounding_var = float(rounding) ** 2 / 12.0

    xp, mask = pad(x, dtype)  # the chains' data, padded once for both of their programs
    with x64_context(dtype):
        p = as_prior(prior, dtype)
    building = start(prepare, xp, mask, n, k, p, num_chains, num_mh, seed, dtype, rounding_var)
    pivot = em_checked(x, k, seed=seed)  # x and k were checked above
    building.result()
    with x64_context(dtype):
        perms = jnp.asarray(permutations(k))
        pivot_means = jnp.asarray(pivot.means, dtype)
        pivot_sds = jnp.asarray(np.maximum(pivot.sds, 1e-6 * max(float(np.std(x)), 1.0)), dtype)
        (raw, relabelled, log_joint_draws), probs = sample(
            xp, mask, n, p, pivot_means, pivot_sds, perms, num_chains, num_warmup, num_samples, num_mh, seed, dtype,
            rounding_var)
    return Posterior(
        weights=relabelled[0],
        means=relabelled[1],
        sds=relabelled[2],
        assignment_probs=np.mean(probs, axis=0).T,  # average over chains, (N, K)
        log_joint=log_joint_draws,
        raw=Draws(*raw),
        pivot=pivot,
        prior=prior,
        rounding=float(rounding),
    )


def warm_up(sizes=None, ks=(1, 2, 3), dtypes=(np.float32,)) -> int:
    """Compile (or load from the persistent compilation cache) every program that `posterior`
    and `em` (hence `bic_table`, `loo_table`) need for data of the given sizes and K.

    Args:
        sizes: data sizes; each stands for its bucket (`gmmcourse.shapes.bucket_size`).
            Default: the small-data buckets `gmmcourse.shapes.N_BUCKETS`.
        ks: numbers of components for `posterior` (EM compiles once for K <= K_PAD).
        dtypes: `posterior` dtypes (float32 is the default one).

    Returns:
        The number of `posterior` calls made (one short run per size, K and dtype).
    """
    sizes = N_BUCKETS if sizes is None else sizes
    calls = 0
    for size in sorted({bucket_size(s) for s in sizes}):
        x = np.linspace(-1.0, 1.0, size)
        for k in ks:
            if k > min(size, MAX_K_RELABEL):
                continue
            for dtype in dtypes:
                posterior(x, k, num_chains=1, num_samples=1, num_warmup=0, dtype=dtype)
                calls += 1
        em(x, min(size, K_PAD), restarts=1, max_iter=1)  # bic_table's program: every K <= K_PAD
    return calls
