"""The course's generative models, written as GenJAX generative functions.

Addresses (what `simulate` records, what `generate`/`assess` accept):

* `mixture_point(weights, means, sds)`: ``"z"`` (int component), ``"x"`` (float observation).
* `bento_model(n)`: ``"bentos"`` holding ``{"z": (n,), "x": (n,)}``, with the shop's known recipe.
* `gmm(n, prior)`: ``"weights"`` (K,), ``"means"`` (K,), ``"sds"`` (K,) and ``"points"`` holding
  ``{"z": (N,), "x": (N,)}``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from genjax import Const, categorical, dirichlet, gamma, gen, normal

from gmmcourse.data import BENTO_TRUE

__all__ = [
    "GMMPrior",
    "BENTO_PRIOR",
    "COFFEE_PRIOR",
    "mixture_point",
    "bento_model",
    "gmm",
    "gmm_choices",
    "mixture_choices",
    "gmm_params",
    "observations",
]


class GMMPrior(NamedTuple):
    """Hyper-parameters of the Bayesian GMM (the seed chapter's priors).

    weights ~ Dirichlet(concentration * 1_K); means_k ~ Normal(mean_loc[k], mean_scale);
    sds_k ~ Gamma(shape=sd_shape, rate=sd_rate). The number of components K is
    ``len(mean_loc)``.
    """

    mean_loc: jnp.ndarray
    mean_scale: float
    sd_shape: float = 2.0
    sd_rate: float = 1.0
    concentration: float = 1.0

    @property
    def k(self) -> int:
        """Number of components."""
        return int(np.shape(self.mean_loc)[0])

    @classmethod
    def exchangeable(cls, k: int, loc: float, scale: float, **kwargs) -> "GMMPrior":
        """The same prior for every one of `k` components."""
        from gmmcourse.validation import check_positive_int

        k = check_positive_int(k, "k")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        return cls(jnp.full((k,), float(loc)), float(scale), **kwargs)


def bento_prior(k: int = 2) -> GMMPrior:
    """The seed's priors for the bentos with `k` components: means ~ Normal(400, 50),
    sds ~ Gamma(2, 1), weights ~ Dirichlet(1, ..., 1). Chapters, tests and benchmarks take
    the numbers from here, never retyped."""
    return GMMPrior.exchangeable(k, loc=400.0, scale=50.0)


def coffee_prior(k: int = 3) -> GMMPrior:
    """Priors for the coffee blends with `k` components: caffeine lies in 50-200 mg, so each
    mean ~ Normal(125, 37.5) (the range is the mean plus or minus two prior sds); sds ~
    Gamma(2, 1), weights ~ Dirichlet(1, ..., 1)."""
    return GMMPrior.exchangeable(k, loc=125.0, scale=37.5)


BENTO_PRIOR = bento_prior(2)
"""`bento_prior(2)`: the two-component bento model of the seed."""

COFFEE_PRIOR = coffee_prior(3)
"""`coffee_prior(3)`: the three coffee blends."""


@gen
def mixture_point(weights, means, sds):
    """One observation of a Gaussian mixture: pick a component, then draw from it."""
    z = categorical(jnp.log(weights)) @ "z"
    x = normal(means[z], sds[z]) @ "x"
    return x


@gen
def bento_model(n: Const[int]):
    """`n` bentos from the shop's known recipe (`gmmcourse.data.BENTO_TRUE`)."""
    weights = jnp.asarray(BENTO_TRUE.weights)
    means = jnp.asarray(BENTO_TRUE.means)
    sds = jnp.asarray(BENTO_TRUE.sds)
    return mixture_point.repeat(n.value)(weights, means, sds) @ "bentos"


@gen
def gmm(n: Const[int], prior: GMMPrior):
    """Bayesian Gaussian mixture over `n` points with K = len(prior.mean_loc) components."""
    k = prior.mean_loc.shape[0]
    if k == 1:  # a one-component mixture has the constant weight 1 (Dirichlet needs K >= 2)
        weights = jnp.ones(1)
    else:
        weights = dirichlet(prior.concentration * jnp.ones(k)) @ "weights"
    means = normal.vmap(in_axes=(0, None), axis_size=k)(prior.mean_loc, prior.mean_scale) @ "means"
    sds = gamma.repeat(k)(prior.sd_shape, prior.sd_rate) @ "sds"
    x = mixture_point.repeat(n.value)(weights, means, sds) @ "points"
    return x


def observations(x) -> dict:
    """The choice map that constrains `gmm`'s observations to the data `x`."""
    return {"points": {"x": jnp.asarray(x)}}


def mixture_choices(params: dict, weights, k: int, z=None, x=None) -> dict:
    """A mixture model's choice map: the component parameters' choices `params`, ``"weights"``
    when `k` > 1 (a one-component mixture's weight is the constant 1, not a choice), and
    ``"points"`` holding the assignments ``"z"`` and observations ``"x"`` that are given.

    `gmm_choices` and `gmmcourse.multivariate_model.mvn_choices` build their maps with it.
    """
    choices = dict(params)
    if k > 1:
        choices["weights"] = jnp.asarray(weights)
    points = {name: jnp.asarray(v) for name, v in (("z", z), ("x", x)) if v is not None}
    if points:
        choices["points"] = points
    return choices


def gmm_choices(weights, means, sds, z=None, x=None) -> dict:
    """A choice map of `gmm` with the given parameters, and assignments/observations if given.

    For K = 1 there is no ``"weights"`` choice (the weight is the constant 1).
    """
    return mixture_choices({"means": jnp.asarray(means), "sds": jnp.asarray(sds)}, weights, jnp.shape(means)[0], z, x)


def gmm_params(choices) -> tuple:
    """(weights, means, sds) from a `gmm` choice map (weights = [1] when K = 1)."""
    means = choices["means"]
    weights = choices["weights"] if "weights" in choices else jnp.ones_like(means)
    return weights, means, choices["sds"]


def as_prior(prior: GMMPrior, dtype=None) -> GMMPrior:
    """`prior` with array-valued, dtype-consistent fields (JAX-friendly)."""
    dtype = dtype or jnp.result_type(float)
    return GMMPrior(
        jnp.asarray(prior.mean_loc, dtype),
        jnp.asarray(prior.mean_scale, dtype),
        jnp.asarray(prior.sd_shape, dtype),
        jnp.asarray(prior.sd_rate, dtype),
        jnp.asarray(prior.concentration, dtype),
    )

