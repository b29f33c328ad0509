"""Reference inference for 1-D Gaussian mixture models, written with GenJAX on JAX.

The book, the exercises' hidden tests and the benchmarks of gmm-course all import this
package; it is the single source of truth for every number the course shows.
"""

from gmmcourse.categorize import categorize
from gmmcourse.data import BENTO_TRUE, BENTO_WEIGHTS, COFFEE_CAFFEINE, MixtureParams, simulate_mixture
from gmmcourse.em import EMResult, em
from gmmcourse.gibbs import Posterior, posterior
from gmmcourse.importance import ISResult, importance_sampling
from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR, GMMPrior, bento_model, gmm, mixture_point
from gmmcourse.selection import bic_table, loo_table

__all__ = [
    "BENTO_PRIOR",
    "BENTO_TRUE",
    "BENTO_WEIGHTS",
    "COFFEE_CAFFEINE",
    "COFFEE_PRIOR",
    "EMResult",
    "GMMPrior",
    "ISResult",
    "MixtureParams",
    "Posterior",
    "bento_model",
    "bic_table",
    "categorize",
    "em",
    "gmm",
    "importance_sampling",
    "loo_table",
    "mixture_point",
    "posterior",
    "simulate_mixture",
]

__version__ = "0.1.0"
