"""Hidden `categorize` inputs are drawn fresh in every grading run (issue 23, item 6).

A submission once read all 7 hidden inputs and earned 4 points with a lookup table and no
`categorize`. Now each run draws new cases (`reference.fresh_inputs`): a table built from the
old fixed inputs (by value or by call order) earns nothing, a correct `categorize` earns full
marks on every draw, every draw keeps the fairness properties of the fixed cases, and the
regrade fingerprint hashes the generator, so a run with no change regrades no one.
"""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest

from gmmcourse.grading import checks as C
from gmmcourse.grading.assignments import categorization as cat
from gmmcourse.grading.assignments.categorization import ASSIGNMENT as A
from gmmcourse.grading.reference import cached, inputs_key

DRAWS = 5


def _correct(x, weights, means, sds):
    """A student's correct categorize (numpy and scipy, log space)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    x, weights, means, sds = (np.asarray(a, dtype=float) for a in (x, weights, means, sds))
    lj = np.log(weights)[None, :] + norm.logpdf(x[:, None], means[None, :], sds[None, :])
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def _old_answers() -> dict:
    """What a leak of the fixed inputs gave away: each fixed case and its exact answer."""
    return {key: [(c, _correct(*(np.asarray(c[k], dtype=float) for k in ("x", "weights", "means", "sds"))))
                  for c in cases] for key, cases in cat.FIXED_INPUTS.items()}


def _lookup_by_value():
    table = {json.dumps(np.asarray(c["x"], dtype=float).tolist()): ans
             for cases in _old_answers().values() for c, ans in cases}

    def categorize(x, weights, means, sds):
        return table[json.dumps(np.asarray(x, dtype=float).tolist())]
    return categorize


def _lookup_by_order():
    answers = [ans for key in ("categorize_basic", "categorize_stable") for _, ans in _old_answers()[key]]
    calls = iter(answers * 2)

    def categorize(x, weights, means, sds):
        return next(calls)
    return categorize


def _points(fn) -> dict[str, float]:
    """The categorize parts' verdicts for a student namespace holding ``fn`` (the exports run
    here as they run in the kernel, on this run's inputs, checked against this run's reference)."""
    ref, inp, out = A.reference(), json.loads(json.dumps(A.inputs())), {}
    for part in A.parts:
        if part.grade_id.startswith("categorize_"):
            answer = part.export.func({"categorize": fn}, inp, **part.export.keywords)
            out[part.grade_id] = part.check(json.loads(json.dumps(answer)), ref).fraction
    return out


@pytest.fixture
def redraw():
    yield A.inputs.redraw
    A.inputs.redraw()


def test_lookup_on_the_old_inputs_earns_nothing_and_categorize_earns_all(redraw):
    assert _lookup_by_value()(**{k: v for k, v in cat.FIXED_INPUTS["categorize_basic"][0].items()}) is not None
    seen = set()
    for _ in range(DRAWS):
        redraw()
        seen.add(json.dumps(A.inputs(), sort_keys=True))
        assert _points(_correct) == {"categorize_basic": 1.0, "categorize_stable": 1.0}
        assert _points(_lookup_by_value()) == {"categorize_basic": 0.0, "categorize_stable": 0.0}
        assert _points(_lookup_by_order()) == {"categorize_basic": 0.0, "categorize_stable": 0.0}
    assert len(seen) == DRAWS


def test_every_draw_is_as_fair_as_the_fixed_cases(redraw):
    """Each mistake changes every basic case; no stable case depends on the weights or on sd
    versus variance, and a categorize without log space fails every one (as the fixed cases)."""
    for _ in range(20):
        redraw()
        inp, ref = A.inputs(), A.reference()
        shapes = [len(c["x"]) for c in cat.FIXED_INPUTS["categorize_basic"]]
        assert [len(c["x"]) for c in inp["categorize_basic"]] == shapes
        for case, r in zip(inp["categorize_basic"], ref["categorize_basic"]):
            for kind in cat.MISTAKES:
                got = cat.mistake(kind, case["x"], case["weights"], case["means"], case["sds"])
                assert not C.exact_close(got, np.asarray(r)), (kind, case)
        for case, r in zip(inp["categorize_stable"], ref["categorize_stable"]):
            for kind in ("ignores_weights", "variance_as_sd", "sd_as_variance"):
                got = cat.mistake(kind, case["x"], case["weights"], case["means"], case["sds"])
                assert C.exact_close(got, np.asarray(r)), (kind, case)
            with np.errstate(all="ignore"):
                from scipy.stats import norm

                x, w, m, s = (np.asarray(case[k]) for k in ("x", "weights", "means", "sds"))
                joint = w[None, :] * norm.pdf(x[:, None], m[None, :], s[None, :])
                assert not np.all(np.isfinite(joint / joint.sum(axis=1, keepdims=True)))


def _float32_numpy(x, weights, means, sds):
    """A student's correct categorize in float32 NumPy (log space, its own normal log density)."""
    from scipy.special import logsumexp

    x, w, m, s = (np.asarray(a, dtype=np.float32) for a in (x, weights, means, sds))
    lj = (np.log(w)[None, :] - np.float32(0.5) * ((x[:, None] - m[None, :]) / s[None, :]) ** 2
          - np.log(s)[None, :] - np.float32(0.5 * np.log(2 * np.pi)))
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def _float32_jax(x, weights, means, sds):
    """A student's correct categorize in float32 JAX (log space)."""
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from jax.scipy.stats import norm

    x, w, m, s = (jnp.asarray(a, jnp.float32) for a in (x, weights, means, sds))
    lj = jnp.log(w)[None, :] + norm.logpdf(x[:, None], m[None, :], s[None, :])
    return np.asarray(jnp.exp(lj - logsumexp(lj, axis=1, keepdims=True)))


def test_a_float32_categorize_earns_all_on_every_draw(redraw):
    """Far in the tails float32 rounds log densities of hundreds or thousands: with the exact
    tolerance alone about 7 % of stable cases failed a correct float32 categorize (about one
    grading run in five); each stable case's tolerance now allows float32's rounding
    (`categorization.stable_rtol`), and a NaN still fails (the draws are checked above)."""
    for _ in range(40):
        redraw()
        for fn in (_float32_numpy, _float32_jax):
            assert _points(fn) == {"categorize_basic": 1.0, "categorize_stable": 1.0}, fn.__name__


def test_fresh_inputs_do_not_regrade_an_unchanged_class(redraw, tmp_path):
    """The fingerprint (engine) and the reference key hash the generator, not the draw: two runs
    with different inputs and no change agree, so nothing is regraded."""
    from gmmcourse.grading.verdicts import fingerprint

    src = nbformat.read(_source(), as_version=4)
    keys = []
    for _ in range(2):
        redraw()
        _, ref_key = cached(A, tmp_path)
        keys.append((json.dumps(A.inputs(), sort_keys=True), inputs_key(A), ref_key, fingerprint(A, src, ref_key)))
    assert keys[0][0] != keys[1][0] and keys[0][1:] == keys[1][1:]
    assert not list(tmp_path.rglob("reference-*.json"))  # a draw's answers are never kept on disk


def _source():
    from gmmcourse.grading.sandbox import REPO_ROOT

    return REPO_ROOT / "solutions" / A.id / A.notebook
