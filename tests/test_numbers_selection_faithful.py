"""Glued numbers of the Old Faithful and EM-and-selection chapters against independent
computations (issue 26): the tied-duration model, the heaping counts, the occupied-component
posterior of ten cups, the textbook EM, the full-data evidence, and every Monte Carlo
number's MCSE.

Reads the executed chapters' glue (`conftest.glued`: `_build/jupyter_execute/chapters/`, written
by `make book`, or the folder GMMCOURSE_EXECUTED names).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import gammaln, logsumexp

from conftest import MC_Z, glued

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.book  # make test runs these after the book build


def source(page: str) -> str:
    return (ROOT / "chapters" / f"{page}.md").read_text()


# ---------------------------------------------------------------- Old Faithful


def test_old_faithful_ties_and_improper_plain_model():
    """The tie counts from the data; the eight equal values' evidence is infinite under the
    plain model and finite with the recording's resolution (checked by direct quadrature)."""
    from gmmcourse.data import FAITHFUL_ERUPTIONS as x

    g = glued("old_faithful")
    values, counts = np.unique(x, return_counts=True)
    assert g["old_faithful_n_tied3"] == np.sum(counts >= 3) == 35
    assert g["old_faithful_max_tie"] == counts.max() == 8
    assert g["old_faithful_ev_plain"] == np.inf
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
    assert g["old_faithful_ev_rounded"] == pytest.approx(np.log(val), abs=1e-5)


def test_old_faithful_heaping_counts():
    from gmmcourse.data import FAITHFUL_ERUPTIONS as x

    g = glued("old_faithful")
    sec = np.round(x * 60).astype(int)
    assert g["old_faithful_heap_n_45"] == np.sum(sec == 270) == 8
    assert g["old_faithful_heap_n_40"] == np.sum(sec == 240)
    half = int(np.sum((sec % 30 == 0) & (sec % 60 != 0)))
    whole = int(np.sum(sec % 60 == 0))
    assert g["old_faithful_heap_half_obs"] == half and g["old_faithful_heap_whole_obs"] == whole
    # the predicted counts are near those of EM's fit (an independent density): within 10 %
    from gmmcourse.em import em

    fit = em(x, 2)
    grid = np.arange(sec.min() - 30, sec.max() + 31)
    p = np.sum(fit.weights * stats.norm.pdf(grid[:, None] / 60, fit.means, fit.sds), -1)
    p /= p.sum()
    half_em = x.size * p[(grid % 30 == 0) & (grid % 60 != 0)].sum()
    assert g["old_faithful_heap_half_exp"] == pytest.approx(half_em, rel=0.1)
    assert g["old_faithful_heap_half_p"] == pytest.approx(
        stats.poisson.sf(half - 1, g["old_faithful_heap_half_exp"]), rel=1e-9)
    assert g["old_faithful_heap_half_p"] < 0.01  # heaped at the half minutes, as the page says
    # the unsupported claim is gone: 2.0 is not heaped beyond chance
    assert "nearest minute" not in source("old_faithful")


def test_old_faithful_monte_carlo_numbers_carry_mcse():
    g = glued("old_faithful")
    for key in ("sd_short_lo", "sd_short_hi", "pred_share", "p_a", "p_b", "ratio_a", "ratio_b",
                "expected_errors", "p_sd_large", "co_ab", "co_a_short", "co_blocks_min"):
        assert f"old_faithful_{key}_mcse" in g, key
        assert 0 < g[f"old_faithful_{key}_mcse"] < 0.05, key
    # the ratio's MCSE is the probability's over EM's fixed responsibility
    assert g["old_faithful_ratio_a_mcse"] == pytest.approx(
        g["old_faithful_p_a_mcse"] / g["old_faithful_r_a"], rel=1e-9)
    # the hard exercise: the co-clustering entry exceeds the product of the marginals
    p_a, p_b = g["old_faithful_p_a"], g["old_faithful_p_b"]
    indep = p_a * p_b + (1 - p_a) * (1 - p_b)
    assert g["old_faithful_ex3_indep"] == pytest.approx(indep, rel=1e-12)
    assert g["old_faithful_co_ab"] > indep + MC_Z * g["old_faithful_co_ab_mcse"]


def test_old_faithful_uses_the_rounding_model():
    text = source("old_faithful")
    assert "rounding=RESOLUTION" in text and "RESOLUTION = 1 / 60" in text


# ---------------------------------------------------------------- both pages


@pytest.mark.parametrize("page", ["old_faithful", "em_and_selection"])
def test_glue_is_hidden_and_exercises_exist(page):
    """Every code cell that imports or calls glue is a remove-cell (code shown on the page
    runs outside the book); the page ends with easy/medium/hard self-check exercises, each
    with a collapsed solution."""
    import re

    text = source(page)
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)```", text, flags=re.S)
    assert cells
    for cell in cells:
        if re.search(r"\bglue(_all)?\(", cell) or "myst_nb" in cell or "gmmcourse.book" in cell:
            assert ":tags: [remove-cell]" in cell.split("\n\n")[0], cell[:200]
    tail = text[text.index("## Self-check exercises"):]
    for level in ("Easy", "Medium", "Hard"):
        assert f"```{{exercise}} {level}:" in tail
    assert tail.count(":::{dropdown} Solution") == 3


