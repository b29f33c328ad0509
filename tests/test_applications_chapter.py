"""The numbers glued into the applications chapter (chapters/applications.md), each checked
against an independent computation: scikit-learn's GaussianMixture for the EM numbers, the
raw data for the counts, scipy's multivariate normal over the posterior draws for the
predictive densities, and a second Gibbs run for the posterior probabilities (within their
Monte Carlo errors); and the claims the prose makes about them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_sample_image, load_wine
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from conftest import MC_Z, glued, mc_close

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def g():
    return glued("applications")


_FITS: dict = {}


def sk_fit(x, k, n_init=20, tol=1e-8):
    """scikit-learn's EM (the independent maximum-likelihood fit), to a tight tolerance by
    default; the pixel fits, whose EM creeps for thousands of steps, to a looser one. The
    tests share the fits (the same data, K and settings: the same fitted model, read only)."""
    x = np.ascontiguousarray(x)
    key = (x.shape, x.dtype.str, hashlib.sha256(x.tobytes()).hexdigest(), k, n_init, tol)
    if key not in _FITS:
        # one BLAS thread: on a loaded machine many threads make these small fits 40x slower
        with threadpool_limits(1):
            _FITS[key] = GaussianMixture(k, covariance_type="full", n_init=n_init, tol=tol, max_iter=2000,
                                         random_state=0).fit(x)
    return _FITS[key]


def test_fits_are_shared_only_when_data_k_and_settings_agree():
    x = faithful_data()
    assert sk_fit(x, 2) is sk_fit(x.copy(), 2)
    assert sk_fit(x, 2) is not sk_fit(x, 2, tol=1e-6) and sk_fit(x, 2) is not sk_fit(x, 3)
    assert sk_fit(x, 2) is not sk_fit(x[:, :1], 2) and sk_fit(x, 2) is not sk_fit(x + 1e-9, 2)


def sorted_probs(gm, x):
    """predict_proba with the components ordered by their means' first coordinate."""
    return gm.predict_proba(x)[:, np.argsort(gm.means_[:, 0])]


# ----- Old Faithful in two dimensions -------------------------------------------------------

def faithful_data():
    """R's faithful (its values are tested against R's summaries in test_data_applications)."""
    from gmmcourse.data import faithful

    return np.asarray(faithful())


def test_faithful_em_numbers(g):
    x = faithful_data()
    gm = sk_fit(x, 2)
    order = np.argsort(gm.means_[:, 0])
    w, m, c = gm.weights_[order], gm.means_[order], gm.covariances_[order]
    assert g["app_of_n"] == 272
    assert g["app_of_loglik"] == pytest.approx(gm.score(x) * len(x), abs=1e-4)
    assert g["app_of_w_short"] == pytest.approx(w[0], abs=1e-5)
    assert g["app_of_wait_short"] == pytest.approx(m[0, 1], abs=1e-3)
    assert g["app_of_wait_long"] == pytest.approx(m[1, 1], abs=1e-3)
    corr = c[:, 0, 1] / np.sqrt(c[:, 0, 0] * c[:, 1, 1])
    assert g["app_of_corr_short"] == pytest.approx(corr[0], abs=1e-4)
    assert g["app_of_corr_long"] == pytest.approx(corr[1], abs=1e-4)
    assert g["app_of_corr_all"] == pytest.approx(0.9008112, abs=1e-7)  # R: cor(faithful)
    bics = {k: sk_fit(x, k).bic(x) for k in range(1, 5)}
    assert g["app_of_bic_best_k"] == min(bics, key=bics.get) == 2
    # the package's K = 3 fit (ten starts) is at least as good as scikit-learn's best of 20
    # (on this data scikit-learn stops at a worse local maximum)
    assert g["app_of_dbic_3"] <= bics[3] - bics[2] + 1e-2
    assert g["app_of_dbic_3"] > 0


