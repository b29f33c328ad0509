"""The `dpmm` assignment (issue 28), graded on a corpus of submissions.

Correct styles (loops with scipy per cluster, the solution's vectorised code, float32; the given
collapsed sampler with 4 or 8 chains, a blocked Gibbs sampler of the student's own, float32
draws) must get full marks; each typical mistake must lose exactly the points of the parts it
breaks, with a message naming it. Every part's export code runs on the submission in-process and
the trusted check grades the JSON it produces (as in tests/test_grading_fairness.py);
`test_sandboxed_grading` grades two submissions through the real sandboxed grader.
`benchmarks/dpmm_probe_rates.py` runs the function probes over many fresh draws.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gmmcourse.grading.assignments import ASSIGNMENTS  # noqa: E402
from gmmcourse.grading.assignments import dpmm as M  # noqa: E402
from test_exercises import SOL, _namespace, _nb, score  # noqa: E402
from test_grading_fairness import Case, verdict_ok  # noqa: E402

AID = "dpmm"
FUNCTION_PARTS = ("crp_predictive", "gibbs_conditional", "gibbs_conditional_stable")
CELLS = {"setup", "crp_solution", "conditional_solution", "sampler_given", "posterior_solution"}


# ----------------------------------------------------------------------------- students' functions


def crp_loop(counts, alpha):
    n = sum(int(c) for c in counts)
    return np.array([c / (n + alpha) for c in counts] + [alpha / (n + alpha)])


def crp_float32(counts, alpha):
    c = np.asarray(counts, np.float32)
    return np.append(c, np.float32(alpha)) / (c.sum() + np.float32(alpha))


def crp_mistake(kind):
    def crp_probs(counts, alpha):
        c = [float(v) for v in counts]
        if kind == "alpha_on_tables":
            w = [v + alpha for v in c] + [alpha]
        else:  # no_new_table
            w = c
        return np.array(w) / sum(w)
    return crp_probs


def conditional_loop(mistake=None):
    """A per-cluster loop with scipy.stats.t (the style the text suggests), or one mistake."""
    from scipy.stats import norm, t

    def log_predictive(x_new, xs, prior):
        m0, k0, a0, b0 = prior
        n = len(xs)
        mean = sum(xs) / n if n else 0.0
        kn, an = k0 + n, a0 + n / 2
        mn = (k0 * m0 + n * mean) / kn
        bn = b0 + 0.5 * sum((v - mean) ** 2 for v in xs) + k0 * n * (mean - m0) ** 2 / (2 * kn)
        return t.logpdf(x_new, 2 * an, loc=mn, scale=math.sqrt(bn * (kn + 1) / (an * kn)))

    def log_conditional(i, x, z, alpha, prior):
        x, z = [float(v) for v in x], [int(v) for v in z]
        others = [j for j in range(len(x)) if j != i or mistake == "counts_include_i"]
        logw = []
        for c in sorted({z[j] for j in others}):
            xs = [x[j] for j in others if z[j] == c]
            lp = log_predictive(x[i], [] if mistake == "prior_predictive_for_existing" else xs, prior)
            logw.append(math.log(len(xs) * (alpha if mistake == "alpha_swapped" else 1.0)) + lp)
        if mistake != "no_new_cluster":
            m0, k0, a0, b0 = prior
            new = (norm.logpdf(x[i], m0, math.sqrt(b0 / (a0 - 1))) if mistake == "plugin_for_new"
                   else log_predictive(x[i], [], prior))
            logw.append((0.0 if mistake == "alpha_swapped" else math.log(alpha)) + new)
        logw = np.array(logw)
        if mistake == "unnormalised":
            return logw
        if mistake == "linear_space":
            p = np.exp(logw)
            return np.log(p / p.sum())
        top = logw.max()
        return logw - top - math.log(float(np.sum(np.exp(logw - top))))
    return log_conditional


def conditional_float32(i, x, z, alpha, prior):
    """The solution's vectorised computation, every array in float32."""
    from scipy.special import gammaln

    f = np.float32
    x, z = np.asarray(x, f), np.asarray(z)
    m0, k0, a0, b0 = (f(v) for v in prior)
    others = np.arange(x.size) != i
    xo = x[others]
    _, idx = np.unique(z[others], return_inverse=True)
    n = np.bincount(idx).astype(f)
    mean = (np.bincount(idx, weights=xo) / n).astype(f)
    ss = np.bincount(idx, weights=(xo - mean[idx]) ** 2).astype(f)
    n, mean, ss = np.append(n, f(0)), np.append(mean, f(0)), np.append(ss, f(0))
    kn, an = k0 + n, a0 + n / f(2)
    mn = (k0 * m0 + n * mean) / kn
    bn = b0 + ss / f(2) + k0 * n * (mean - m0) ** 2 / (f(2) * kn)
    df, scale = f(2) * an, np.sqrt(bn * (kn + f(1)) / (an * kn))
    lp = (gammaln((df + f(1)) / f(2)) - gammaln(df / f(2)) - f(0.5) * np.log(df * f(np.pi)) - np.log(scale)
          - (df + f(1)) / f(2) * np.log1p(((f(x[i]) - mn) / scale) ** 2 / df))
    logw = (np.log(np.append(n[:-1], f(alpha))) + lp).astype(f)
    top = logw.max()
    return logw - top - np.log(np.sum(np.exp(logw - top)))