# ---------------------------------------------------------------- EM and selection

CUPS_PRIOR = dict(loc=125.0, scale=37.5)


def _block_log_marginal(pts, loc, scale):
    """log of the integral over (mean, sd) of the Normal(loc, scale) x Gamma(2, 1) prior
    times the likelihood of `pts`: the mean analytically, the sd by adaptive quadrature."""
    m, xbar = pts.size, pts.mean()
    ss = float(np.sum((pts - xbar) ** 2))

    def f(sd):
        v = sd**2
        return (stats.gamma.pdf(sd, 2.0) * (2 * np.pi * v) ** (-(m - 1) / 2) / np.sqrt(m)
                * np.exp(-ss / (2 * v)) * stats.norm.pdf(xbar, loc, np.sqrt(scale**2 + v / m)))

    # scaled to avoid under/overflow: the integrand's log at its peak region
    val = sum(integrate.quad(f, lo, hi, limit=200, epsabs=0)[0]
              for lo, hi in ((1e-6, 1), (1, 10), (10, 100), (100, 2000)))
    return float(np.log(val))


def _partitions(n, kmax):
    """Set partitions of range(n) into at most kmax blocks, as restricted growth strings."""
    def rec(prefix, top):
        if len(prefix) == n:
            yield tuple(prefix)
            return
        for b in range(min(top + 2, kmax)):
            yield from rec(prefix + [b], max(top, b))
    yield from rec([0], 0)


def _all_blocks_log_marginal(x, loc, scale):
    """`_block_log_marginal` for every non-empty subset of `x` at once (index: bit mask),
    by the trapezoid rule on a fine grid of log sd (the integrand is smooth in log sd)."""
    n = x.size
    masks = np.arange(1, 2**n)
    member = (masks[:, None] >> np.arange(n)[None, :]) & 1  # (S, N)
    m = member.sum(1).astype(float)
    xbar = member @ x / m
    ss = member @ x**2 - m * xbar**2
    u = np.linspace(np.log(1e-4), np.log(5000.0), 8001)
    sd = np.exp(u)[None, :]
    v = sd**2
    log_f = (stats.gamma.logpdf(sd, 2.0) + u[None, :]  # d sd = sd du
             - (m[:, None] - 1) / 2 * np.log(2 * np.pi * v) - 0.5 * np.log(m[:, None])
             - np.maximum(ss[:, None], 0.0) / (2 * v)
             + stats.norm.logpdf(xbar[:, None], loc, np.sqrt(scale**2 + v / m[:, None])))
    w = np.full(u.size, u[1] - u[0])
    w[[0, -1]] /= 2
    out = np.full(2**n, -np.inf)
    out[masks] = logsumexp(log_f + np.log(w)[None, :], axis=1)
    return out


@lru_cache(maxsize=1)
def cups_by_partitions():
    """log p(x, j occupied | K) for the first ten cups, K = 1..4, j = 1..4, summed over set
    partitions (no labelled enumeration, no package code)."""
    from gmmcourse.data import COFFEE_CAFFEINE

    cups = np.asarray(COFFEE_CAFFEINE[:10], float)
    n = cups.size
    block = _all_blocks_log_marginal(cups, **CUPS_PRIOR)
    terms = {(k, j): [] for k in range(1, 5) for j in range(1, 5)}
    bits = 1 << np.arange(n)
    for rgs in _partitions(n, 4):
        labels = np.array(rgs)
        b = labels.max() + 1
        onehot = labels[None, :] == np.arange(b)[:, None]
        lm = block[onehot @ bits].sum()
        sizes = onehot.sum(1)
        for k in range(b, 5):
            # K!/(K-b)! labelled versions, each with Dirichlet(1) prior (K-1)! prod n_j! / (N+K-1)!
            log_w = (gammaln(k + 1) - gammaln(k - b + 1) + gammaln(k) - gammaln(n + k)
                     + np.sum(gammaln(sizes + 1)))
            terms[(k, b)].append(log_w + lm)
    return {key: (logsumexp(v) if v else -np.inf) for key, v in terms.items()}


def test_occupied_components_of_ten_cups_against_partitions():
    g = glued("em_and_selection")
    t = cups_by_partitions()
    log_ev = np.array([logsumexp([t[(k, j)] for j in range(1, 5)]) for k in range(1, 5)])
    occ = {k: np.array([np.exp(t[(k, j)] - log_ev[k - 1]) for j in range(1, 5)]) for k in range(1, 5)}
    p_k = np.exp(log_ev - log_ev.max())
    p_k /= p_k.sum()
    assert g["em_and_selection_pk3"] == pytest.approx(p_k[2], abs=1e-6)
    assert g["em_and_selection_pk4"] == pytest.approx(p_k[3], abs=1e-6)
    assert g["em_and_selection_occ4_k4"] == pytest.approx(occ[4][3], abs=1e-6)
    assert g["em_and_selection_occ3_k4"] == pytest.approx(occ[4][2], abs=1e-6)
    marginal = sum(p_k[k - 1] * occ[k] for k in range(1, 5))
    assert g["em_and_selection_occ3"] == pytest.approx(marginal[2], abs=1e-6)
    assert g["em_and_selection_occ4"] == pytest.approx(marginal[3], abs=1e-6)
    assert g["em_and_selection_occ_ratio"] == pytest.approx(12 / 13, abs=1e-6)
    assert 0.30 < occ[4][3] < 0.32  # the 31 %