def test_faithful_second_dimension(g):
    x = faithful_data()
    r1 = sorted_probs(sk_fit(x[:, :1], 2), x[:, :1])
    r2 = sorted_probs(sk_fit(x, 2), x)
    assert g["app_of_unc_1d"] == np.sum(r1.max(axis=1) < 0.99)
    assert g["app_of_unc_2d"] == np.sum(r2.max(axis=1) < 0.99)
    assert g["app_of_err_1d"] == pytest.approx(np.sum(r1.min(axis=1)), abs=1e-4)
    assert g["app_of_err_2d"] == pytest.approx(np.sum(r2.min(axis=1)), abs=1e-4)
    assert g["app_of_err_2d"] < g["app_of_err_1d"] and g["app_of_unc_2d"] < g["app_of_unc_1d"]
    i_a, i_b = int(np.argmin(np.abs(x[:, 0] - 2.883))), int(np.argmin(np.abs(x[:, 0] - 2.9)))
    assert (g["app_of_wait_a"], g["app_of_wait_b"]) == (x[i_a, 1], x[i_b, 1]) == (55, 63)
    assert g["app_of_r1_a"] == pytest.approx(r1[i_a, 0], abs=1e-3)
    assert g["app_of_r1_b"] == pytest.approx(r1[i_b, 0], abs=1e-3)
    assert g["app_of_r2_a"] == pytest.approx(r2[i_a, 0], abs=1e-4)
    assert g["app_of_r2_b"] == pytest.approx(r2[i_b, 0], abs=1e-4)
    # exercises
    assert g["app_of_ex_p"] == 11
    new = sorted_probs(sk_fit(x, 2), np.array([[3.0, 60.0], [3.0, 80.0]]))[:, 0]
    assert g["app_of_ex_new_60"] == pytest.approx(new[0], abs=1e-4)
    assert g["app_of_ex_new_80"] == pytest.approx(new[1], abs=1e-4)


def test_faithful_posterior_numbers_against_a_second_run(g):
    """A second Gibbs run (another key) agrees with the page's within both MCSEs."""
    from gmmcourse import multivariate as mv

    x = faithful_data()
    assert g["app_of_rhat"] < 1.01
    ref = sorted_probs(sk_fit(x, 2), x)
    draws = mv.posterior(x, 2, key=101, num_chains=4, num_draws=1000, num_warmup=500)
    p = mv.assignment_probs(draws, x, reference=ref)
    i_a, i_b = int(np.argmin(np.abs(x[:, 0] - 2.883))), int(np.argmin(np.abs(x[:, 0] - 2.9)))
    for i, name in ((i_a, "a"), (i_b, "b")):
        se = np.sqrt(2) * g[f"app_of_p_{name}_mcse"]  # the second run's MCSE is about the same
        mc_close(g[f"app_of_p_{name}"], p[i, 0], se, floor=1e-3, what=f"P(short) of eruption {name}")
    err = np.sum(p.min(axis=1))
    mc_close(g["app_of_err_post"], err, np.sqrt(2) * g["app_of_err_post_mcse"], floor=1e-3)
    # the prose: the posterior is less sure than EM at the 2.883-minute eruption, and adds
    # doubt overall
    assert g["app_of_r2_a"] - g["app_of_p_a"] > MC_Z * g["app_of_p_a_mcse"]
    assert g["app_of_err_post"] - g["app_of_err_2d"] > MC_Z * g["app_of_err_post_mcse"]


# ----- image segmentation -------------------------------------------------------------------

def china_sample():
    img = load_sample_image("china.jpg").astype(np.float64) / 255.0
    flat = img.reshape(-1, 3)
    return img, flat, flat[np.random.default_rng(0).choice(len(flat), size=1000, replace=False)]


def test_image_counts(g):
    img, flat, _ = china_sample()
    assert g["app_img_saturated"] == pytest.approx(100 * np.mean(np.any(flat >= 1.0, axis=1)), rel=1e-12)
    assert g["app_img_black"] == pytest.approx(100 * np.mean(np.any(flat <= 0.0, axis=1)), rel=1e-12)
    assert g["app_img_levels"] == len(np.unique(load_sample_image("china.jpg")[..., 0]))
    assert g["app_img_n_fit"] == 1000
    assert g["app_img_n_small"] == np.prod(img[::3, ::3].shape[:2])
    assert g["app_img_ex_pixels"] == 427 * 640
    assert g["app_img_ex_p1"] == 8 and g["app_img_ex_p3"] == 39


def test_image_bic_keeps_improving(g):
    """'BIC keeps improving up to the largest K tried', in 1-D and in 3-D, with scikit-learn's
    fits (independent of the package's EM)."""
    _, _, sample = china_sample()
    grey = sample @ np.array([0.299, 0.587, 0.114])
    bic1 = [sk_fit(grey[:, None], k, tol=1e-8).bic(grey[:, None]) for k in range(1, 7)]
    assert g["app_img_bic1_best"] == 6
    assert np.all(np.diff(bic1[:4]) < -50), "scikit-learn's BIC too falls steeply up to K = 4"
    bic3 = {k: sk_fit(sample, k, n_init=10, tol=1e-6).bic(sample) for k in range(1, 9)}
    assert g["app_img_bic3_best"] == 8 == min(bic3, key=bic3.get)
    # K = 4 is the same optimum (test_image_posterior_numbers); at K = 8 the package's ten
    # starts find a fit at least as good as scikit-learn's, so the gap is at least as large
    assert g["app_img_dbic_4"] >= bic3[4] - bic3[8] - 1.0


