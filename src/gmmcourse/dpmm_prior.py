"""The DP mixture's hyper-parameters and its conjugate cluster prior in closed form.

Each cluster has ``sigma^2 ~ InverseGamma(a0, b0)`` and ``mu | sigma^2 ~ Normal(m0, sigma^2 / k0)``
(`DPPrior`), so a cluster's parameters integrate out exactly: `nig_posterior` gives their
Normal-Inverse-Gamma posterior from the cluster's count, sum and sum of squares, and
`log_marginal` the cluster's log p(x_c). Both broadcast and work on NumPy or JAX arrays: the
exact enumeration (`gmmcourse.dpmm_exact`) and the compiled sweeps (`gmmcourse.dpmm_sweeps`)
share them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from scipy.special import gammaln as np_gammaln

__all__ = ["DPPrior", "nig_posterior", "log_marginal"]


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
