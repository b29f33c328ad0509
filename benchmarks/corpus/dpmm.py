"""The `dpmm` assignment's corpus (issue 28): correct styles and typical mistakes.

Imported by tests/test_dpmm_grading.py (the corpus must grade right) and by
benchmarks/dpmm_probe_rates.py (the false-fail rate and the catch rate over many seeds).

* The functions: `correct_styles` (the solution's vectorised ones, per-cluster loops with scipy,
  float32) and `FUNCTION_MISTAKES` (each typical mistake, with the parts it loses).
* The draws: `gibbs_chains`, the notebook's given sampler (`run_sampler`) for many seeds at
  once, with the correct conditional or a wrong one (`SAMPLER_MISTAKES`); `blocked_gibbs`, another
  valid sampler; `num_clusters` and `answers`, what a student stores.
"""

from __future__ import annotations

import math

import numpy as np

from corpus.grading import namespace
from gmmcourse.grading.assignments import dpmm as M

__all__ = ["AID", "CELLS", "base_namespace", "crp_loop", "crp_float32", "crp_mistake",
           "conditional_loop", "conditional_float32", "correct_styles", "FUNCTION_MISTAKES", "SAMPLER_MISTAKES",
           "gibbs_chains", "blocked_gibbs", "num_clusters", "answers", "sampler_runs"]

AID = "dpmm"
CELLS = {"setup", "crp_solution", "conditional_solution", "sampler_given", "posterior_solution"}


def base_namespace() -> dict:
    """The solution's functions and the given sampler, without the posterior cell."""
    return namespace(AID, CELLS - {"posterior_solution"})


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

SAMPLER_MISTAKES = ("counts_include_i", "prior_predictive_for_existing", "plugin_for_new", "no_new_cluster")
"""The wrong conditionals that change the given sampler's draws on the notebook's data. The other
mistakes of `M.COND_MISTAKES` draw from the right law there: with alpha = 1, "alpha_swapped" is
the correct conditional; the sampler normalises an "unnormalised" one itself (and no density
underflows on these data, so "linear_space" is right there too). Those lose their function part
only."""


# ----------------------------------------------------------------------------- samplers


def _log_t(x, n, mean, ss, prior):
    """log p(x | a cluster of n points with this mean and sum of squared deviations ss)."""
    from scipy.special import gammaln

    m0, k0, a0, b0 = prior
    kn, an = k0 + n, a0 + n / 2
    mn = (k0 * m0 + n * mean) / kn
    bn = b0 + ss / 2 + k0 * n * (mean - m0) ** 2 / (2 * kn)
    df, scale = 2 * an, np.sqrt(bn * (kn + 1) / (an * kn))
    return (gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi) - np.log(scale)
            - (df + 1) / 2 * np.log1p(((x - mn) / scale) ** 2 / df))