def test_textbook_em_matches_the_package():
    from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
    from gmmcourse.em import em

    g = glued("em_and_selection")
    for name, data, k in (("bentos", BENTO_WEIGHTS, 2), ("coffee", COFFEE_CAFFEINE, 3)):
        assert g[f"em_and_selection_textbook_diff_{name}"] < 1e-4
        assert g[f"em_and_selection_textbook_ll_{name}"] == pytest.approx(em(data, k).log_likelihood, abs=1e-6)
    assert "def textbook_em(" in source("em_and_selection")
    assert ":::{dropdown} The package's fast version" in source("em_and_selection")


def test_full_data_evidence_and_posterior_over_k():
    from gmmcourse.data import BENTO_WEIGHTS as xb, COFFEE_CAFFEINE as xc

    g = glued("em_and_selection")
    # K = 1: one block, by quadrature (independent of the package's grid)
    assert g["em_and_selection_full_b_exact_1"] == pytest.approx(_block_log_marginal(xb, 400.0, 50.0), abs=1e-5)
    assert g["em_and_selection_full_c_exact_1"] == pytest.approx(_block_log_marginal(xc, 125.0, 37.5), abs=1e-5)
    # K = 2: at least the hamburger/tonkatsu grouping's share (both labellings), and within a nat of it
    light, heavy = xb[xb < 440], xb[xb >= 440]
    split = (np.log(2) + gammaln(2) - gammaln(xb.size + 2) + gammaln(light.size + 1) + gammaln(heavy.size + 1)
             + _block_log_marginal(light, 400.0, 50.0) + _block_log_marginal(heavy, 400.0, 50.0))
    exact2 = g["em_and_selection_full_b_exact_2"]
    assert split - 1e-6 <= exact2 <= split + 1.0
    # what the page says of the estimators
    assert abs(g["em_and_selection_full_b_z_1"]) < MC_Z and abs(g["em_and_selection_full_c_z_1"]) < MC_Z
    assert g["em_and_selection_full_b_z_2"] > 2.0  # SMC short on the full bentos: the page says so
    assert g["em_and_selection_full_b_runs_hi_2"] < exact2  # "every one of its eight runs falls below"
    assert g["em_and_selection_full_b_is_short_1"] > 1 and g["em_and_selection_full_b_is_short_2"] > 1
    assert g["em_and_selection_full_c_k2_gap"] > 10 * g["em_and_selection_full_c_k2_gap_se"]
    for name in ("b", "c"):
        total = sum(g[f"em_and_selection_full_{name}_pk_{k}"] for k in range(1, 5))
        assert total == pytest.approx(1.0, abs=1e-9)
        for k in range(1, 5):
            assert f"em_and_selection_full_{name}_pk_se_{k}" in g


def test_coffee_three_component_posterior():
    g = glued("em_and_selection")
    for k, centre in enumerate([81.0, 118.6, 156.9]):  # tests/test_exact_and_gibbs.py::test_coffee_posterior
        assert g[f"em_and_selection_c3_mean_{k}"] == pytest.approx(centre, abs=0.5)
        assert 0 < g[f"em_and_selection_c3_mean_mcse_{k}"] < 0.5
        assert 0 < g[f"em_and_selection_c3_sd_mcse_{k}"] < 0.5
    assert g["em_and_selection_c3_rhat"] < 1.01


def test_em_selection_monte_carlo_numbers_carry_mcse():
    g = glued("em_and_selection")
    for key in ("w_lo_mcse", "w_hi_mcse", "k1_sd_post_mcse", "sd_t_mc_mcse"):
        assert 0 < g[f"em_and_selection_{key}"] < 1, key
    text = source("em_and_selection")
    assert '"MCSE": float(az.mcse(' in text and '"MCSE[0]"' in text and '"IS se (its own)"' in text


def test_em_selection_self_check_numbers():
    from gmmcourse.data import COFFEE_CAFFEINE
    from gmmcourse.em import em

    g = glued("em_and_selection")
    assert g["em_and_selection_ex1_30"] == pytest.approx(12 / 33)
    # equal starting means: the one-component fit, written three times
    assert g["em_and_selection_ex2_ll"] == pytest.approx(em(COFFEE_CAFFEINE, 1).log_likelihood, abs=1e-3)
    # a sparse Dirichlet favours fewer occupied components than the uniform one
    assert g["em_and_selection_ex3_occ4"] < g["em_and_selection_occ4_k4"]
