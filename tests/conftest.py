"""Shared fixtures and tolerances for the test suite."""

import os

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))

import numpy as np
import pytest

# z-score for Monte Carlo tolerances: with a few hundred comparisons in the suite, a
# correct sampler fails a 4.5-sigma check with probability ~1e-5 per comparison.
MC_Z = 4.5


def mc_close(estimate, truth, se, z=MC_Z, floor=0.0):
    """Assert |estimate - truth| <= z * se + floor elementwise, with a helpful message."""
    estimate, truth, se = (np.asarray(a, dtype=float) for a in (estimate, truth, se))
    bound = z * se + floor
    err = np.abs(estimate - truth)
    assert np.all(err <= bound), f"estimate {estimate} vs truth {truth}: error {err} exceeds {bound}"


@pytest.fixture
def _bwrap():
    """Tests marked ``grading_helpers.needs_bwrap`` fail with this line (never skip) without bubblewrap."""
    import shutil

    assert shutil.which("bwrap"), "bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap"


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