def test_image_posterior_numbers(g):
    """The map's certainty: EM's from scikit-learn's fit, the posterior's checked for its
    claims ('the colours are well determined': within 0.03 of EM's)."""
    img, _, sample = china_sample()
    coarse = img[::6, ::6].reshape(-1, 3)
    assert g["app_img_n_coarse"] == len(coarse)
    em = sk_fit(sample, 4, n_init=10, tol=1e-6).predict_proba(coarse).max(axis=1)
    assert g["app_img_cert_em"] == pytest.approx(em.mean(), abs=2e-3)
    assert g["app_img_unsure_em"] == pytest.approx(100 * np.mean(em < 0.9), abs=0.5)
    assert g["app_img_rhat"] < 1.01
    assert 0 < g["app_img_cert_post_mcse"] < 0.01
    assert abs(g["app_img_cert_post"] - g["app_img_cert_em"]) < 0.03


def test_image_grey_fit(g):
    """The 1-D K = 3 fit against scikit-learn's, and the prose: one broad component below two
    narrow bright ones."""
    _, _, sample = china_sample()
    grey = (sample @ np.array([0.299, 0.587, 0.114]))[:, None]
    from scipy.stats import norm

    w, m, sd = (np.array([g[f"app_img_grey_{a}{j}"] for j in range(3)]) for a in ("w", "mean", "sd"))
    assert w.sum() == pytest.approx(1, abs=1e-9)
    loglik = np.sum(np.log(norm.pdf(grey, m, sd) @ w))
    # at least as good as scikit-learn's best of 20 starts (which stops at a worse maximum here)
    assert loglik >= sk_fit(grey, 3, tol=1e-8).score(grey) * len(grey) - 1e-3
    # an EM fixed point: one more EM step moves nothing
    r = norm.pdf(grey, m, sd) * w
    r /= r.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(r.mean(axis=0), w, atol=1e-4)
    np.testing.assert_allclose((r * grey).sum(axis=0) / r.sum(axis=0), m, atol=1e-4)
    assert g["app_img_grey_sd0"] > 2 * max(g["app_img_grey_sd1"], g["app_img_grey_sd2"])
    assert g["app_img_grey_mean0"] < 0.5 < g["app_img_grey_mean1"] < g["app_img_grey_mean2"]


def test_image_narrow_component(g):
    """The hard exercise: the narrowest component is a pale, sky-like colour holding clipped
    pixels far above their share."""
    _, _, sample = china_sample()
    clipped = np.any(sample >= 1.0, axis=1)
    assert g["app_img_ex_sat_all"] == pytest.approx(100 * clipped.mean(), rel=1e-12)
    assert min(g["app_img_ex_r"], g["app_img_ex_g"], g["app_img_ex_b"]) > 0.8
    assert g["app_img_ex_sat"] > 2 * g["app_img_ex_sat_all"]
    gm = sk_fit(sample, 4, n_init=10, tol=1e-6)
    j = int(np.argmin(np.linalg.det(gm.covariances_)))
    np.testing.assert_allclose(gm.means_[j], [g["app_img_ex_r"], g["app_img_ex_g"], g["app_img_ex_b"]], atol=0.02)


# ----- anomaly detection --------------------------------------------------------------------

def wine_split():
    wine = load_wine()
    cols = [list(wine.feature_names).index(f) for f in ("proline", "flavanoids", "color_intensity")]
    xw = np.log(wine.data[:, cols])
    normal, novel = np.flatnonzero(wine.target < 2), np.flatnonzero(wine.target == 2)
    order = np.random.default_rng(1).permutation(normal)
    return xw, order[:40], order[40:85], order[85:], novel


def test_anomaly_plug_in_numbers(g):
    xw, train, calib, test, novel = wine_split()
    score = sk_fit(xw[train], 2).score_samples(xw)
    thr = np.quantile(score[calib], 0.10)
    assert g["app_an_thr_em"] == pytest.approx(thr, abs=1e-4)
    assert g["app_an_fa_em"] == pytest.approx(100 * np.mean(score[test] < thr), abs=1e-9)
    assert g["app_an_det_em"] == pytest.approx(100 * np.mean(score[novel] < thr), abs=1e-9)
    assert g["app_an_fa_se"] == pytest.approx(100 * np.sqrt(0.1 * 0.9 / 45), rel=1e-12)
    held = np.concatenate([calib, test])
    assert g["app_an_ld_train_em"] == pytest.approx(score[train].mean(), abs=1e-4)
    assert g["app_an_ld_held_em"] == pytest.approx(score[held].mean(), abs=1e-4)
    # the easy exercise: the training wines' density is higher than new wines'
    assert g["app_an_ld_train_em"] > g["app_an_ld_held_em"]