def gibbs_chains(x, alpha, prior, seeds, num_chains=4, num_samples=1000, num_warmup=200, mistake=None):
    """The notebook's given sampler, ``run_sampler(x, alpha, prior, num_chains, num_samples,
    num_warmup, seed)``, for every seed of `seeds` at once, vectorised over all their chains:
    the same starts (even chains one cluster, odd chains every point alone), scan order, label
    rule (a new cluster takes the smallest label the other points leave free) and uniforms
    (``default_rng(seed).random()`` once per update, chain after chain), with the correct
    conditional or the mistake `mistake` of `SAMPLER_MISTAKES`, as the sampler uses it (the
    index it draws is mapped to the other points' labels). The draws are therefore run_sampler's
    own, up to the rounding of the conditional, which moves a draw only where a uniform falls
    within about 1e-15 of a boundary (tests/test_dpmm_grading.py compares them).
    Returns the labels, (len(seeds), num_chains, num_samples, n), int8."""
    from scipy.stats import norm

    x = np.asarray(x, dtype=np.float64)
    n, steps = x.size, num_warmup + num_samples
    m0, k0, a0, b0 = (float(v) for v in prior)
    u = np.concatenate([np.random.default_rng(s).random((num_chains, steps, n)) for s in seeds])
    c = u.shape[0]
    z = np.where((np.arange(c) % num_chains % 2 == 0)[:, None], 0, np.arange(n)[None, :])
    out = np.empty((c, num_samples, n), dtype=np.int8)
    slots = np.arange(n)
    if mistake == "plugin_for_new":
        lp_new = norm.logpdf(x, m0, math.sqrt(b0 / (a0 - 1.0)))
    else:
        lp_new = _log_t(x, 0.0, 0.0, 0.0, (m0, k0, a0, b0))
    new = np.full(c, -np.inf) if mistake == "no_new_cluster" else None
    for step in range(steps):
        for i in range(n):
            member = z[:, :, None] == slots  # (chains, points, labels)
            others = member.copy()
            others[:, i] = False
            keep = member if mistake == "counts_include_i" else others
            cnt = keep.sum(1).astype(np.float64)
            mean = (keep * x[None, :, None]).sum(1) / np.maximum(cnt, 1.0)
            ss = (keep * (x[None, :, None] - mean[:, None, :]) ** 2).sum(1)
            if mistake == "prior_predictive_for_existing":
                lp = np.full_like(cnt, lp_new[i])
            else:
                lp = _log_t(x[i], cnt, mean, ss, (m0, k0, a0, b0))
            with np.errstate(divide="ignore"):
                logw = np.where(cnt > 0, np.log(cnt) + lp, -np.inf)
            w = np.concatenate([logw, (np.full(c, math.log(alpha) + lp_new[i]) if new is None else new)[:, None]], 1)
            cdf = np.cumsum(np.exp(w - w.max(1, keepdims=True)), 1)
            above = cdf > (u[:, step, i] * cdf[:, -1])[:, None]
            s = np.where(above.any(1), above.argmax(1), n)  # the slot drawn (n: the new cluster)
            occ = cnt > 0
            rank = np.concatenate([np.cumsum(occ, 1) - 1, occ.sum(1, keepdims=True)], 1)
            j = rank[np.arange(c), s]  # the index the conditional's output is drawn at
            taken = others.any(1)
            jth = (np.cumsum(taken, 1) == (j + 1)[:, None]).argmax(1)
            z[:, i] = np.where(j < taken.sum(1), jth, (~taken).argmax(1))
        if step >= num_warmup:
            out[:, step - num_warmup] = z
    return out.reshape(len(seeds), num_chains, num_samples, n)


def blocked_gibbs(x, alpha, prior, num_chains=4, num_samples=2000, num_warmup=500, k_max=20, seed=0):
    """Another valid sampler: Ishwaran and James's blocked Gibbs on k_max sticks (the truncation
    error is below 4 n exp(-(k_max - 1) / alpha) = 2e-7), vectorised over chains. Returns the
    labels (chains, samples, n)."""
    rng = np.random.default_rng(seed)
    m0, k0, a0, b0 = prior
    x = np.asarray(x, float)
    c, n = num_chains, x.size
    z = rng.integers(0, 3, (c, n))
    out = np.zeros((c, num_samples, n), dtype=np.int8)
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
        logits = (logw[:, None, :] - 0.5 * np.log(var)[:, None, :]
                  - 0.5 * (x[None, :, None] - mu[:, None, :]) ** 2 / var[:, None, :])
        g = logits - np.log(-np.log(rng.random(logits.shape)))  # Gumbel-max
        z = g.argmax(-1)
        if sweep >= num_warmup:
            out[:, sweep - num_warmup] = z
    return out


def num_clusters(labels):
    """The number of distinct labels of each draw: labels (..., n) -> (...)."""
    labels = np.asarray(labels)
    s = np.sort(labels, axis=-1)
    return 1 + (np.diff(s, axis=-1) != 0).sum(-1)


def answers(k, dtype=np.float64):
    """What a student stores from K draws (chains, samples)."""
    k = np.asarray(k)
    return {"dpmm_num_clusters": k.astype(dtype),
            "dpmm_k_posterior": (np.bincount(k.ravel().astype(int), minlength=len(M.X) + 1) / k.size).astype(dtype)}


def sampler_runs(seed=0) -> dict:
    """The draws tests/test_dpmm_grading.py's corpus uses: the given sampler with the solution's
    conditional (8 chains), with a wrong conditional (4 chains), and a blocked Gibbs sampler of
    the student's own."""
    x, a, pr = M.X, M.ALPHA, M.PRIOR
    good = gibbs_chains(x, a, pr, [seed], num_chains=8)[0]
    bad = gibbs_chains(x, a, pr, [seed + 1], mistake="prior_predictive_for_existing")[0]
    return {"good": good, "bad": bad, "blocked": blocked_gibbs(x, a, pr, seed=seed + 2)}
