"""The graded exercises: release in sync with sources, no leaks, parts match cells, checks are right.

Checks are tested by running each part's export code in-process on answers computed by an
independent method (the solutions' numpy Gibbs sampler, other seeds and chain counts, other
component orders) and on typical wrong answers. The notebooks themselves are executed, through
the sandboxed grader, by tests/test_autograde_course.py.
"""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import numpy as np
import pytest

from corpus import categorization as cat_corpus
from corpus import coffee_blends as cb_corpus
from corpus import uncertainty as unc_corpus
from corpus.grading import SOL, score
from gmmcourse.grading.assignments import ASSIGNMENTS, REPO_ROOT

IDS = sorted(ASSIGNMENTS)
REL = REPO_ROOT / "exercises"
VOLATILE_META = {"checksum", "id", "execution"}


def _nb(path):
    return nbformat.read(str(path), as_version=4)


def _grade_cells(nb):
    out = {}
    for c in nb.cells:
        m = c.metadata.get("nbgrader", {})
        if m.get("grade"):
            out[m["grade_id"]] = (float(m["points"]), c.cell_type, bool(m.get("solution")))
    return out


# ----------------------------------------------------------------------------- release


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """Regenerate the release from solutions/ into a temporary course and return its folder."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(SOL, root / "solutions")
    (root / "grading").mkdir()
    shutil.copy(REPO_ROOT / "grading" / "nbgrader_config.py", root / "grading")
    from gmmcourse.grading.release import generate_release

    generate_release(None, course_root=root / "grading")
    return root / "exercises"


def _strip(cell):
    meta = {k: v for k, v in cell.metadata.items() if k not in VOLATILE_META}
    if "nbgrader" in meta:
        meta["nbgrader"] = {k: v for k, v in meta["nbgrader"].items() if k not in VOLATILE_META}
    return cell.cell_type, cell.source, json.dumps(meta, sort_keys=True)


@pytest.mark.parametrize("aid", IDS)
def test_release_in_sync_with_sources(aid, regenerated):
    committed = _nb(REL / aid / f"{aid}.ipynb")
    fresh = _nb(regenerated / aid / f"{aid}.ipynb")
    assert len(committed.cells) == len(fresh.cells)
    for i, (a, b) in enumerate(zip(committed.cells, fresh.cells)):
        assert _strip(a) == _strip(b), f"{aid} cell {i} differs: run `python scripts/generate_release.py`"


@pytest.mark.parametrize("aid", IDS)
def test_no_leaks_in_release(aid):
    nb = _nb(REL / aid / f"{aid}.ipynb")
    text = "\n".join(c.source for c in nb.cells)
    for forbidden in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "run_check", "gmmcourse.grading"):
        assert forbidden not in text, f"{forbidden!r} leaked into exercises/{aid}"
    sol = _nb(SOL / aid / f"{aid}.ipynb")
    public = "\n".join(re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END (SOLUTION|HIDDEN TESTS)", "", c.source, flags=re.S)
                       for c in sol.cells)
    for c in sol.cells:  # every solution body is gone
        for body in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", c.source, re.S):
            lines = [ln.strip() for ln in body.splitlines() if len(ln.strip()) > 25]
            for ln in lines:
                assert ln in public or ln not in text, f"solution line leaked: {ln}"
    for c in nb.cells:
        assert not c.get("outputs"), "release cells must have no outputs"


@pytest.mark.parametrize("aid", IDS)
def test_grade_ids_stable_and_parts_match(aid):
    sol = _grade_cells(_nb(SOL / aid / f"{aid}.ipynb"))
    rel = _grade_cells(_nb(REL / aid / f"{aid}.ipynb"))
    assert sol == rel
    auto = {g: p for g, (p, typ, is_sol) in sol.items() if typ == "code" and not is_sol}
    parts = {p.grade_id: p.points for p in ASSIGNMENTS[aid].parts}
    assert parts == auto
    assert ASSIGNMENTS[aid].notebook == f"{aid}.ipynb"
    # hidden tests of every autograded cell call the trusted check of the same grade_id
    for c in _nb(SOL / aid / f"{aid}.ipynb").cells:
        m = c.metadata.get("nbgrader", {})
        if m.get("grade") and c.cell_type == "code":
            assert f'run_check("{aid}", "{m["grade_id"]}", globals())' in c.source


EXPECTED_GRADE_IDS = {
    "categorization": ["categorize_basic", "categorize_stable", "bento_425_equal", "bento_425_unequal", "bento_425_outlier"],
    "coffee_blends": ["coffee_model_density", "coffee_model_simulate", "coffee_draws_format", "coffee_posterior_means",
                      "coffee_posterior_weights", "coffee_posterior_sds", "coffee_assignments"],
    "uncertainty": ["bento_em_fit", "bento_point_labels", "bento_posterior_probs", "bento_posterior_means", "bento_ambiguity"],
    "dpmm": ["crp_predictive", "gibbs_conditional", "gibbs_conditional_stable", "dpmm_num_clusters"],
}


def test_grade_ids_frozen():
    assert {a: [p.grade_id for p in ASSIGNMENTS[a].parts] for a in IDS} == EXPECTED_GRADE_IDS


def test_one_module_per_assignment():
    """Each assignment is one module named for its id, holding its parts, inputs, reference,
    export functions and checks; the registry is what the modules define, nothing more."""
    import importlib
    import pkgutil

    from gmmcourse.grading import assignments as pkg

    mods = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    assert mods == IDS
    for aid in IDS:
        mod = importlib.import_module(f"gmmcourse.grading.assignments.{aid}")
        a = mod.ASSIGNMENT
        assert a is ASSIGNMENTS[aid] and a.id == aid
        assert a.packages and a.precision
        for fn in (a.reference, *(getattr(p.export, "func", p.export) for p in a.parts),
                   *(p.check for p in a.parts)):
            assert getattr(fn, "__wrapped__", fn).__module__ == mod.__name__, (aid, fn)


def _export_reads_a_module_global(student, inputs):
    return IDS  # a name of this module: the student's kernel does not have it


def test_export_functions_run_in_the_kernel_alone():
    """An export function may use only the kernel-side helpers, builtins, its arguments and its
    own imports: anything else is refused when the part is defined, not in the sandbox."""
    import builtins
    import functools

    from gmmcourse.grading.assignments import categorization
    from gmmcourse.grading.spec import Part, export_code

    with pytest.raises(TypeError, match="IDS"):
        Part("x", 1.0, _export_reads_a_module_global, lambda a, c: None)

    def closure(student, inputs):
        return IDS

    with pytest.raises(TypeError, match="module-level"):
        export_code(closure)
    # the generated code runs in a bare namespace (as in the kernel) and calls the student's function
    code = export_code(functools.partial(categorization.export_categorize, key="cases"))
    ns = {"__builtins__": builtins, "inputs": {"cases": [dict(x=[1.0], weights=[1.0], means=[0.0], sds=[1.0])]},
          "categorize": lambda x, w, m, s: [[0.25]]}
    exec(compile(code, "<export>", "exec"), ns)
    assert ns["answer"] == [[[0.25]]]
    # a missing name is reported as the notebook would (the check turns it into feedback)
    ns = {"__builtins__": builtins, "inputs": {}}
    exec(compile(export_code(functools.partial(categorization.export_names, names=["p_tonkatsu_425"])),
                 "<export>", "exec"), ns)
    assert ns["answer"] == {"error": "NameError: name 'p_tonkatsu_425' is not defined"}


def _prior_phrases(prior, latex: bool) -> list[str]:
    conc = ", ".join([f"{prior.concentration:g}"] * prior.k)
    loc, scale = float(np.asarray(prior.mean_loc)[0]), float(prior.mean_scale)
    if latex:
        return [f"Dirichlet}}({conc})", f"N({loc:g}, {scale:g})",
                f"\\text{{shape }} {prior.sd_shape:g}, \\text{{rate }} {prior.sd_rate:g}"]
    return [f"Dirichlet({conc})", f"Normal({loc:g}, {scale:g})", f"Gamma(shape {prior.sd_shape:g}, rate {prior.sd_rate:g})"]


def test_notebook_priors_are_the_models_priors():
    """The priors a notebook states (in its text and in its given constants) are
    gmmcourse.models' priors, which the reference posteriors use."""
    from gmmcourse.models import BENTO_PRIOR, COFFEE_PRIOR

    cb = _nb(SOL / "coffee_blends" / "coffee_blends.ipynb")
    text = "\n".join(c.source for c in cb.cells)
    for phrase in _prior_phrases(COFFEE_PRIOR, latex=True):
        assert phrase in text, phrase
    setup = next(c.source for c in cb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    consts = {}
    exec("\n".join(l for l in setup.splitlines() if re.match(r"^(MEAN_|SD_)[A-Z_, ]* = [-0-9., ]+(#.*)?$", l)), consts)
    assert (consts["MEAN_LOC"], consts["MEAN_SCALE"]) == (float(COFFEE_PRIOR.mean_loc[0]), COFFEE_PRIOR.mean_scale)
    assert (consts["SD_SHAPE"], consts["SD_RATE"]) == (COFFEE_PRIOR.sd_shape, COFFEE_PRIOR.sd_rate)
    given = re.findall(r"shape=([0-9.]+), rate=([0-9.]+)", text)
    assert given and all((float(a), float(b)) == (COFFEE_PRIOR.sd_shape, COFFEE_PRIOR.sd_rate) for a, b in given)
    un = "\n".join(c.source for c in _nb(SOL / "uncertainty" / "uncertainty.ipynb").cells)
    for phrase in _prior_phrases(BENTO_PRIOR, latex=False):
        assert phrase in un, phrase


# ----------------------------------------------------------------------------- categorization

CAT = "categorization"


@pytest.fixture(scope="module")
def cat_ns():
    return cat_corpus.base_namespace()


def test_categorization_correct(cat_ns):
    for p in ASSIGNMENTS[CAT].parts:
        v = score(CAT, p.grade_id, cat_ns)
        assert v.fraction == 1.0, (p.grade_id, v)


def test_categorization_wrong_answers(cat_ns):
    from scipy.stats import norm

    ns = dict(cat_ns)

    def naive(x, weights, means, sds):  # no log-sum-exp
        d = np.asarray(weights) * norm.pdf(np.asarray(x)[:, None], means, sds)
        return d / d.sum(axis=1, keepdims=True)

    ns["categorize"] = naive
    assert score(CAT, "categorize_basic", ns).fraction == 1.0
    assert score(CAT, "categorize_stable", ns).fraction == 0.0

    def ignores_weights(x, weights, means, sds):
        return cat_ns["categorize"](x, np.ones(len(weights)) / len(weights), means, sds)

    ns["categorize"] = ignores_weights
    v = score(CAT, "categorize_basic", ns)
    assert v.fraction == 0.0 and "weights" in v.message  # every case depends on the weights (issue 9)
    assert score(CAT, "categorize_stable", ns).fraction == 1.0  # charged once, with the right advice

    def variance(x, weights, means, sds):
        return cat_ns["categorize"](x, weights, means, np.asarray(sds) ** 2)

    ns["categorize"] = variance
    v = score(CAT, "categorize_basic", ns)
    assert v.fraction == 0.0 and "variance" in v.message
    assert score(CAT, "categorize_stable", ns).fraction == 1.0
    ns["categorize"] = lambda *a: "not an array"
    assert score(CAT, "categorize_basic", ns).fraction == 0.0
    ns.update(p_tonkatsu_425=0.5, log_odds_425_unequal=-cat_ns["log_odds_425_unequal"], log_pred_425=float("nan"))
    assert score(CAT, "bento_425_equal", ns).fraction == 0.0
    assert score(CAT, "bento_425_unequal", ns).fraction == 0.5
    assert score(CAT, "bento_425_outlier", ns).fraction == 0.0
    ns.pop("log_pred_500")
    assert score(CAT, "bento_425_outlier", ns).fraction == 0.0


# ----------------------------------------------------------------------------- coffee_blends

CB = "coffee_blends"


@pytest.fixture(scope="module")
def sampler_ns():
    """The solutions' numpy Gibbs sampler (independent of gmmcourse.gibbs)."""
    return cb_corpus.sampler_namespace()


POSTERIOR_PARTS = ["coffee_posterior_means", "coffee_posterior_weights", "coffee_posterior_sds", "coffee_assignments"]


def test_coffee_posterior_correct_any_order(sampler_ns):
    ns = dict(sampler_ns)
    ns.update(cb_corpus.coffee_answers(sampler_ns, seed=11, chains=5, samples=1200, perm=(2, 0, 1)))
    for gid in POSTERIOR_PARTS:
        v = score(CB, gid, ns)
        assert v.fraction == 1.0, (gid, v)
    # labels in another order break only the "sorted by mean" format requirement
    assert score(CB, "coffee_draws_format", ns).fraction == 0.5


def test_coffee_posterior_wrong_answers(sampler_ns):
    # sampler_ns holds the solution's (right) update functions: parts that also grade one of
    # them keep that half when only the draws are wrong
    def wrong(gid):
        return 0.5 if gid in ("coffee_posterior_means", "coffee_posterior_weights", "coffee_assignments") else 0.0

    ns = dict(sampler_ns)
    ns.update(cb_corpus.coffee_answers(sampler_ns, seed=5, chains=4, samples=200))
    for gid in POSTERIOR_PARTS[:3] + ["coffee_draws_format"]:
        assert score(CB, gid, ns).fraction == wrong(gid), gid  # too few samples
    ns.update(cb_corpus.coffee_answers(sampler_ns, seed=6, variance=True))
    assert score(CB, "coffee_posterior_sds", ns).fraction == 0.0
    assert score(CB, "coffee_posterior_means", ns).fraction == 1.0
    ns.update(cb_corpus.coffee_answers(sampler_ns, seed=7, mean_scale=3.0))  # wrong prior
    assert score(CB, "coffee_posterior_means", ns).fraction == wrong("coffee_posterior_means")
    ns = dict(sampler_ns)
    ns.update(cb_corpus.coffee_answers(sampler_ns, seed=8))
    ns["coffee_summary"] = dict(ns["coffee_summary"], means=ns["coffee_summary"]["means"] + 1.0)  # not the draws' mean
    assert score(CB, "coffee_posterior_means", ns).fraction == wrong("coffee_posterior_means")
    ns["coffee_assignment_probs"] = np.full((30, 3), 1 / 3)
    assert score(CB, "coffee_assignments", ns).fraction == wrong("coffee_assignments")
    del ns["coffee_draws"]
    assert score(CB, "coffee_posterior_weights", ns).fraction == wrong("coffee_posterior_weights")
    for f in ("sample_z", "sample_weights", "sample_means"):
        del ns[f]
    assert score(CB, "coffee_posterior_weights", ns).fraction == 0.0  # neither half


@pytest.mark.parametrize("variant,density,simulate", [
    ("correct", 1.0, 1.0), ("wrong_prior", 0.0, 0.0), ("variance", 0.0, 0.0), ("ignores_weights", 0.0, 1.0),
])
def test_coffee_model_checks(variant, density, simulate):
    ns = cb_corpus.model_namespace(variant)
    assert score(CB, "coffee_model_density", ns).fraction == density
    assert score(CB, "coffee_model_simulate", ns).fraction == simulate
    assert score(CB, "coffee_model_density", {}).fraction == 0.0  # missing model


# ----------------------------------------------------------------------------- uncertainty

UN = "uncertainty"


@pytest.fixture(scope="module")
def unc_ns():
    return unc_corpus.base_namespace()


def test_uncertainty_correct(unc_ns, sampler_ns):
    for p in ASSIGNMENTS[UN].parts:
        v = score(UN, p.grade_id, unc_ns)
        assert v.fraction == 1.0, (p.grade_id, v)
    # an independent sampler (the coffee solutions' numpy Gibbs sampler), another seed, more chains
    ns = dict(unc_ns)
    draws, probs = sampler_ns["run_gibbs"](unc_ns["BENTO_WEIGHTS"], 2, 400.0, 50.0, num_chains=6, num_samples=1000, seed=99)
    ns["bento_draws"] = draws
    ns["bento_means_mean"] = draws["means"].mean(axis=(0, 1))
    ns["bento_means_sd"] = draws["means"].std(axis=(0, 1), ddof=1)
    ns["bento_assignment_probs"] = probs
    for gid in ("bento_posterior_means", "bento_posterior_probs"):
        assert score(UN, gid, ns).fraction == 1.0, gid
    # the notebook fixes component 0 = lighter: the other order loses the points (issue 9, item 3)
    ns["bento_draws"] = {k: v[..., ::-1] for k, v in draws.items()}
    ns["bento_means_mean"] = ns["bento_draws"]["means"].mean(axis=(0, 1))
    ns["bento_means_sd"] = ns["bento_draws"]["means"].std(axis=(0, 1), ddof=1)
    ns["bento_assignment_probs"] = probs[:, ::-1]
    ns["bento_point_labels"] = 1 - np.asarray(unc_ns["bento_point_labels"])
    ns["bento_em"] = {k: v[::-1] for k, v in unc_ns["bento_em"].items()}
    for gid in ("bento_posterior_means", "bento_posterior_probs", "bento_point_labels", "bento_em_fit"):
        v = score(UN, gid, ns)
        assert v.fraction == 0.0 and "lighter" in v.message, (gid, v)


def test_uncertainty_wrong_answers(unc_ns, sampler_ns):
    ns = dict(unc_ns)
    ns["bento_em"] = dict(unc_ns["bento_em"], sds=unc_ns["bento_em"]["sds"] ** 2)  # variance for sd
    assert score(UN, "bento_em_fit", ns).fraction == 0.5
    ns["bento_em"] = dict(unc_ns["bento_em"], weights=np.array([0.5, 0.5]), sds=np.array([1.0, 1.0]))
    assert score(UN, "bento_em_fit", ns).fraction == 0.0
    ns["bento_point_labels"] = np.zeros(20, dtype=int)
    assert score(UN, "bento_point_labels", ns).fraction == 0.0
    draws = {k: v[:, :300] for k, v in unc_ns["bento_draws"].items()}  # too few samples
    ns.update(bento_draws=draws, bento_means_mean=draws["means"].mean(axis=(0, 1)),
              bento_means_sd=draws["means"].std(axis=(0, 1), ddof=1))
    assert score(UN, "bento_posterior_means", ns).fraction == 0.0
    ns = dict(unc_ns)
    ns["bento_means_sd"] = unc_ns["bento_means_sd"] ** 2  # variance reported as sd: the sd's half is lost
    v = score(UN, "bento_posterior_means", ns)
    assert v.fraction == 0.5 and "bento_means_sd" in v.message and "bento_means_mean" not in v.message
    # wrong prior: means ~ N(400, 2) pulls the posterior means
    draws, _ = sampler_ns["run_gibbs"](unc_ns["BENTO_WEIGHTS"], 2, 400.0, 2.0, num_chains=4, num_samples=1000, seed=4)
    ns.update(bento_draws=draws, bento_means_mean=draws["means"].mean(axis=(0, 1)),
              bento_means_sd=draws["means"].std(axis=(0, 1), ddof=1))
    assert score(UN, "bento_posterior_means", ns).fraction < 1.0
    ns = dict(unc_ns, log_odds_425=-unc_ns["log_odds_425"], most_ambiguous=int(unc_ns["most_ambiguous"]))
    assert score(UN, "bento_ambiguity", ns).fraction == 0.5
    ns["most_ambiguous"] = "4"
    assert score(UN, "bento_ambiguity", ns).fraction == 0.0


def test_most_ambiguous_has_a_clear_margin():
    ref = ASSIGNMENTS[UN].reference()
    from gmmcourse.data import BENTO_WEIGHTS
    from scipy.stats import norm

    w, m, s = (np.asarray(a) for a in ref["em"])
    lj = np.log(w)[None, :] + norm.logpdf(BENTO_WEIGHTS[:, None], m, s)
    lo = np.sort(np.abs(lj[:, 1] - lj[:, 0]))
    assert lo[1] - lo[0] > 1.0


# ----------------------------------------------------------------------------- notebooks end to end
# The solutions earning full marks and the blank release earning none, executed for real, is
# tests/test_autograde_course.py (through the sandboxed grader and its CLI).


# ----------------------------------------------------------------------------- false-fail rate


def test_false_fail_rate_recorded():
    path = REPO_ROOT / "benchmarks" / "results" / "false_fail.json"
    if not path.exists():
        pytest.skip("run `python benchmarks/false_fail.py` first")
    res = json.loads(path.read_text())
    # bound: 3 parts x up to 3 numbers at z = Z_MC, allowing for se-estimation noise (x20)
    assert res["false_fail_rate"] <= max(res["bound"], 0.1)