def test_anomaly_exercise_numbers(g):
    """The conformal argument: np.quantile's 10 % point of 45 scores lies between the 5th and
    6th smallest; Beta(5, 41) has mean 5/46."""
    from scipy.stats import beta

    scores = np.random.default_rng(0).normal(size=45)
    thr = np.quantile(scores, 0.10)
    assert g["app_an_ex_m"] == 45 and g["app_an_ex_j"] == np.sum(scores < thr) == 5
    assert g["app_an_ex_mean"] == pytest.approx(5 / 46, rel=1e-12)
    # the Beta's quantiles checked through its CDF
    for q, key in ((0.05, "app_an_ex_lo"), (0.95, "app_an_ex_hi")):
        assert beta.cdf(g[key], 5, 41) == pytest.approx(q, abs=1e-9)


def test_anomaly_predictive_numbers(g):
    """The posterior predictive density recomputed from the same draws with scipy (the page's
    key, so the same draws), and the flags and counts from it."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    from gmmcourse import multivariate as mv

    xw, train, calib, test, novel = wine_split()
    draws = mv.posterior(xw[train], 2, key=0, num_draws=1000, num_warmup=500)
    w = draws.weights.reshape(-1, 2)
    m, c = draws.means.reshape(-1, 2, 3), draws.covs.reshape(-1, 2, 3, 3)
    per_draw = np.stack([
        logsumexp([np.log(w[s, k]) + multivariate_normal(m[s, k], c[s, k]).logpdf(xw) for k in range(2)], axis=0)
        for s in range(len(w))
    ])  # (draws, 178)
    score = logsumexp(per_draw, axis=0) - np.log(len(w))
    thr = np.quantile(score[calib], 0.10)
    flag = score < thr
    assert g["app_an_thr_pp"] == pytest.approx(thr, abs=1e-6)
    assert g["app_an_fa_pp"] == pytest.approx(100 * flag[test].mean(), abs=1e-9)
    assert g["app_an_det_pp"] == pytest.approx(100 * flag[novel].mean(), abs=1e-9)
    held = np.concatenate([calib, test])
    assert g["app_an_ld_train_pp"] == pytest.approx(score[train].mean(), abs=1e-6)
    assert g["app_an_ld_held_pp"] == pytest.approx(score[held].mean(), abs=1e-6)
    em_score = sk_fit(xw[train], 2).score_samples(xw)
    flag_em = em_score < np.quantile(em_score[calib], 0.10)
    new = np.concatenate([test, novel])
    assert g["app_an_n_new"] == len(new)
    assert g["app_an_n_differ"] == np.sum(flag_em[new] != flag[new])
    assert g["app_an_rhat"] < 1.01
    diff = np.max(score[novel] - em_score[novel])
    assert g["app_an_novel_maxdiff"] == pytest.approx(diff, abs=1e-3)
    assert g["app_an_novel_ratio"] == pytest.approx(np.exp(diff), rel=1e-3)
    # the prose: the predictive density gives training wines less and held-out wines more
    assert g["app_an_ld_train_pp"] < g["app_an_ld_train_em"]
    assert g["app_an_ld_held_pp"] > g["app_an_ld_held_em"]


# ----- groups with known labels -------------------------------------------------------------

def test_iris_numbers(g):
    iris = load_iris()
    x, y = iris.data, iris.target
    fits = {k: sk_fit(x, k, tol=1e-6) for k in range(1, 6)}
    bics = {k: f.bic(x) for k, f in fits.items()}
    assert g["app_ir_bic_best"] == min(bics, key=bics.get) == 2
    assert g["app_ir_dbic_3"] == pytest.approx(bics[3] - bics[2], abs=1e-2)
    assert g["app_ir_ari_3"] == pytest.approx(adjusted_rand_score(y, fits[3].predict(x)), abs=1e-12)
    # 'setosa against the other two': the two-cluster partition is exactly that one
    assert g["app_ir_ari_2"] == pytest.approx(adjusted_rand_score(y, y == 0), abs=1e-12)
    assert g["app_ir_ari_2"] == pytest.approx(adjusted_rand_score(y, fits[2].predict(x)), abs=1e-12)
    tab = np.zeros((3, 3), int)
    np.add.at(tab, (y, fits[3].predict(x)), 1)
    assert g["app_ir_mismatch"] == len(y) - tab.max(axis=1).sum()
    assert g["app_ir_ex_swap"] == g["app_ir_ari_3"]
    assert g["app_ir_ex_p"] == 44
    assert g["app_ir_ex_log_n"] == pytest.approx(5.0106352940962555, rel=1e-12)
    assert g["app_ir_ex_nats"] == pytest.approx(15 * 5.0106352940962555 / 2, rel=1e-12)
