"""The course pages a student works through (intro, categorization, mixture_model,
bayesian_inference, practice): their glued numbers against an independent computation (closed
forms, scipy, `gmmcourse.exact`), exact where the package can compute them and within their
MCSE where they are Monte Carlo; no visible glue bookkeeping; figures no wider than the page;
every graded exercise linked from the chapters it builds on.

Reads the executed notebooks in `_build/jupyter_execute/chapters/`, or in the folder named by
GMMCOURSE_EXECUTED (one chapter run on its own with scripts/run_chapter.py).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.special import gammaln, logsumexp
from scipy.stats import gamma as gamma_dist
from scipy.stats import norm

from conftest import MC_Z, executed, glued

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("intro", "categorization", "mixture_model", "bayesian_inference", "practice")

pytestmark = pytest.mark.book  # make test runs these after the book build


def notebook(page: str) -> dict:
    return json.loads(executed(page, ".ipynb").read_text())


def visible_code(page: str) -> list[str]:
    """Source of the code cells a reader sees (not tagged remove-cell / remove-input)."""
    cells = []
    for cell in notebook(page)["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] == "code" and not tags & {"remove-cell", "remove-input"}:
            src = cell["source"]
            cells.append("".join(src) if isinstance(src, list) else src)
    return cells


# ------------------------------------------------------------------ every page

@pytest.mark.parametrize("page", PAGES)
def test_no_visible_glue_bookkeeping(page):
    """Code shown on a page runs when copied out of the book: no myst_nb import, no glue call."""
    for src in visible_code(page):
        assert "myst_nb" not in src and "gmmcourse.book" not in src and not re.search(r"\bglue(_all)?\(", src), \
            f"{page} shows:\n{src[:300]}"


@pytest.mark.parametrize("page", PAGES)
def test_figures_fit_the_page_width(page):
    """No figure is wider than the content column (wider ones are shrunk with their text)."""
    from gmmcourse.plotting import PAGE_WIDTH_IN, STYLE

    limit = PAGE_WIDTH_IN * STYLE["figure.dpi"] * 1.05  # tight bounding boxes add a few pixels
    for cell in notebook(page)["cells"]:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                width = struct.unpack(">I", base64.b64decode(png)[16:20])[0]  # the IHDR width
                assert width <= limit, f"{page}: a figure {width} px wide (limit {limit:.0f})"
    for cell in notebook(page)["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for size in re.findall(r"fontsize\s*=\s*(\d+)", src):
            assert int(size) >= STYLE["font.size"] - 2, f"{page}: fontsize={size}"


def test_intro_has_before_you_start_and_no_visible_code():
    text = (ROOT / "chapters" / "intro.md").read_text()
    section = text.split("## Before you start", 1)[1].split("\n## ", 1)[0]
    for part in ("**Background.**", "**What you will be able to do.**", "**Time.**", "**How to run the code.**",
                 "Python 3.12", "venv", "Colab", "set-up cell"):
        assert part in section, part
    assert visible_code("intro") == []
    assert "looks ahead" not in text


def test_every_graded_exercise_is_linked_both_ways():
    """practice.md names, for each exercise, the chapters it builds on; each of those chapters
    links back to that exercise."""
    practice = (ROOT / "chapters" / "practice.md").read_text()
    blocks = re.findall(r"```\{exercise\}.*?\n:label: (\S+)\n(.*?)```", practice, re.S)
    assert len(blocks) >= 3
    for label, body in blocks:
        builds_on = re.search(r"Builds on: (.*)", body)
        assert builds_on, f"{label} does not say which chapters it builds on"
        chapters = re.findall(r"\{ref\}`(\w+)`", builds_on.group(1))
        assert chapters, label
        for chapter in chapters:
            source = (ROOT / "chapters" / f"{chapter}.md").read_text()
            if chapter in {"categorization", "mixture_model", "bayesian_inference"}:
                assert f"{{ref}}`{label}`" in source, f"{chapter}.md does not link {label}"


@pytest.mark.parametrize("page", ["categorization", "mixture_model", "bayesian_inference"])
def test_self_check_exercises_have_three_levels_and_solutions(page):
    text = (ROOT / "chapters" / f"{page}.md").read_text()
    section = text.split("## Self-check exercises", 1)[1]
    for level in ("Easy", "Medium", "Hard"):
        assert re.search(rf"```{{exercise}} {level}:", section), f"{page}: no {level} exercise"
    assert section.count(":::{dropdown} Solution") == 3


# ------------------------------------------------------------------ mixture_model

def _modes(weights, means, sd, grid):
    """Local maxima counted from the sign changes of the analytic derivative."""
    deriv = sum(w * norm.pdf(grid, m, sd) * (m - grid) / sd**2 for w, m in zip(weights, means))
    return int(np.sum((deriv[:-1] > 0) & (deriv[1:] <= 0)))


def test_mixture_model_modality():
    g = glued("mixture_model")
    grid = np.linspace(0, 850, 170_001)
    for sd in (30, 50, 70):
        assert g[f"mixture_model_modes_sd{sd}"] == _modes([0.3, 0.7], [350, 500], sd, grid)
    top = g["mixture_model_sd_bimodal_max"]
    assert _modes([0.3, 0.7], [350, 500], top, grid) == 2
    assert _modes([0.3, 0.7], [350, 500], top + 0.1, grid) == 1


def test_mixture_model_simulation_mcse():
    g = glued("mixture_model")
    p, n = g["mixture_model_big_share"], 20_000
    assert g["mixture_model_big_share_mcse"] == pytest.approx(np.sqrt(p * (1 - p) / n), rel=1e-9)
    for key, truth in (("share", 0.7), ("mean_t", 500.0), ("sd_t", 2.0)):
        est, se = g[f"mixture_model_big_{key}"], g[f"mixture_model_big_{key}_mcse"]
        assert 0 < se and abs(est - truth) <= MC_Z * se, key
    assert g["mixture_model_big_max_z"] < 2  # the page calls this agreement up to Monte Carlo error


def test_mixture_model_genjax_calls():
    """update's log ratios and assess against scipy: both update forms agree."""
    g = glued("mixture_model")
    z = int(g["mixture_model_gen_z"])
    mu, sd = [500.0, 350.0][z], 2.0
    ratio = norm.logpdf(352.0, mu, sd) - norm.logpdf(351.0, mu, sd)
    assert g["mixture_model_update_ratio"] == pytest.approx(ratio, abs=1e-3)
    assert g["mixture_model_update_ratio2"] == g["mixture_model_update_ratio"]
    doubled = norm.logpdf(351.0, mu, 2 * sd) - norm.logpdf(351.0, mu, sd)
    assert g["mixture_model_update_ratio_args"] == pytest.approx(doubled, rel=1e-5)


