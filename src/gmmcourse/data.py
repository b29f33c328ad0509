"""The course's data sets (the seed chapter's, Old Faithful's eruptions and waiting times, and
scikit-learn's bundled photographs) and a simulator for synthetic mixtures."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmcourse.validation import check_params, check_positive_int

__all__ = ["BENTO_WEIGHTS", "COFFEE_CAFFEINE", "BENTO_TRUE", "FAITHFUL_ERUPTIONS",
           "FAITHFUL_WAITING", "faithful", "SAMPLE_IMAGES", "sample_image", "MixtureParams", "simulate_mixture"]


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

FAITHFUL_WAITING = np.array(
    [
        79, 54, 74, 62, 85, 55, 88, 85, 51, 85, 54, 84,
        78, 47, 83, 52, 62, 84, 52, 79, 51, 47, 78, 69,
        74, 83, 55, 76, 78, 79, 73, 77, 66, 80, 74, 52,
        48, 80, 59, 90, 80, 58, 84, 58, 73, 83, 64, 53,
        82, 59, 75, 90, 54, 80, 54, 83, 71, 64, 77, 81,
        59, 84, 48, 82, 60, 92, 78, 78, 65, 73, 82, 56,
        79, 71, 62, 76, 60, 78, 76, 83, 75, 82, 70, 65,
        73, 88, 76, 80, 48, 86, 60, 90, 50, 78, 63, 72,
        84, 75, 51, 82, 62, 88, 49, 83, 81, 47, 84, 52,
        86, 81, 75, 59, 89, 79, 59, 81, 50, 85, 59, 87,
        53, 69, 77, 56, 88, 81, 45, 82, 55, 90, 45, 83,
        56, 89, 46, 82, 51, 86, 53, 79, 81, 60, 82, 77,
        76, 59, 80, 49, 96, 53, 77, 77, 65, 81, 71, 70,
        81, 93, 53, 89, 45, 86, 58, 78, 66, 76, 63, 88,
        52, 93, 49, 57, 77, 68, 81, 81, 73, 50, 85, 74,
        55, 77, 83, 83, 51, 78, 84, 46, 83, 55, 81, 57,
        76, 84, 77, 81, 87, 77, 51, 78, 60, 82, 91, 53,
        78, 46, 77, 84, 49, 83, 71, 80, 49, 75, 64, 76,
        53, 94, 55, 76, 50, 82, 54, 75, 78, 79, 78, 78,
        70, 79, 70, 54, 86, 50, 90, 54, 54, 77, 79, 64,
        75, 47, 86, 63, 85, 82, 57, 82, 67, 74, 54, 83,
        73, 73, 88, 80, 71, 83, 56, 79, 78, 84, 58, 83,
        43, 60, 75, 81, 46, 90, 46, 74,
    ],
    dtype=np.float64,
)
"""Waiting times (minutes, whole minutes) to the next eruption of the same 272 Old Faithful
eruptions as `FAITHFUL_ERUPTIONS`, in the same order: R's `datasets::faithful$waiting`
{Azzalini and Bowman 1990; Haerdle 1991}. Typed from two independent public copies of R's
data set that agree value for value with each other (and their eruption columns with
`FAITHFUL_ERUPTIONS`): the Rdatasets CSV (github.com/vincentarelbundock/Rdatasets,
``csv/datasets/faithful.csv``, commit 1dcc2bf5) and the University of Toronto Computer Science
recipes' ``faithful.csv`` (github.com/UofTCompDSci/recipes, commit 05b1b722), whose layout
differs (fixed-width, three decimals); a third copy (github.com/troescherw/datasets, commit
445eba6b, semicolon-separated) agrees too."""
FAITHFUL_WAITING.flags.writeable = False

BENTO_TRUE = MixtureParams(
    weights=np.array([0.7, 0.3]),
    means=np.array([500.0, 350.0]),
    sds=np.array([2.0, 2.0]),
)
"""The bento shop's recipe: 70 % tonkatsu (500 g, sd 2 g), 30 % hamburger (350 g, sd 2 g)."""


def faithful() -> np.ndarray:
    """Old Faithful in two dimensions, R's `faithful` data frame.

    Returns:
        A read-only float64 array of shape (272, 2): column 0 the eruption's duration
        (`FAITHFUL_ERUPTIONS`), column 1 the waiting time to the next eruption
        (`FAITHFUL_WAITING`), both in minutes, in the order recorded.
    """
    out = np.column_stack([FAITHFUL_ERUPTIONS, FAITHFUL_WAITING])
    out.flags.writeable = False
    return out


SAMPLE_IMAGES = ("china.jpg", "flower.jpg")
"""The photographs scikit-learn ships inside its wheel (`sklearn.datasets.load_sample_image`;
427 x 640 pixels, CC BY 2.0, from Flickr: a Chinese temple by danielbuechele and a flower by
vultilion, per scikit-learn's ``datasets/images/README.txt``)."""


def sample_image(name: str = "china.jpg") -> np.ndarray:
    """One of scikit-learn's bundled photographs as RGB intensities in [0, 1], read offline.

    Args:
        name: ``"china.jpg"`` or ``"flower.jpg"`` (`SAMPLE_IMAGES`).

    Returns:
        A read-only float64 array of shape (height, width, 3): the 8-bit values divided by 255.

    Raises:
        ValueError: for any other name.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name must be one of {', '.join(SAMPLE_IMAGES)}, got {name!r}")
    from sklearn.datasets import load_sample_image  # imported here: scikit-learn is slow to load

    out = np.asarray(load_sample_image(name), dtype=np.float64) / 255.0
    out.flags.writeable = False
    return out


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
