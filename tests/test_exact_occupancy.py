"""`enumerate_exact(..., occupancy=True)`: P(j components occupied | x)."""

import numpy as np
import pytest

from gmmcourse import GMMPrior
from gmmcourse.exact import enumerate_exact

X = np.array([-2.1, -1.7, -2.5, 1.9, 2.4, 2.0, 0.3])


@pytest.mark.parametrize("anchor", [None, 0, 6])
def test_occupancy_obeys_the_labelling_count(anchor):
    """A grouping into two groups has 3*2 labelled versions under K = 3 and 2 under K = 2,
    each with Dirichlet(1) prior (K-1)! prod n_j! / (N+K-1)!: so the two-group part of
    p(x | K = 3) is exactly 3 * 2/(N+2) times the two-group part of p(x | K = 2)."""
    n = X.size
    two = enumerate_exact(X, GMMPrior.exchangeable(2, 0.0, 3.0), anchor=anchor, occupancy=True)
    three = enumerate_exact(X, GMMPrior.exchangeable(3, 0.0, 3.0), anchor=anchor, occupancy=True)
    assert two.occupied.shape == (3,) and three.occupied.shape == (4,)
    assert two.occupied.sum() == pytest.approx(1.0, abs=1e-12) and three.occupied.sum() == pytest.approx(1.0, abs=1e-12)
    assert two.occupied[0] == 0 and three.occupied[0] == 0
    ratio = np.exp(three.log_evidence - two.log_evidence) * three.occupied[2] / two.occupied[2]
    assert ratio == pytest.approx(6 / (n + 2), rel=1e-9)
    # one occupied component: the same single-block term, (K-1)! N! / (N+K-1)! of its prior
    ratio1 = np.exp(three.log_evidence - two.log_evidence) * three.occupied[1] / two.occupied[1]
    assert ratio1 == pytest.approx(3 * 2 / (n + 2) / 2, rel=1e-9)
