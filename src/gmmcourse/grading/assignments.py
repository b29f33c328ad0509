"""The course's autograded assignments: parts (grade ids, points, export code, trusted checks).

Each `Part` matches one autograded test cell of ``solutions/<id>/<id>.ipynb`` (same
``grade_id`` and points; `tests/test_exercises.py` enforces it). ``export`` code runs in the
student's kernel after the student's cells and only reads the student's variables into plain
JSON (``answer``); the trusted ``check`` (`gmmcourse.grading.checks`) compares it with
``Assignment.reference()``, computed here from the `gmmcourse` reference package.

`generate_release` regenerates ``exercises/`` from ``solutions/`` with nbgrader
(``python scripts/generate_release.py``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from gmmcourse.grading import checks as C
from gmmcourse.grading.spec import Assignment, Part

__all__ = ["ASSIGNMENTS", "REPO_ROOT", "CATEGORIZE_MISTAKES", "categorize_mistake", "generate_release", "grading_environment", "reference_posterior_summary",
           "sync_grading_environment"]

REPO_ROOT = Path(__file__).resolve().parents[3]

# ----------------------------------------------------------------------------- export helpers

# Prepended to every export: JSON conversion that never trusts types. Names are prefixed to
# avoid clobbering the student's namespace.
_PRELUDE = r'''
import numpy as _gx_np
import base64 as _gx_b64

def _gx_raw(a):
    """Raw float64 data, base64 (the trusted side decodes and computes every statistic)."""
    a = _gx_np.ascontiguousarray(_gx_np.asarray(a, dtype=_gx_np.float64))
    if a.size > 1000000:
        raise ValueError("array too large")
    return {"shape": [int(d) for d in a.shape], "f8": _gx_b64.b64encode(a.astype("<f8").tobytes()).decode("ascii")}

def _gx_draws(a):
    """Draws (chains, samples, K): the first @@MAXCHAINS@@ chains, thinned evenly if needed."""
    a = _gx_np.asarray(a, dtype=_gx_np.float64)
    if a.ndim != 3:
        raise ValueError("draws must have shape (chains, samples, K)")
    c, s, k = a.shape
    kept = a[:@@MAXCHAINS@@]
    step = max(1, -(-kept.shape[0] * s * k // @@MAXVALUES@@))
    return {"shape": [int(c), int(s), int(k)], "step": int(step), "raw": _gx_raw(kept[:, ::step])}

def _gx_json(v, _depth=0):
    if _depth > 8:
        raise ValueError("nested too deeply")
    if isinstance(v, dict):
        return {str(k): _gx_json(x, _depth + 1) for k, x in list(v.items())[:64]}
    if isinstance(v, (list, tuple)) and not all(isinstance(x, (int, float)) for x in v):
        try:
            a = _gx_np.asarray(v, dtype=float)
            return _gx_json(a, _depth + 1)
        except Exception:
            return [_gx_json(x, _depth + 1) for x in list(v)[:4096]]
    if isinstance(v, str):
        return v[:8_000_000]
    if isinstance(v, (bool, _gx_np.bool_)):
        return bool(v)
    if isinstance(v, (int, _gx_np.integer)) and not isinstance(v, bool):
        return int(v)
    a = _gx_np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise ValueError("not numeric")
    if a.size > 200000:
        raise ValueError("array too large")
    a = a.astype(float)
    def conv(x):
        return float(x) if _gx_np.isfinite(x) else None
    if a.ndim == 0:
        return conv(a)
    return _gx_np.vectorize(conv, otypes=[object])(a).tolist()
'''


_PRELUDE = _PRELUDE.replace("@@MAXCHAINS@@", str(C.EXPORT_MAX_CHAINS)).replace("@@MAXVALUES@@", str(C.EXPORT_MAX_VALUES))


def _export(body: str) -> str:
    """Wrap an export body: any failure becomes ``answer = {"error": ...}``."""
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return (
        _PRELUDE
        + "\ntry:\n"
        + indented
        + "\n    answer = _gx_json(answer)\n"
        + "except Exception as _gx_e:\n"
        + "    answer = {'error': (type(_gx_e).__name__ + ': ' + str(_gx_e))[:300]}\n"
    )


# ----------------------------------------------------------------------------- categorization

BENTO_RECIPE = {"weights": [0.7, 0.3], "means": [500.0, 350.0], "sds": [2.0, 2.0]}
UNEQUAL_RECIPE = {"weights": [0.7, 0.3], "means": [500.0, 350.0], "sds": [2.0, 4.0]}


def _categorization_inputs() -> dict:
    from gmmcourse.data import BENTO_WEIGHTS

    # every basic case has overlapping components, unequal weights and sds != 1, so that each
    # mistake of `categorize_mistake` changes it (tests/test_grading_fairness.py checks it)
    basic = [
        dict(x=[380.0, 410.0, 425.0, 440.0, 470.0], weights=[0.7, 0.3], means=[500.0, 350.0], sds=[30.0, 30.0]),
        dict(x=[95.0, 100.0, 105.0, 135.0, 140.0, 145.0], weights=[0.2, 0.5, 0.3],
             means=[80.0, 120.0, 157.0], sds=[12.0, 15.0, 10.0]),
        dict(x=[-1.0, 0.0, 0.4, 1.0, 2.5], weights=[0.9, 0.1], means=[0.0, 1.0], sds=[1.0, 0.5]),
        dict(x=[400.0, 425.0, 450.0], weights=[0.7, 0.3], means=[500.0, 350.0], sds=[20.0, 40.0]),
    ]
    # far in the tails, where the densities underflow: decided by the tails (or, in the last
    # case, by a moderate log-odds with equal weights and unit sds), so that only instability
    # -- not the weights or sd-vs-variance -- changes them
    stable = [
        dict(x=[0.0, 300.0, 1000.0], **BENTO_RECIPE),
        dict(x=[-50.0, 250.0], weights=[0.2, 0.5, 0.3], means=[80.0, 120.0, 157.0], sds=[0.5, 0.5, 0.5]),
        dict(x=[40.0, -40.0], weights=[0.5, 0.5], means=[0.0, 0.05], sds=[1.0, 1.0]),
    ]
    return {"categorize_basic": basic, "categorize_stable": stable}


CATEGORIZE_MISTAKES = ("ignores_weights", "variance_as_sd", "sd_as_variance", "normalised_over_observations",
                       "unnormalised", "log_probs")


def categorize_mistake(kind: str, x, weights, means, sds) -> np.ndarray:
    """A typical wrong `categorize` (computed stably, so that only the mistake differs)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    x, w, m, s = (np.asarray(a, dtype=np.float64) for a in (x, weights, means, sds))
    if kind == "ignores_weights":
        w = np.full_like(w, 1.0 / w.size)
    elif kind == "variance_as_sd":
        s = s ** 2
    elif kind == "sd_as_variance":
        s = np.sqrt(s)
    lj = np.log(w)[None, :] + norm.logpdf(x[:, None], m[None, :], s[None, :])
    if kind == "normalised_over_observations":
        return np.exp(lj - logsumexp(lj, axis=0, keepdims=True))
    if kind == "unnormalised":
        return np.exp(lj)
    lp = lj - logsumexp(lj, axis=1, keepdims=True)
    return lp if kind == "log_probs" else np.exp(lp)


