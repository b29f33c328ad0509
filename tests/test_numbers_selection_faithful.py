"""Glued numbers of the Old Faithful and EM-and-selection chapters against independent
computations (issue 26): the tied-duration model, the heaping counts, the occupied-component
posterior of ten cups, the textbook EM, the full-data evidence, and every Monte Carlo
number's MCSE.

Reads the executed notebooks in `GMMCOURSE_EXECUTED` (default
`_build/jupyter_execute/chapters`, written by `make book`).
"""

from __future__ import annotations

import itertools
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import gammaln, logsumexp

from conftest import MC_Z

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = Path(os.environ.get("GMMCOURSE_EXECUTED", ROOT / "_build" / "jupyter_execute" / "chapters"))

pytestmark = [pytest.mark.book,
              pytest.mark.skipif(not EXECUTED.exists(), reason="build the book first (`make book`)")]


def glued(page: str) -> dict:
    data = json.loads((EXECUTED / f"{page}.glue.json").read_text())
    out = {}
    for name, value in data.items():
        text = value.get("data", {}).get("text/plain", "")
        out[name] = "".join(text) if isinstance(text, list) else text
    return out


def num(values: dict, key: str) -> float:
    return float(values[key].strip("'\""))


def source(page: str) -> str:
    return (ROOT / "chapters" / f"{page}.md").read_text()


# ---------------------------------------------------------------- Old Faithful


def test_old_faithful_ties_and_improper_plain_model():
    """The tie counts from the data; the eight equal values' evidence is infinite under the
    plain model and finite with the recording's resolution (checked by direct quadrature)."""
    from gmmcourse.data import FAITHFUL_ERUPTIONS as x

    g = glued("old_faithful")
    values, counts = np.unique(x, return_counts=True)
    assert num(g, "old_faithful_n_tied3") == np.sum(counts >= 3) == 35
    assert num(g, "old_faithful_max_tie") == counts.max() == 8
    assert g["old_faithful_ev_plain"].strip("'\"") == "inf"
    # independent: integrate the eight 4.5s' evidence over (mean, sd) under the page's prior,
    # with the rounding variance (1 s)^2 / 12
    eights = x[x == 4.5]
    m, loc, scale, c = eights.size, float(np.mean(x)), 2 * float(np.std(x)), (1 / 60) ** 2 / 12

    def given_sd(sd):  # the mean integrated analytically: N(xbar; loc, tau^2 + v/m) * rest
        v = sd**2 + c
        ss = np.sum((eights - eights.mean()) ** 2)
        return (stats.gamma.pdf(sd, 2.0) * (2 * np.pi * v) ** (-(m - 1) / 2) / np.sqrt(m)
                * np.exp(-ss / (2 * v)) * stats.norm.pdf(eights.mean(), loc, np.sqrt(scale**2 + v / m)))

    val = sum(integrate.quad(given_sd, lo, hi, limit=200)[0]
              for lo, hi in ((0, 1e-3), (1e-3, 1e-2), (1e-2, 1), (1, 60)))
    assert num(g, "old_faithful_ev_rounded") == pytest.approx(np.log(val), abs=1e-5)


def test_old_faithful_heaping_counts():
    from gmmcourse.data import FAITHFUL_ERUPTIONS as x

    g = glued("old_faithful")
    sec = np.round(x * 60).astype(int)
    assert num(g, "old_faithful_heap_n_45") == np.sum(sec == 270) == 8
    assert num(g, "old_faithful_heap_n_40") == np.sum(sec == 240)
    half = int(np.sum((sec % 30 == 0) & (sec % 60 != 0)))
    whole = int(np.sum(sec % 60 == 0))
    assert num(g, "old_faithful_heap_half_obs") == half and num(g, "old_faithful_heap_whole_obs") == whole
    # the predicted counts are near those of EM's fit (an independent density): within 10 %
    from gmmcourse.em import em

    fit = em(x, 2)
    grid = np.arange(sec.min() - 30, sec.max() + 31)
    p = np.sum(fit.weights * stats.norm.pdf(grid[:, None] / 60, fit.means, fit.sds), -1)
    p /= p.sum()
    half_em = x.size * p[(grid % 30 == 0) & (grid % 60 != 0)].sum()
    assert num(g, "old_faithful_heap_half_exp") == pytest.approx(half_em, rel=0.1)
    assert num(g, "old_faithful_heap_half_p") == pytest.approx(
        stats.poisson.sf(half - 1, num(g, "old_faithful_heap_half_exp")), rel=1e-9)
    assert num(g, "old_faithful_heap_half_p") < 0.01  # heaped at the half minutes, as the page says
    # the unsupported claim is gone: 2.0 is not heaped beyond chance
    assert "nearest minute" not in source("old_faithful")


def test_old_faithful_monte_carlo_numbers_carry_mcse():
    g = glued("old_faithful")
    for key in ("sd_short_lo", "sd_short_hi", "pred_share", "p_a", "p_b", "ratio_a", "ratio_b",
                "expected_errors", "p_sd_large", "co_ab", "co_a_short", "co_blocks_min"):
        assert f"old_faithful_{key}_mcse" in g, key
        assert 0 < num(g, f"old_faithful_{key}_mcse") < 0.05, key
    # the ratio's MCSE is the probability's over EM's fixed responsibility
    assert num(g, "old_faithful_ratio_a_mcse") == pytest.approx(
        num(g, "old_faithful_p_a_mcse") / num(g, "old_faithful_r_a"), rel=1e-9)
    # the hard exercise: the co-clustering entry exceeds the product of the marginals
    p_a, p_b = num(g, "old_faithful_p_a"), num(g, "old_faithful_p_b")
    indep = p_a * p_b + (1 - p_a) * (1 - p_b)
    assert num(g, "old_faithful_ex3_indep") == pytest.approx(indep, rel=1e-12)
    assert num(g, "old_faithful_co_ab") > indep + MC_Z * num(g, "old_faithful_co_ab_mcse")


def test_old_faithful_uses_the_rounding_model():
    text = source("old_faithful")
    assert "rounding=RESOLUTION" in text and "RESOLUTION = 1 / 60" in text