def correct_styles(sol: dict) -> dict:
    """name -> (crp_probs, log_conditional): the correct styles of the corpus."""
    return {"solution": (sol["crp_probs"], sol["log_conditional"]), "loops": (crp_loop, conditional_loop()),
            "float32": (crp_float32, conditional_float32)}


FUNCTION_MISTAKES = {
    # name -> (parts lost, replaced functions)
    "alpha_on_tables": ({"crp_predictive"}, {"crp_probs": crp_mistake("alpha_on_tables")}),
    "no_new_table": ({"crp_predictive"}, {"crp_probs": crp_mistake("no_new_table")}),
    **{k: ({"gibbs_conditional"}, {"log_conditional": conditional_loop(k)}) for k in M.COND_MISTAKES},
    "linear_space": ({"gibbs_conditional_stable"}, {"log_conditional": conditional_loop("linear_space")}),
}


# ----------------------------------------------------------------------------- samplers


def blocked_gibbs(x, alpha, prior, num_chains=4, num_samples=2000, num_warmup=500, k_max=20, seed=0):
    """Another valid sampler: Ishwaran and James's blocked Gibbs on k_max sticks (the truncation
    error is below 4 n exp(-(k_max - 1) / alpha) = 2e-7), vectorised over chains. Returns the
    labels (chains, samples, n)."""
    rng = np.random.default_rng(seed)
    m0, k0, a0, b0 = prior
    x = np.asarray(x, float)
    c, n = num_chains, x.size
    z = rng.integers(0, 3, (c, n))
    out = np.zeros((c, num_samples, n), dtype=int)
    ks = np.arange(k_max)
    for sweep in range(num_warmup + num_samples):
        onehot = z[..., None] == ks
        cnt = onehot.sum(1)
        mean = (onehot * x[None, :, None]).sum(1) / np.maximum(cnt, 1)
        ss = (onehot * (x[None, :, None] - mean[:, None, :]) ** 2).sum(1)
        kn, an = k0 + cnt, a0 + cnt / 2
        mn = (k0 * m0 + cnt * mean) / kn
        bn = b0 + ss / 2 + k0 * cnt * (mean - m0) ** 2 / (2 * kn)
        var = bn / rng.gamma(an)
        mu = mn + np.sqrt(var / kn) * rng.standard_normal((c, k_max))
        after = cnt[:, ::-1].cumsum(1)[:, ::-1] - cnt
        v = rng.beta(1 + cnt, alpha + after)
        v[:, -1] = 1.0
        logw = np.log(v) + np.concatenate([np.zeros((c, 1)), np.cumsum(np.log1p(-v[:, :-1]), 1)], 1)
        logits = logw[:, None, :] - 0.5 * np.log(var)[:, None, :] - 0.5 * (x[None, :, None] - mu[:, None, :]) ** 2 / var[:, None, :]
        g = logits - np.log(-np.log(rng.random(logits.shape)))  # Gumbel-max
        z = g.argmax(-1)
        if sweep >= num_warmup:
            out[:, sweep - num_warmup] = z
    return out


def num_clusters(labels):
    return np.array([[np.unique(d).size for d in chain] for chain in labels])


def answers(k, dtype=np.float64):
    k = np.asarray(k)
    return {"dpmm_num_clusters": k.astype(dtype),
            "dpmm_k_posterior": (np.bincount(k.ravel().astype(int), minlength=len(M.X) + 1) / k.size).astype(dtype)}


# ----------------------------------------------------------------------------- the corpus


def base_namespace() -> dict:
    return _namespace(AID, CELLS - {"posterior_solution"})


def sampler_runs(seed=0) -> dict:
    """The draws the corpus uses: the given sampler with the solution's conditional (8 chains),
    with a wrong conditional (4 chains), and a blocked Gibbs sampler of the student's own."""
    ns = base_namespace()
    x, a, pr = ns["X"], ns["ALPHA"], ns["PRIOR"]
    good = ns["run_sampler"](x, a, pr, num_chains=8, num_samples=1000, num_warmup=200, seed=seed)
    ns["log_conditional"] = conditional_loop("prior_predictive_for_existing")  # run_sampler reads this global
    bad = ns["run_sampler"](x, a, pr, num_chains=4, num_samples=1000, num_warmup=200, seed=seed + 1)
    return {"good": good, "bad": bad, "blocked": blocked_gibbs(x, a, pr, seed=seed + 2)}


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


# ----------------------------------------------------------------------------- the reference itself


def test_reference_conditional_is_the_partition_posteriors_ratio():
    """`dpmm.conditional` (the Student-t predictives) equals the ratio of the exact partition
    posteriors (`gmmcourse.dpmm`'s CRP law and cluster marginals) of each place for point i."""
    from gmmcourse.dpmm import DPPrior, crp_log_prob, log_marginal

    rng = np.random.default_rng(3)
    for shape in range(4):
        case = M._cond_case(rng, shape)
        i, x, z, alpha, prior = M._args(case)
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
        assert all(M._fair_crp(c) for c in inp["crp"])
        assert all(M._fair_cond(c) for c in inp["conditional"])
        assert all(M._fair_stable(c) for c in inp["stable"])
        assert len({c["i"] == -1 for c in inp["conditional"]}) == 1
    for c in M.FIXED_INPUTS["conditional"]:  # the fallback is fair too
        assert M._fair_cond(c), c
    for c in M.FIXED_INPUTS["crp"]:
        assert M._fair_crp(c), c


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
    setup = next(c.source for c in _nb(SOL / AID / f"{AID}.ipynb").cells
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
    src = _nb(SOL / AID / f"{AID}.ipynb")
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
