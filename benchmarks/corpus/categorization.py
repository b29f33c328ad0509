"""The `categorization` assignment's corpus: the solution, `categorize` written as a loop and
in float32 JAX (correct styles that must get full marks), and typical mistakes, each losing
exactly the parts it breaks (`cases`).

Used by tests/test_exercises.py, tests/test_grading_fairness.py and benchmarks/false_fail.py.
"""

from __future__ import annotations

import numpy as np

from gmmcourse.grading.assignments import ASSIGNMENTS
from gmmcourse.grading.assignments.categorization import MISTAKES as CATEGORIZE_MISTAKES
from gmmcourse.grading.assignments.categorization import mistake as categorize_mistake

from .grading import Case, namespace

__all__ = ["AID", "base_namespace", "categorize_loop", "categorize_jax32", "naive_categorize", "cases"]

AID = "categorization"


def base_namespace() -> dict:
    """The solution's variables: `categorize` and the three questions' answers."""
    return namespace(AID, {"setup", "categorize_solution", "q1_solution", "q2_solution", "q3_solution"})


def categorize_loop(x, weights, means, sds):
    """A correct `categorize`, one point at a time (log-sum-exp by hand)."""
    from scipy.stats import norm

    out = []
    for v in np.asarray(x, dtype=float):
        lj = [np.log(w) + norm.logpdf(v, m, s) for w, m, s in zip(weights, means, sds)]
        top = max(lj)
        e = [np.exp(a - top) for a in lj]
        out.append([a / sum(e) for a in e])
    return np.array(out)


def categorize_jax32(x, weights, means, sds):
    """A correct `categorize` in float32 JAX."""
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from jax.scipy.stats import norm

    x, w, m, s = (jnp.asarray(a, jnp.float32) for a in (x, weights, means, sds))
    lj = jnp.log(w)[None, :] + norm.logpdf(x[:, None], m[None, :], s[None, :])
    return jnp.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def naive_categorize(x, weights, means, sds):
    """`categorize` without log space: right where the densities are representable, 0/0 in the tails."""
    from scipy.stats import norm

    with np.errstate(all="ignore"):
        d = np.asarray(weights) * norm.pdf(np.asarray(x, dtype=float)[:, None], means, sds)
        return d / d.sum(axis=1, keepdims=True)


def cases() -> list[Case]:
    base = base_namespace()
    parts = tuple(p.grade_id for p in ASSIGNMENTS[AID].parts)
    out = [Case("solution", AID, base, parts)]
    w, m, s = base["WEIGHTS"], base["MEANS"], base["SDS"]
    for name, fn in (("loop", categorize_loop), ("jax_float32", categorize_jax32)):
        ns = dict(base, categorize=fn)
        p425 = float(np.asarray(fn([425.0], w, m, s))[0, 0])
        if name == "jax_float32":  # the Q answers in float32 as well
            import jax.numpy as jnp
            from jax.scipy.special import logsumexp
            from jax.scipy.stats import norm

            lj = jnp.log(jnp.asarray(w, jnp.float32)) + norm.logpdf(jnp.float32(425.0), jnp.asarray(m, jnp.float32),
                                                                    jnp.asarray([2.0, 4.0], jnp.float32))
            lp = [float(logsumexp(jnp.log(jnp.asarray(w, jnp.float32)) + norm.logpdf(jnp.float32(v), jnp.asarray(m, jnp.float32),
                                                                                     jnp.asarray(s, jnp.float32))))
                  for v in (425.0, 500.0)]
            ns.update(log_odds_425_unequal=float(lj[0] - lj[1]), log_pred_425=lp[0], log_pred_500=lp[1])
        ns["p_tonkatsu_425"] = p425
        out.append(Case(name, AID, ns, parts))
    for kind in CATEGORIZE_MISTAKES:
        fn = (lambda kind: lambda x, weights, means, sds: categorize_mistake(kind, x, weights, means, sds))(kind)
        lost = {"categorize_basic"}
        if kind in ("normalised_over_observations", "unnormalised", "log_probs"):
            lost.add("categorize_stable")  # wrong everywhere, the tails included
        out.append(Case(f"categorize_{kind}", AID, dict(base, categorize=fn), ("categorize_basic", "categorize_stable"),
                        frozenset(lost)))
    out.append(Case("categorize_no_log_space", AID, dict(base, categorize=naive_categorize),
                    ("categorize_basic", "categorize_stable"), frozenset({"categorize_stable"})))
    out.append(Case("q1_ignores_weights", AID, dict(base, p_tonkatsu_425=0.5), ("bento_425_equal",),
                    frozenset({"bento_425_equal"})))
    lj = np.log(w) + __import__("scipy.stats").stats.norm.logpdf(425.0, m, [4.0, 16.0])  # variance for sd
    out.append(Case("q2_variance_as_sd", AID, dict(base, log_odds_425_unequal=float(lj[0] - lj[1])),
                    ("bento_425_unequal",), frozenset({"bento_425_unequal"})))
    out.append(Case("q3_log10", AID, dict(base, log_pred_425=base["log_pred_425"] / np.log(10),
                                          log_pred_500=base["log_pred_500"] / np.log(10)),
                    ("bento_425_outlier",), frozenset({"bento_425_outlier"})))
    return out
