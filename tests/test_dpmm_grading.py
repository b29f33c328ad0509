"""The `dpmm` assignment (issue 28), graded on a corpus of submissions (benchmarks/corpus/dpmm.py).

Correct styles (loops with scipy per cluster, the solution's vectorised code, float32; the given
collapsed sampler with 4 or 8 chains, a blocked Gibbs sampler of the student's own, float32
draws) must get full marks; each typical mistake must lose exactly the points of the parts it
breaks, with a message naming it. Every part's export code runs on the submission in-process and
the trusted check grades the JSON it produces (as in tests/test_grading_fairness.py);
`test_sandboxed_grading` grades two submissions through the real sandboxed grader.
`benchmarks/dpmm_probe_rates.py` runs the function probes over many fresh draws and the
posterior part over many seeds of the students' sampler runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corpus.dpmm import (AID, FUNCTION_MISTAKES, SAMPLER_MISTAKES, answers, base_namespace, blocked_gibbs,
                         conditional_loop, correct_styles, gibbs_chains, num_clusters, sampler_runs)
from corpus.grading import SOL, Case, score, solution_notebook, verdict_ok
from gmmcourse.grading.assignments import ASSIGNMENTS
from gmmcourse.grading.assignments import dpmm as M

FUNCTION_PARTS = ("crp_predictive", "gibbs_conditional", "gibbs_conditional_stable")


# ----------------------------------------------------------------------------- the corpus


def corpus(runs: dict) -> list[Case]:
    base = base_namespace()
    parts = tuple(p.grade_id for p in ASSIGNMENTS[AID].parts)
    k8 = num_clusters(runs["good"])
    cases = []
    for name, (crp, cond) in correct_styles(base).items():
        cases.append(Case(f"functions_{name}", AID, dict(base, crp_probs=crp, log_conditional=cond), FUNCTION_PARTS))
    cases += [
        Case("sampler_4_chains", AID, dict(base, **answers(k8[:4])), parts),
        Case("sampler_8_chains", AID, dict(base, **answers(k8)), parts),
        Case("sampler_float32", AID, dict(base, **answers(k8[4:], np.float32)), parts),
        Case("blocked_gibbs", AID, dict(base, **answers(num_clusters(runs["blocked"]))), parts),
    ]
    for name, (lost, fns) in FUNCTION_MISTAKES.items():
        advice = M.ADVICE.get(name, "log space")
        cases.append(Case(name, AID, dict(base, **fns), FUNCTION_PARTS, frozenset(lost),
                          says={p: advice for p in lost}))
    k_max_label = runs["good"][:4].max(-1) + 1  # K as the largest label + 1: labels have gaps
    stuck = k8.copy()
    stuck[7] = 1 + (np.arange(k8.shape[1]) % 2)  # one chain alternating between 1 and 2 clusters
    wrong_share = answers(k8[:4])
    wrong_share["dpmm_k_posterior"] = answers(k8[:1])["dpmm_k_posterior"]  # one chain's share only
    bad = frozenset({"dpmm_num_clusters"})
    cases += [
        Case("k_from_largest_label", AID, dict(base, **answers(k_max_label)), ("dpmm_num_clusters",), bad,
             says={"dpmm_num_clusters": "distinct labels"}),
        Case("stuck_chain", AID, dict(base, **answers(stuck)), ("dpmm_num_clusters",), bad,
             says={"dpmm_num_clusters": "not converged"}),
        Case("share_of_one_chain", AID, dict(base, **wrong_share), ("dpmm_num_clusters",), bad,
             says={"dpmm_num_clusters": "share of your draws"}),
        Case("too_few_draws", AID, dict(base, **answers(k8[:2, :500])), ("dpmm_num_clusters",), bad,
             says={"dpmm_num_clusters": "Too few draws"}),
        Case("sampler_with_prior_predictive_for_existing", AID,
             dict(base, log_conditional=conditional_loop("prior_predictive_for_existing"),
                  **answers(num_clusters(runs["bad"]))),
             parts, frozenset({"gibbs_conditional", "dpmm_num_clusters"}),
             says={"gibbs_conditional": "posterior predictive", "dpmm_num_clusters": "differs from the exact one"}),
    ]
    return cases


@pytest.fixture(scope="module")
def runs():
    return sampler_runs(0)


@pytest.fixture(scope="module")
def cases(runs):
    return corpus(runs)


def test_corpus(cases):
    """Every correct style gets full marks; every mistake loses exactly its parts, named."""
    wrong = {c.name: verdict_ok(c, {gid: score(AID, gid, c.ns) for gid in c.parts}) for c in cases}
    assert not any(wrong.values()), {k: v for k, v in wrong.items() if v}


def test_the_corpus_names_every_listed_mistake(cases):
    names = {c.name for c in cases}
    assert set(M.CRP_MISTAKES) | set(M.COND_MISTAKES) | {"linear_space"} <= names


def test_vectorised_sampler_is_the_given_sampler():
    """`gibbs_chains` (the corpus's and the benchmark's draws) reproduces the notebook's
    `run_sampler` draw for draw, with the solution's conditional and with each wrong one."""
    ns = base_namespace()
    for mistake in (None, *SAMPLER_MISTAKES):
        if mistake:
            ns["log_conditional"] = conditional_loop(mistake)  # run_sampler reads this global
        want = np.stack([ns["run_sampler"](M.X, M.ALPHA, M.PRIOR, num_chains=2, num_samples=30, num_warmup=5, seed=s)
                         for s in (3, 4)])
        got = gibbs_chains(M.X, M.ALPHA, M.PRIOR, [3, 4], num_chains=2, num_samples=30, num_warmup=5, mistake=mistake)
        assert np.array_equal(got, want), mistake


