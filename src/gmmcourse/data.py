"""The course's data sets (the seed chapter's, and Old Faithful's eruptions) and a simulator for
synthetic mixtures."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.validation import check_params, check_positive_int

__all__ = ["BENTO_WEIGHTS", "COFFEE_CAFFEINE", "BENTO_TRUE", "FAITHFUL_ERUPTIONS",
           "MixtureParams", "simulate_mixture"]


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

FAITHFUL_ERUPTIONS = np.array(
    [
        3.6, 1.8, 3.333, 2.283, 4.533, 2.883, 4.7, 3.6, 1.95, 4.35, 1.833, 3.917,
        4.2, 1.75, 4.7, 2.167, 1.75, 4.8, 1.6, 4.25, 1.8, 1.75, 3.45, 3.067,
        4.533, 3.6, 1.967, 4.083, 3.85, 4.433, 4.3, 4.467, 3.367, 4.033, 3.833, 2.017,
        1.867, 4.833, 1.833, 4.783, 4.35, 1.883, 4.567, 1.75, 4.533, 3.317, 3.833, 2.1,
        4.633, 2.0, 4.8, 4.716, 1.833, 4.833, 1.733, 4.883, 3.717, 1.667, 4.567, 4.317,
        2.233, 4.5, 1.75, 4.8, 1.817, 4.4, 4.167, 4.7, 2.067, 4.7, 4.033, 1.967,
        4.5, 4.0, 1.983, 5.067, 2.017, 4.567, 3.883, 3.6, 4.133, 4.333, 4.1, 2.633,
        4.067, 4.933, 3.95, 4.517, 2.167, 4.0, 2.2, 4.333, 1.867, 4.817, 1.833, 4.3,
        4.667, 3.75, 1.867, 4.9, 2.483, 4.367, 2.1, 4.5, 4.05, 1.867, 4.7, 1.783,
        4.85, 3.683, 4.733, 2.3, 4.9, 4.417, 1.7, 4.633, 2.317, 4.6, 1.817, 4.417,
        2.617, 4.067, 4.25, 1.967, 4.6, 3.767, 1.917, 4.5, 2.267, 4.65, 1.867, 4.167,
        2.8, 4.333, 1.833, 4.383, 1.883, 4.933, 2.033, 3.733, 4.233, 2.233, 4.533, 4.817,
        4.333, 1.983, 4.633, 2.017, 5.1, 1.8, 5.033, 4.0, 2.4, 4.6, 3.567, 4.0,
        4.5, 4.083, 1.8, 3.967, 2.2, 4.15, 2.0, 3.833, 3.5, 4.583, 2.367, 5.0,
        1.933, 4.617, 1.917, 2.083, 4.583, 3.333, 4.167, 4.333, 4.5, 2.417, 4.0, 4.167,
        1.883, 4.583, 4.25, 3.767, 2.033, 4.433, 4.083, 1.833, 4.417, 2.183, 4.8, 1.833,
        4.8, 4.1, 3.966, 4.233, 3.5, 4.366, 2.25, 4.667, 2.1, 4.35, 4.133, 1.867,
        4.6, 1.783, 4.367, 3.85, 1.933, 4.5, 2.383, 4.7, 1.867, 3.833, 3.417, 4.233,
        2.4, 4.8, 2.0, 4.15, 1.867, 4.267, 1.75, 4.483, 4.0, 4.117, 4.083, 4.267,
        3.917, 4.55, 4.083, 2.417, 4.183, 2.217, 4.45, 1.883, 1.85, 4.283, 3.95, 2.333,
        4.15, 2.35, 4.933, 2.9, 4.583, 3.833, 2.083, 4.367, 2.133, 4.35, 2.2, 4.45,
        3.567, 4.5, 4.15, 3.817, 3.917, 4.45, 2.0, 4.283, 4.767, 4.533, 1.85, 4.25,
        1.983, 2.25, 4.75, 4.117, 2.15, 4.417, 1.817, 4.467,
    ],
    dtype=np.float64,
)
"""Durations (minutes) of 272 eruptions of the Old Faithful geyser, Yellowstone, in the order
recorded: R's `datasets::faithful$eruptions` {Azzalini and Bowman 1990; Haerdle 1991}.
Typed from two independent copies of R's data set that agree value for value (the Rdatasets
CSV and another repository's listing); a few durations were recorded to the nearest minute
(the values 2.0, 4.0, ...)."""
FAITHFUL_ERUPTIONS.flags.writeable = False

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
