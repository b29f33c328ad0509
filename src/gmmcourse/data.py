"""The course's data sets (from the seed chapter) and a simulator for synthetic mixtures."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.validation import check_params, check_positive_int

__all__ = ["BENTO_WEIGHTS", "COFFEE_CAFFEINE", "BENTO_TRUE", "MixtureParams", "simulate_mixture"]


class MixtureParams(NamedTuple):
    """Parameters of a 1-D Gaussian mixture with K components.

    Attributes:
        weights: mixing proportions, shape (K,), non-negative, summing to 1.
        means: component means, shape (K,).
        sds: component standard deviations, shape (K,), positive.
    """

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray


BENTO_WEIGHTS = np.array(
    [498, 352, 501, 349, 497, 503, 351, 500, 348, 502,
     499, 350, 498, 353, 501, 347, 499, 502, 352, 500],
    dtype=np.float64,
)
"""Weights (grams) of Chibany's 20 mystery bentos: 12 near 500 g (tonkatsu), 8 near 350 g
(hamburger)."""
BENTO_WEIGHTS.flags.writeable = False

COFFEE_CAFFEINE = np.array(
    [82, 118, 155, 80, 120, 158, 79, 115, 160, 83, 121, 157,
     81, 119, 156, 84, 117, 159, 78, 122, 154, 82, 116, 158,
     80, 120, 155, 81, 118, 157],
    dtype=np.float64,
)
"""Caffeine (mg per cup) of 30 cups from a café with three blends (the seed's Problem 1)."""
COFFEE_CAFFEINE.flags.writeable = False

BENTO_TRUE = MixtureParams(
    weights=np.array([0.7, 0.3]),
    means=np.array([500.0, 350.0]),
    sds=np.array([2.0, 2.0]),
)
"""The bento shop's recipe: 70 % tonkatsu (500 g, sd 2 g), 30 % hamburger (350 g, sd 2 g)."""


def simulate_mixture(key: jax.Array, n: int, weights, means, sds) -> tuple[jax.Array, jax.Array]:
    """Draw `n` points from a 1-D Gaussian mixture (plain JAX, any size).

    Args:
        key: a JAX PRNG key.
        n: number of points (positive int).
        weights, means, sds: mixture parameters, each shape (K,).

    Returns:
        ``(x, z)``: observations, shape (n,), and their component labels, shape (n,).
    """
    n = check_positive_int(n, "n")
    weights, means, sds = check_params(weights, means, sds)
    kz, kx = jax.random.split(key)
    z = jax.random.categorical(kz, jnp.log(jnp.asarray(weights)), shape=(n,))
    x = jnp.asarray(means)[z] + jnp.asarray(sds)[z] * jax.random.normal(kx, (n,), dtype=jnp.asarray(means).dtype)
    return x, z