def _f64(fn, *args):
    from gmmcourse.precision import x64_context

    with x64_context(np.float64):
        return np.asarray(fn(*(np.asarray(a, dtype=np.float64) for a in args)), dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _categorization_reference() -> dict:
    from gmmcourse.categorize import categorize, log_joint_by_component, log_predictive

    inp = _categorization_inputs()
    run = lambda c: _f64(categorize, c["x"], c["weights"], c["means"], c["sds"]).tolist()
    lj = _f64(log_joint_by_component, [425.0], *UNEQUAL_RECIPE.values())
    return {
        "categorize_basic": [run(c) for c in inp["categorize_basic"]],
        "categorize_stable": [run(c) for c in inp["categorize_stable"]],
        "categorize_mistakes": {kind: [categorize_mistake(kind, c["x"], c["weights"], c["means"], c["sds"]).tolist()
                                       for c in inp["categorize_basic"]] for kind in CATEGORIZE_MISTAKES},
        "p_tonkatsu_425": float(_f64(categorize, [425.0], *BENTO_RECIPE.values())[0, 0]),
        "log_odds_425_unequal": float(lj[0, 0] - lj[1, 0]),
        "log_pred_425": float(_f64(log_predictive, [425.0], *BENTO_RECIPE.values())[0]),
        "log_pred_500": float(_f64(log_predictive, [500.0], *BENTO_RECIPE.values())[0]),
    }


_CATEGORIZE_EXPORT = r'''
answer = []
for _gx_c in inputs["{key}"]:
    try:
        _gx_r = categorize(_gx_np.asarray(_gx_c["x"], dtype=float), _gx_np.asarray(_gx_c["weights"], dtype=float),
                           _gx_np.asarray(_gx_c["means"], dtype=float), _gx_np.asarray(_gx_c["sds"], dtype=float))
        answer.append(_gx_json(_gx_np.asarray(_gx_r, dtype=float)))
    except Exception:
        answer.append(None)
'''

CATEGORIZATION = Assignment(
    id="categorization",
    notebook="categorization.ipynb",
    parts=(
        Part("categorize_basic", 3.0, _export(_CATEGORIZE_EXPORT.replace("{key}", "categorize_basic")),
             C.check_categorize_basic, "categorize(x, weights, means, sds) returns P(z | x)"),
        Part("categorize_stable", 1.0, _export(_CATEGORIZE_EXPORT.replace("{key}", "categorize_stable")),
             C.check_categorize_stable, "categorize is stable far from every component"),
        Part("bento_425_equal", 1.0, _export('answer = {"p_tonkatsu_425": p_tonkatsu_425}'),
             C.check_425_equal, "P(tonkatsu | 425 g) with equal sds"),
        Part("bento_425_unequal", 1.0, _export('answer = {"log_odds_425_unequal": log_odds_425_unequal}'),
             C.check_425_unequal, "log-odds at 425 g with unequal sds"),
        Part("bento_425_outlier", 2.0,
             _export('answer = {"log_pred_425": log_pred_425, "log_pred_500": log_pred_500}'),
             C.check_425_outlier, "log predictive density: 425 g is an outlier"),
    ),
    reference=_categorization_reference,
    inputs=_categorization_inputs,
    sandbox_hide=("gmmcourse",),  # numpy and scipy only: categorize is the student's to write
    packages="`numpy` and `scipy`; the course package `gmmcourse` is not available (`categorize` is yours to write)",
)

# ----------------------------------------------------------------------------- posterior reference

REF_CHAINS = 8
REF_SAMPLES = 2500
REF_WARMUP = 500
REF_SEED = 20240917


def reference_posterior_summary(post, batches: int = C.BATCHES) -> dict:
    """Mean, sd, batch-means se and ESS of each parameter of a `gmmcourse.gibbs.Posterior`."""
    out = {}
    for name in ("weights", "means", "sds"):
        s = C.batch_summary(getattr(post, name), batches)
        bm = np.asarray(s["batch_means"])
        se = bm.std(axis=0, ddof=1) / math.sqrt(bm.shape[0])
        sd = np.asarray(s["sd"])
        out[name] = {"mean": s["mean"], "sd": s["sd"], "se": se.tolist(),
                     "ess": (sd ** 2 / np.maximum(se, 1e-12) ** 2).tolist()}
    return out


@functools.lru_cache(maxsize=4)
def _posterior(data: str):
    from gmmcourse.data import BENTO_WEIGHTS, COFFEE_CAFFEINE
    from gmmcourse.gibbs import posterior
    from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR

    x, k, prior = {"coffee": (COFFEE_CAFFEINE, 3, COFFEE_PRIOR), "bento": (BENTO_WEIGHTS, 2, BENTO_PRIOR)}[data]
    return posterior(x, k, prior=prior, num_chains=REF_CHAINS, num_samples=REF_SAMPLES,
                     num_warmup=REF_WARMUP, seed=REF_SEED, dtype=np.float64)


# ----------------------------------------------------------------------------- coffee_blends

COFFEE_N_CHOICE_MAPS = 6


@functools.lru_cache(maxsize=1)
def _coffee_inputs() -> dict:
    import jax
    from genjax import const, seed

    from gmmcourse.data import COFFEE_CAFFEINE
    from gmmcourse.models import COFFEE_PRIOR, gmm

    n = int(COFFEE_CAFFEINE.shape[0])
    sim = seed(gmm.simulate)
    maps = []
    for i in range(COFFEE_N_CHOICE_MAPS - 1):
        ch = sim(jax.random.key(1000 + i), const(n), COFFEE_PRIOR).get_choices()
        maps.append({
            "weights": np.asarray(ch["weights"], float).tolist(),
            "means": np.asarray(ch["means"], float).tolist(),
            "sds": np.asarray(ch["sds"], float).tolist(),
            "points": {"z": np.asarray(ch["points"]["z"], int).tolist(),
                       "x": np.asarray(ch["points"]["x"], float).tolist()},
        })
    # the real data with plausible parameters (and labels in an arbitrary order)
    z = np.array([{82: 1, 118: 0, 155: 2}[min((82, 118, 155), key=lambda m: abs(m - v))] for v in COFFEE_CAFFEINE])
    maps.append({"weights": [0.35, 0.33, 0.32], "means": [118.6, 81.0, 156.9], "sds": [2.1, 1.8, 1.9],
                 "points": {"z": z.tolist(), "x": COFFEE_CAFFEINE.tolist()}})
    return {"n": n, "choice_maps": maps}


@functools.lru_cache(maxsize=1)
def _coffee_reference() -> dict:
    import jax.numpy as jnp
    from genjax import const

    from gmmcourse.models import COFFEE_PRIOR, gmm

    inp = _coffee_inputs()
    assess = []
    for m in inp["choice_maps"]:
        chm = {"weights": jnp.asarray(m["weights"], jnp.float32), "means": jnp.asarray(m["means"], jnp.float32),
               "sds": jnp.asarray(m["sds"], jnp.float32),
               "points": {"z": jnp.asarray(m["points"]["z"], jnp.int32), "x": jnp.asarray(m["points"]["x"], jnp.float32)}}
        assess.append(float(gmm.assess(chm, const(inp["n"]), COFFEE_PRIOR)[0]))
    post = _posterior("coffee")
    return {"k": 3, "n": inp["n"], "assess": assess, "posterior": reference_posterior_summary(post),
            "assignment_probs": np.asarray(post.assignment_probs, float).tolist()}


_COFFEE_ASSESS_EXPORT = r'''
import jax.numpy as _gx_jnp
from genjax import const as _gx_const
answer = []
for _gx_m in inputs["choice_maps"]:
    try:
        _gx_chm = {"weights": _gx_jnp.asarray(_gx_m["weights"], _gx_jnp.float32),
                   "means": _gx_jnp.asarray(_gx_m["means"], _gx_jnp.float32),
                   "sds": _gx_jnp.asarray(_gx_m["sds"], _gx_jnp.float32),
                   "points": {"z": _gx_jnp.asarray(_gx_m["points"]["z"], _gx_jnp.int32),
                              "x": _gx_jnp.asarray(_gx_m["points"]["x"], _gx_jnp.float32)}}
        _gx_lp = coffee_gmm.assess(_gx_chm, _gx_const(int(inputs["n"])))[0]
        answer.append(float(_gx_np.sum(_gx_np.asarray(_gx_lp, dtype=float))))
    except Exception:
        answer.append(None)
'''

_COFFEE_SIMULATE_EXPORT = r'''
import jax as _gx_jax
import genjax as _gx_genjax
_gx_n = int(inputs["n"])
_gx_sim = _gx_genjax.seed(coffee_gmm.simulate)
def _gx_flat(ch):
    return {"weights": _gx_np.asarray(ch["weights"]), "means": _gx_np.asarray(ch["means"]),
            "sds": _gx_np.asarray(ch["sds"]),
            "points": {"z": _gx_np.asarray(ch["points"]["z"]), "x": _gx_np.asarray(ch["points"]["x"])}}
_gx_sims = [_gx_flat(_gx_sim(_gx_jax.random.key(7 + i), _gx_genjax.const(_gx_n)).get_choices()) for i in range(3)]
_gx_keys = _gx_jax.random.split(_gx_jax.random.key(4242), 400)
try:
    _gx_all = _gx_jax.vmap(lambda k: _gx_sim(k, _gx_genjax.const(_gx_n)).get_choices())(_gx_keys)
    _gx_all = _gx_flat(_gx_all)
except Exception:
    _gx_list = [_gx_flat(_gx_sim(k, _gx_genjax.const(_gx_n)).get_choices()) for k in _gx_keys[:100]]
    _gx_all = {name: _gx_np.stack([s[name] for s in _gx_list]) for name in ("weights", "means", "sds")}
    _gx_all["points"] = {a: _gx_np.stack([s["points"][a] for s in _gx_list]) for a in ("z", "x")}
answer = {"sims": _gx_sims,
          "all": {"weights": _gx_raw(_gx_all["weights"]), "means": _gx_raw(_gx_all["means"]),
                  "sds": _gx_raw(_gx_all["sds"]), "z": _gx_raw(_gx_all["points"]["z"]),
                  "x": _gx_raw(_gx_all["points"]["x"])}}
'''

_COFFEE_DRAWS_EXPORT = r'''
answer = {k: _gx_draws(coffee_draws[k]) for k in ("weights", "means", "sds")}
'''


def _coffee_param_export(target: str) -> str:
    return _export(r'''
answer = {k: _gx_draws(coffee_draws[k]) for k in ("weights", "means", "sds")}
answer["reported"] = _gx_np.asarray(coffee_summary["TARGET"], dtype=float)
'''.replace("TARGET", target))


COFFEE_BLENDS = Assignment(
    id="coffee_blends",
    notebook="coffee_blends.ipynb",
    parts=(
        Part("coffee_model_density", 3.0, _export(_COFFEE_ASSESS_EXPORT), C.check_coffee_assess,
             "the GenJAX model's log density matches the specification"),
        Part("coffee_model_simulate", 1.0, _export(_COFFEE_SIMULATE_EXPORT), C.check_coffee_simulate,
             "simulating the model gives choices of the right shape, support and distribution"),
        Part("coffee_draws_format", 1.0, _export(_COFFEE_DRAWS_EXPORT), C.check_coffee_draws,
             "posterior draws: enough chains and samples, sorted by mean"),
        Part("coffee_posterior_means", 2.0, _coffee_param_export("means"), C.check_coffee_means,
             "posterior means of the blend caffeine levels"),
        Part("coffee_posterior_weights", 1.0, _coffee_param_export("weights"), C.check_coffee_weights,
             "posterior means of the blend proportions"),
        Part("coffee_posterior_sds", 2.0, _coffee_param_export("sds"), C.check_coffee_sds,
             "posterior means of the blend standard deviations"),
        Part("coffee_assignments", 2.0,
             _export("answer = _gx_np.asarray(coffee_assignment_probs, dtype=float)"),
             C.check_coffee_assignments, "per-cup assignment probabilities"),
    ),
    reference=_coffee_reference,
    inputs=_coffee_inputs,
    sandbox_hide=("gmmcourse",),  # the model and the sampler are the student's to write
    packages="`numpy`, `scipy`, `jax` and `genjax`; the course package `gmmcourse` is not available "
             "(the model and the sampler are yours to write)",
)

# ----------------------------------------------------------------------------- uncertainty

UNCERTAINTY_HIDE = tuple(f"gmmcourse/{m}.py" for m in ("categorize", "selection", "exact", "importance", "plain"))


@functools.lru_cache(maxsize=1)
def _uncertainty_reference() -> dict:
    from gmmcourse.categorize import categorize, log_joint_by_component
    from gmmcourse.data import BENTO_WEIGHTS
    from gmmcourse.em import em

    fit = em(BENTO_WEIGHTS, 2, dtype=np.float64)
    w, m, s = (np.asarray(a, float) for a in (fit.weights, fit.means, fit.sds))
    order = np.argsort(m)
    w, m, s = w[order], m[order], s[order]
    probs = _f64(categorize, BENTO_WEIGHTS, w, m, s)
    lj = _f64(log_joint_by_component, BENTO_WEIGHTS, w, m, s)  # (K, N)
    lj425 = _f64(log_joint_by_component, [425.0], w, m, s)
    post = _posterior("bento")
    return {
        "k": 2,
        "em": [w.tolist(), m.tolist(), s.tolist()],
        "labels": np.argmax(probs, axis=1).tolist(),
        "log_odds_425": float(lj425[1, 0] - lj425[0, 0]),
        "most_ambiguous": int(np.argmin(np.abs(lj[1] - lj[0]))),
        "posterior": reference_posterior_summary(post),
        "assignment_probs": np.asarray(post.assignment_probs, float).tolist(),
    }


UNCERTAINTY = Assignment(
    id="uncertainty",
    notebook="uncertainty.ipynb",
    parts=(
        Part("bento_em_fit", 2.0,
             _export('answer = {k: _gx_np.asarray(bento_em[k], dtype=float) for k in ("weights", "means", "sds")}'),
             C.check_bento_em, "EM point estimate of the bento mixture"),
        Part("bento_point_labels", 1.0, _export("answer = _gx_np.asarray(bento_point_labels)"),
             C.check_bento_labels, "hard assignment from the point estimate"),
        Part("bento_posterior_probs", 2.0, _export("answer = _gx_np.asarray(bento_assignment_probs, dtype=float)"),
             C.check_bento_posterior_probs, "posterior assignment probabilities"),
        Part("bento_posterior_means", 2.0, _export(r'''
answer = {"means": _gx_draws(bento_draws["means"]),
          "reported_mean": _gx_np.asarray(bento_means_mean, dtype=float),
          "reported_sd": _gx_np.asarray(bento_means_sd, dtype=float)}
'''), C.check_bento_posterior_means, "posterior mean and sd of the component means"),
        Part("bento_ambiguity", 2.0,
             _export('answer = {"log_odds_425": log_odds_425, "most_ambiguous": most_ambiguous}'),
             C.check_bento_ambiguity, "plug-in log-odds at 425 g and the most ambiguous bento"),
    ),
    reference=_uncertainty_reference,
    inputs=lambda: {},
    # the notebook gives the reference sampler (gmmcourse.gibbs, which needs data, models,
    # em, precision and validation); what the student computes by hand is hidden
    sandbox_hide=UNCERTAINTY_HIDE,
    packages="`numpy`, `scipy` and the parts of `gmmcourse` that the reference sampler needs "
             "(`gmmcourse.gibbs`, `gmmcourse.models`, `gmmcourse.data`); `gmmcourse.categorize` is not "
             "available, and EM is yours to write (do not call `gmmcourse.em`)",
)

ASSIGNMENTS: dict[str, Assignment] = {a.id: a for a in (CATEGORIZATION, COFFEE_BLENDS, UNCERTAINTY)}
"""All autograded assignments, by nbgrader assignment id."""

GRADING_ENVIRONMENT_TAG = "grading-environment"


def grading_environment(a: Assignment, limits=None) -> str:
    """The notebook's "how this notebook is graded" cell: the sandbox's packages and limits,
    generated from `Limits` (a test keeps the notebooks in sync with it)."""
    from gmmcourse.grading.sandbox import Limits

    lim = limits or Limits()
    return (
        "**How this notebook is graded.** The autograder runs your notebook from top to bottom in a "
        f"sandbox without network access. It offers {a.packages}. Limits: "
        f"**{lim.cell_timeout:.0f} s per cell** and **{lim.notebook_timeout:.0f} s for the whole notebook**, "
        f"{lim.memory_bytes >> 30} GiB of memory, {lim.cpus:g} CPU core, {lim.scratch_bytes >> 20} MiB of disk "
        "in the working directory. A cell that runs past its limit is interrupted: what it had not "
        "finished is missing, and every part that needs it says so in your feedback. Run "
        "*Restart & Run All* before you submit, and keep an eye on the time the slow cells take. "
        + _PRECISION[a.id]
    )


_PRECISION = {
    "categorization": (
        f"**Precision.** Every answer here is exact: it is compared with the exact value at relative "
        f"tolerance {C.EXACT_RTOL:g} (absolute {C.EXACT_ATOL:g} near 0), so float64 and float32 both pass."),
    "coffee_blends": (
        f"**Precision.** Model log densities are compared at float32 precision. Posterior summaries are "
        f"compared with a reference posterior within Monte Carlo error, in any component order: your "
        f"chains must agree (split R-hat at most {C.RHAT_MAX}), and the tolerance is that of draws at least "
        f"1/{C.MAX_IAT:g} as informative as independent ones; a summary you report must be the "
        f"statistic of your draws (to {C.SUMMARY_Z:g} Monte Carlo standard errors)."),
    "uncertainty": (
        f"**Precision.** The EM fit is compared with the maximum-likelihood fit at relative tolerance "
        f"{C.EM_RTOL['weights']:g} (weights), {C.EM_RTOL['means']:g} (means), {C.EM_RTOL['sds']:g} (sds). "
        f"Component 0 is the lighter one everywhere, and order is checked. Posterior summaries are "
        f"compared within Monte Carlo error: your chains must agree (split R-hat at most {C.RHAT_MAX}), and "
        f"a summary you report must be the statistic of your draws (to {C.SUMMARY_Z:g} Monte Carlo "
        "standard errors)."),
}


def sync_grading_environment(source_root: Path | None = None) -> list[Path]:
    """Insert or update the grading-environment cell (after the first cell) of every source
    notebook; returns the notebooks that changed. Run `generate_release` afterwards."""
    import nbformat

    changed = []
    for a in ASSIGNMENTS.values():
        path = Path(source_root or REPO_ROOT / "solutions") / a.id / a.notebook
        nb = nbformat.read(path, 4)
        text = grading_environment(a)
        cells = [c for c in nb.cells if GRADING_ENVIRONMENT_TAG in c.get("metadata", {}).get("tags", [])]
        if cells and cells[0].source == text:
            continue
        if cells:
            cells[0].source = text
        else:
            cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [GRADING_ENVIRONMENT_TAG]})
            cell.pop("id", None)
            nb.cells.insert(1, cell)
        nbformat.write(nb, path)
        changed.append(path)
    return changed


# ----------------------------------------------------------------------------- release


def generate_release(assignment_ids=None, course_root: Path | None = None, *, quiet: bool = True) -> None:
    """Regenerate ``exercises/<id>/`` from ``solutions/<id>/`` with ``nbgrader generate_assignment``.

    Args:
        assignment_ids: ids to generate (default: all of `ASSIGNMENTS`).
        course_root: an nbgrader course root whose config reads ``../solutions`` and writes
            ``../exercises`` (default: ``<repo>/grading``).
    """
    import os
    import subprocess
    import sys

    root = Path(course_root or REPO_ROOT / "grading")
    nbgrader = [sys.executable, "-m", "nbgrader"]
    for aid in assignment_ids or list(ASSIGNMENTS):
        cmd = nbgrader + ["generate_assignment", aid, "--force", "--create"]
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {aid} failed:\n{res.stdout}\n{res.stderr}")
        if not quiet:
            print(res.stderr or res.stdout)