FRESH_SEEDS = range(10_000, 10_010)
"""Seeds used nowhere else (the corpus: 0-2; benchmarks/dpmm_probe_rates.py: 0-199)."""


@pytest.mark.slow
def test_fresh_seeds_full_marks_and_mistakes_lose_their_points():
    """At ten seeds of their own (sampler runs and the function probes drawn afresh), every
    correct style gets full marks on every part, and each mistake loses exactly its parts with
    its message: the functions' mistakes, a sampler run with a wrong conditional (which loses
    the conditional and the posterior), K as the largest label + 1, the share of one chain,
    the shares shifted by one, too few draws."""
    base = base_namespace()
    parts = tuple(p.grade_id for p in ASSIGNMENTS[AID].parts)
    post = frozenset({"dpmm_num_clusters"})
    labels = gibbs_chains(M.X, M.ALPHA, M.PRIOR, FRESH_SEEDS, num_chains=8)
    wrong = gibbs_chains(M.X, M.ALPHA, M.PRIOR, FRESH_SEEDS, mistake="prior_predictive_for_existing")
    blocked = blocked_gibbs(M.X, M.ALPHA, M.PRIOR, num_chains=4 * len(FRESH_SEEDS), seed=FRESH_SEEDS[0])
    bad = {}
    for r, seed in enumerate(FRESH_SEEDS):
        M.inputs.redraw()  # fresh function probes, as every grading run draws
        k = num_clusters(labels[r])
        shifted, one_chain = answers(k[:4]), answers(k[:4])
        shifted["dpmm_k_posterior"] = np.append(shifted["dpmm_k_posterior"][1:], 0.0)
        one_chain["dpmm_k_posterior"] = answers(k[:1])["dpmm_k_posterior"]
        cases = [Case("4_chains", AID, dict(base, **answers(k[:4])), parts),
                 Case("8_chains", AID, dict(base, **answers(k)), parts),
                 Case("float32", AID, dict(base, **answers(k[4:], np.float32)), parts),
                 Case("blocked_gibbs", AID, dict(base, **answers(num_clusters(blocked[4 * r:4 * r + 4]))), parts)]
        for name, (crp, cond) in correct_styles(base).items():
            cases.append(Case(f"functions_{name}", AID, dict(base, crp_probs=crp, log_conditional=cond),
                              FUNCTION_PARTS))
        for name, (lost, fns) in FUNCTION_MISTAKES.items():
            cases.append(Case(name, AID, dict(base, **fns), FUNCTION_PARTS, frozenset(lost),
                              says={p: M.ADVICE.get(name, "log space") for p in lost}))
        cases += [
            Case("sampler_with_prior_predictive_for_existing", AID,
                 dict(base, log_conditional=conditional_loop("prior_predictive_for_existing"),
                      **answers(num_clusters(wrong[r]))), parts, frozenset({"gibbs_conditional", "dpmm_num_clusters"}),
                 says={"gibbs_conditional": "posterior predictive", "dpmm_num_clusters": "differs from the exact one"}),
            Case("k_from_largest_label", AID, dict(base, **answers(labels[r, :4].max(-1) + 1)), parts, post,
                 says={"dpmm_num_clusters": "distinct labels"}),
            Case("share_of_one_chain", AID, dict(base, **one_chain), parts, post,
                 says={"dpmm_num_clusters": "share of your draws"}),
            Case("shares_shifted_by_one", AID, dict(base, **shifted), parts, post,
                 says={"dpmm_num_clusters": "share of your draws"}),
            Case("too_few_draws", AID, dict(base, **answers(k[:2, :500])), parts, post,
                 says={"dpmm_num_clusters": "Too few draws"}),
        ]
        for c in cases:
            wrong_parts = verdict_ok(c, {gid: score(AID, gid, c.ns) for gid in c.parts})
            if wrong_parts:
                bad[(seed, c.name)] = wrong_parts
    assert not bad, bad