def test_mixture_model_exercises():
    from gmmcourse.data import BENTO_WEIGHTS as x

    g = glued("mixture_model")
    assert g["mixture_model_ex_mean"] == pytest.approx(455.0, abs=1e-12)
    assert g["mixture_model_ex_sd"] == pytest.approx(np.sqrt(4 + 0.21 * 150**2), rel=1e-12)
    # log p(weights, means, sds, z, x) of the medium exercise, by hand in float64
    w, m, s = np.array([0.7, 0.3]), np.array([500.0, 350.0]), np.array([2.0, 2.0])
    z = (x < 425).astype(int)
    logp = (gammaln(2.0)  # Dirichlet(1, 1) density
            + norm.logpdf(m, 400.0, 50.0).sum()
            + gamma_dist.logpdf(s, 2.0, scale=1.0).sum()
            + np.sum(np.log(w[z]) + norm.logpdf(x, m[z], s[z])))
    assert g["mixture_model_ex_assess"] == pytest.approx(logp, abs=1e-3)


# ------------------------------------------------------------------ categorization

def test_categorization_exercises():
    g = glued("categorization")
    assert g["categorization_ex_boundary"] == pytest.approx(425 - np.log(9) / 37.5, abs=1e-9)
    assert g["categorization_ex_width"] == pytest.approx(2 * np.log(19) * 900 / 150, rel=1e-9)
    w = np.array([0.99 * 0.7, 0.99 * 0.3, 0.01])
    m = np.array([500.0, 350.0, 425.0])
    s = np.array([2.0, 2.0, 100.0])
    for xv, key in ((425.0, "categorization_ex_other_425"), (499.0, "categorization_ex_other_499")):
        logs = np.log(w) + norm.logpdf(xv, m, s)
        assert g[key] == pytest.approx(np.exp(logs[2] - logsumexp(logs)), rel=1e-9)