# ----------------------------------------------------------------------------- the reference itself


def test_reference_conditional_is_the_partition_posteriors_ratio():
    """`dpmm.conditional` (the Student-t predictives) equals the ratio of the exact partition
    posteriors (`gmmcourse.dpmm`'s CRP law and cluster marginals) of each place for point i."""
    from gmmcourse.dpmm import DPPrior, crp_log_prob, log_marginal

    rng = np.random.default_rng(3)
    for shape in range(4):
        case = M.cond_case(rng, shape)
        i, x, z, alpha, prior = M.cond_args(case)
        x, z = np.asarray(x), np.asarray(z)
        pr = DPPrior(alpha, *prior)
        others = np.arange(x.size) != i
        opts = list(np.unique(z[others])) + [z.max() + 1]
        logs = []
        for c in opts:
            zz = z.copy()
            zz[i] = c
            blocks = [x[zz == b] for b in np.unique(zz)]
            lm = sum(float(log_marginal(float(b.size), float(b.sum()), float((b * b).sum()), pr)) for b in blocks)
            logs.append(crp_log_prob([b.size for b in blocks], alpha) + lm)
        logs = np.array(logs)
        want = np.exp(logs - logs.max())
        want /= want.sum()
        np.testing.assert_allclose(np.exp(M.conditional("correct", i, x, z, alpha, prior)), want, rtol=1e-8, atol=1e-12)


def test_every_probe_is_changed_by_every_mistake():
    """On fresh draws, every mistake changes every probe state (so that it loses its part and
    gets its advice); the stable state underflows in float64 and has no certain answer."""
    for _ in range(3):
        M.inputs.redraw()
        inp = M.inputs()
        assert all(M.fair_crp(c) for c in inp["crp"])
        assert all(M.fair_cond(c) for c in inp["conditional"])
        assert all(M.fair_stable(c) for c in inp["stable"])
        assert len({c["i"] == -1 for c in inp["conditional"]}) == 1
    for c in M.FIXED_INPUTS["conditional"]:  # the fallback is fair too
        assert M.fair_cond(c), c
    for c in M.FIXED_INPUTS["crp"]:
        assert M.fair_crp(c), c


def test_probes_are_drawn_fresh_each_run():
    M.inputs.redraw()
    first = json.dumps(M.inputs()["conditional"])
    M.inputs.redraw()
    assert json.dumps(M.inputs()["conditional"]) != first


def test_one_probe_state_has_point_i_alone():
    """The shape where point i's cluster vanishes among the others is always probed."""
    inp = M.inputs()
    alone = [c for c in inp["conditional"] if sum(1 for v in c["z"] if v == c["z"][c["i"]]) == 1]
    assert alone


def test_cells_and_notebook_constants():
    """The cells of K compared are the exact posterior's, and the notebook states the module's
    data, alpha and prior."""
    assert M.CELLS == M.cells()
    setup = next(c.source for c in solution_notebook(AID).cells
                 if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    ns: dict = {}
    exec(setup, ns)
    assert tuple(ns["X"]) == M.X and ns["ALPHA"] == M.ALPHA and tuple(ns["PRIOR"]) == M.PRIOR


def test_probe_rates_stated_and_recorded():
    """The probes' false-fail rate and power: measured (benchmarks/dpmm_probe_rates.py), and the
    numbers the notebook states are the recorded ones."""
    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "dpmm_probe_rates.json").read_text())
    r = M.PROBE_RATES
    assert res["draws"] == r["draws"] and len(res["false_fail"]) == r["styles"] and len(res["power"]) == r["mistakes"]
    assert all(v["failed"] == 0 for v in res["false_fail"].values())
    assert round(max(v["upper95"] for v in res["false_fail"].values()), 3) <= r["false_fail_upper95"]
    assert min(v["caught"] / v["draws"] for v in res["power"].values()) >= r["power_min"]
    text = M.ASSIGNMENT.precision
    assert f"{r['draws']:,} draws" in text and f"{100 * r['false_fail_upper95']:.1f} %" in text