# ------------------------------------------------------------------ bayesian_inference

def test_importance_loop_and_exact_evidence():
    from gmmcourse.data import BENTO_WEIGHTS
    from gmmcourse.exact import log_evidence
    from gmmcourse.models import BENTO_PRIOR

    g = glued("bayesian_inference")
    # the page's loop is the package's: equal up to float32 rounding of sums of 20 terms (eps 1.2e-7)
    assert g["bayesian_inference_loop_rel_diff"] <= 1e-5
    exact = log_evidence(BENTO_WEIGHTS, BENTO_PRIOR)
    assert g["bayesian_inference_exact_logz"] == pytest.approx(exact, abs=1e-8)
    for p in (1_000, 10_000, 100_000):
        assert 1 <= g[f"bayesian_inference_is_ess_{p}"] < 10
        assert g[f"bayesian_inference_is_ess_mcse_{p}"] >= 0  # 0 when every run has ESS 1
        # the failure the page describes: estimates below the exact value by far more than their MCSE
        est, se = g[f"bayesian_inference_is_logz_{p}"], g[f"bayesian_inference_is_logz_mcse_{p}"]
        assert est < exact and exact - est > MC_Z * se
    assert g["bayesian_inference_is_gap_100000"] == pytest.approx(
        exact - g["bayesian_inference_is_logz_100000"], abs=1e-9)
    assert g["bayesian_inference_is_gap_z_100000"] == pytest.approx(
        g["bayesian_inference_is_gap_100000"] / g["bayesian_inference_is_logz_mcse_100000"], rel=1e-9)


def test_posterior_summaries_carry_their_mcse():
    g = glued("bayesian_inference")
    for name in ("weights", "means", "sds"):
        for comp in ("hamburger", "tonkatsu"):
            for what in ("mean", "lo", "hi"):
                se = g[f"bayesian_inference_{name}_{comp}_{what}_mcse"]
                assert 0 < se < np.inf, (name, comp, what)
    # the tonkatsu share is Beta(13, 9) given the (certain) assignments: its mean within MCSE
    a, b = g["bayesian_inference_beta_a"], g["bayesian_inference_beta_b"]
    est, se = g["bayesian_inference_weights_tonkatsu_mean"], g["bayesian_inference_weights_tonkatsu_mean_mcse"]
    assert abs(est - a / (a + b)) <= MC_Z * se
    assert 0 < g["bayesian_inference_switched_k3_mcse"] < g["bayesian_inference_switched_k3"]
    assert g["bayesian_inference_least_confident_mcse"] >= 0


def test_bayesian_inference_exercises():
    from gmmcourse.data import BENTO_WEIGHTS as x

    g = glued("bayesian_inference")
    w = np.exp([0.0, -1.0, -2.0, -50.0])
    assert g["bayesian_inference_ex_ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-6)
    heavy = x[x > 425]
    prec = 1 / 50**2 + heavy.size / 4
    assert g["bayesian_inference_ex_n_heavy"] == heavy.size
    assert g["bayesian_inference_ex_mu_mean"] == pytest.approx((400 / 50**2 + heavy.sum() / 4) / prec, rel=1e-12)
    assert g["bayesian_inference_ex_mu_sd"] == pytest.approx(prec**-0.5, rel=1e-12)
    q = np.sum((heavy - heavy.mean()) ** 2)
    assert g["bayesian_inference_ex_q"] == pytest.approx(q, rel=1e-12)
    mode = g["bayesian_inference_ex_sd_mode"]
    assert mode**3 + (heavy.size - 2) * mode**2 - q == pytest.approx(0, abs=1e-9)  # b s^3 + (n - a) s^2 = Q
    assert g["bayesian_inference_ex_sd_mode_package"] == pytest.approx(mode, rel=1e-5)
    assert g["bayesian_inference_ex_plain_sd"] == pytest.approx(np.sqrt(q / heavy.size), rel=1e-12)