def test_posterior_rates_stated_and_recorded():
    """The posterior part's false-fail rate over seeds of the sampler run and its catch rates:
    measured (benchmarks/dpmm_probe_rates.py posterior), and the notebook states the recorded
    numbers."""
    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                      / "dpmm_posterior_rates.json").read_text())
    q = M.POSTERIOR_RATES
    assert res["seeds"] == q["seeds"] >= 100 and len(res["false_fail"]) == q["styles"]
    assert all(v["failed"] == 0 and v["seeds"] == q["seeds"] for v in res["false_fail"].values())
    assert round(max(v["upper95"] for v in res["false_fail"].values()), 3) <= q["false_fail_upper95"]
    assert {f"sampler_{m}" for m in SAMPLER_MISTAKES} <= set(res["power"])
    for name, v in res["power"].items():
        want = q["weak_caught"] if name == q["weak"] else v["seeds"]
        assert v["caught"] == want and v["seeds"] == (q["mistake_seeds"] if name.startswith("sampler_") else q["seeds"]), name
    text = M.ASSIGNMENT.precision
    assert f"{q['seeds']} seeds" in text and f"{100 * q['false_fail_upper95']:.1f} %" in text
    assert f"at {q['weak_caught']} of {q['mistake_seeds']}" in text


# ----------------------------------------------------------------------------- through the sandbox


STYLES_CELL = '''
dpmm_labels = run_sampler(X, ALPHA, PRIOR, num_chains=6, num_samples=1000, num_warmup=200, seed=3)
k = np.array([[np.unique(draw).size for draw in chain] for chain in dpmm_labels])
dpmm_num_clusters = k.astype(np.float32)
dpmm_k_posterior = (np.bincount(k.ravel(), minlength=X.size + 1) / k.size).astype(np.float32)
'''
MISTAKES_CELL = '''
def crp_probs(counts, alpha):
    counts = np.asarray(counts, dtype=float)
    w = np.append(counts + alpha, alpha)
    return w / w.sum()

_right = log_conditional

def log_conditional(i, x, z, alpha, prior):
    lp = _right(i, x, z, alpha, prior)[:-1]  # no new cluster
    return lp - np.log(np.sum(np.exp(lp)))
'''


@pytest.mark.slow
def test_sandboxed_grading(tmp_path):
    """Two submissions through the real sandboxed grader: the solution with 6 chains and float32
    draws (full marks), and one whose crp_probs puts alpha on every table and whose
    log_conditional forgets the new cluster (its draws then never open a cluster): those
    parts lose their points, with the advice, and the stable part keeps its point."""
    import shutil

    import nbformat

    from gmmcourse.grading.engine import autograde

    assert shutil.which("bwrap"), "this test needs bubblewrap (apt-get install -y bubblewrap)"
    src = solution_notebook(AID)
    course = tmp_path / "course"
    for student, edit in (("styles", "styles"), ("mistakes", "mistakes")):
        nb = nbformat.from_dict(json.loads(json.dumps(src)))
        for c in nb.cells:
            if c.metadata.get("nbgrader", {}).get("grade_id") == "posterior_solution" and edit == "styles":
                c.source = STYLES_CELL
            if c.metadata.get("nbgrader", {}).get("grade_id") == "conditional_solution" and edit == "mistakes":
                c.source += "\n" + MISTAKES_CELL
        d = course / "submitted" / student / AID
        d.mkdir(parents=True)
        nbformat.write(nb, d / f"{AID}.ipynb")
    autograde([AID], course, registry={AID: ASSIGNMENTS[AID]}, source_root=SOL, serial=True, progress=False,
              warm_cache=False, echo=lambda s: None)
    import sqlite3

    con = sqlite3.connect(course / "gradebook.db")
    rows = con.execute(
        """select student.id, base_cell.name, grade.auto_score from grade
           join submitted_notebook on grade.notebook_id = submitted_notebook.id
           join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id
           join student on submitted_assignment.student_id = student.id
           join base_cell on grade.cell_id = base_cell.id""").fetchall()
    con.close()
    got = {(s, c): v for s, c, v in rows if v is not None}
    points = {p.grade_id: p.points for p in ASSIGNMENTS[AID].parts}
    for gid, pts in points.items():
        assert got[("styles", gid)] == pts, (gid, got)
    # the stable part charges instability only: a mistake computed in log space keeps it
    want = {"crp_predictive": 0.0, "gibbs_conditional": 0.0, "gibbs_conditional_stable": 1.0,
            "dpmm_num_clusters": 0.0}
    for gid in points:
        assert got[("mistakes", gid)] == want[gid], (gid, got)
    page = (course / "feedback" / "mistakes" / AID / f"{AID}.html").read_text()
    import html

    text = html.unescape(page)
    assert M.ADVICE["alpha_on_tables"] in text and M.ADVICE["no_new_cluster"] in text
