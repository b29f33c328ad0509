"""Compile once: padded, bucketed kernels give the unpadded results and are compiled once per
bucket (counted, in the style of blackjax's compilation tests)."""

import contextlib
import importlib
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import dispatch

# `em` first, through the package's lazy names: a direct import of the submodule
# gmmcourse.em (gmmcourse.selection does one) before the first `from gmmcourse import em`
# binds the module, not the function, to gmmcourse.em for every later importer
from gmmcourse import em  # noqa: I001
from gmmcourse import GMMPrior, bic_table, posterior

shapes = importlib.import_module("gmmcourse.shapes")
_em_restarts = importlib.import_module("gmmcourse.em")._em_restarts
sweep = importlib.import_module("gmmcourse.sweep")
chains = importlib.import_module("gmmcourse.chains")
run_chain, permutations = sweep.run_chain, sweep.permutations
run_chunk, start_chains = chains.run_chunk, chains.start_chains
as_prior = importlib.import_module("gmmcourse.models").as_prior
programs = importlib.import_module("gmmcourse.programs")

PRIOR2 = GMMPrior(jnp.array([-2.0, 2.0]), 2.0)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.4, rng.normal(-2.0, 0.7, n), rng.normal(2.0, 1.0, n))


@contextlib.contextmanager
def count_lowerings():
    """Counts the programs JAX lowers to XLA (each one is then compiled, or loaded from the
    persistent compilation cache): jitted functions and eager operations on new shapes."""
    counter = {"n": 0}

    def listener(event, duration, **kwargs):
        if event == dispatch.JAXPR_TO_MLIR_MODULE_EVENT:
            counter["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_bucket_sizes():
    assert [shapes.bucket_size(n) for n in (1, 20, 30, 32, 33, 2000, 2048)] == [32, 32, 32, 32, 2048, 2048, 2048]
    for n in (2049, 3000, 10_000, 123_457, 1_000_000):
        b = shapes.bucket_size(n)
        assert n <= b <= 1.125 * n + 1, (n, b)
    assert shapes.bucket_size(1_000_000) == shapes.bucket_size(1_040_000)
    xp, mask = shapes.pad(np.array([3.0, 1.0, 2.0]), np.float32)
    assert xp.shape == (32,) and xp.dtype == np.float32 and mask.sum() == 3 and np.all(xp[3:] == 3.0)


@pytest.mark.parametrize("n", [7, 30, 33, 256, 257, 300])
def test_padded_em_is_the_unpadded_fit(n):
    """em (padded to 2,048 points, each E-step on the first 32 points or all 2,048, K
    padded to K_PAD, restarts in groups) against the same kernel on the raw data, unmasked
    (every E-step over all points, no prefix), with exactly K components and all restarts
    in one call; the sizes straddle the prefixes."""
    x = data(n)
    for k in (1, 2, 3):
        # The padding changes only the summation order. The log-likelihoods agree to rounding.
        # The parameters: at the default tol the summation order can decide which iteration
        # meets the stopping rule; with tol=0 both run until the log-likelihood stops
        # changing in the last bit, which pins the parameters to about sqrt(machine eps)
        # (1.5e-8) relative, the precision of a maximum located by its value
        for tol, max_iter in ((1e-10, 1000), (0.0, 3000)):
            fit = em(x, k, restarts=7, seed=3, tol=tol, max_iter=max_iter)
            with jax.enable_x64(True):
                raw = _em_restarts(jax.random.key(3), np.arange(7, dtype=np.int32), jnp.asarray(x), None,
                                   np.int32(n), np.int32(k), k, np.int32(max_iter), jnp.asarray(tol), jnp.asarray(1e-6))
            w, m, v, ll, it, _ = (np.asarray(a) for a in raw)
            np.testing.assert_allclose(fit.restart_log_likelihoods, ll, rtol=1e-12, atol=1e-9)
            if tol == 0:
                best = int(np.argmax(ll))
                order = np.argsort(m[best])
                np.testing.assert_allclose(fit.means, m[best][order], rtol=1e-7, atol=1e-9)
                np.testing.assert_allclose(fit.weights, w[best][order], rtol=1e-7, atol=1e-12)
                np.testing.assert_allclose(fit.sds, np.sqrt(v[best][order]), rtol=1e-7)


@pytest.mark.parametrize("n, chains, warmup, samples", [(7, 3, 37, 150), (30, 5, 200, 120), (300, 2, 0, 101)])
def test_padded_posterior_is_the_unpadded_chain(n, chains, warmup, samples):
    """posterior (data padded to a bucket, chains in groups of CHAIN_GROUP, sweeps in chunks of
    SWEEP_CHUNK) draws what one unpadded scan per chain draws, seed for seed."""
    x = data(n, seed=n)
    post = posterior(x, 2, prior=PRIOR2, num_chains=chains, num_warmup=warmup, num_samples=samples, seed=5)
    p = as_prior(PRIOR2, jnp.float32)
    keys = jax.random.split(jax.random.key(5), chains)
    run = jax.vmap(lambda key: run_chain(key, jnp.asarray(x, jnp.float32), p, jnp.asarray(post.pivot.means, jnp.float32),
                                          jnp.asarray(np.maximum(post.pivot.sds, 1e-6 * max(np.std(x), 1.0)), jnp.float32),
                                          jnp.asarray(permutations(2)), warmup, samples, 2))
    (raw, relabelled, lj), probs = run(keys)
    for a, b in zip(raw, post.raw):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
    for a, b in zip(relabelled, (post.weights, post.means, post.sds)):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(post.log_joint, lj, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(post.assignment_probs, np.asarray(probs).mean(0).T, atol=1e-5)
    assert post.means.shape == (chains, samples, 2) and post.assignment_probs.shape == (n, 2)


def test_comparison_has_power():
    """The identity check above is not vacuous: another seed gives other draws."""
    x = data(30, seed=30)
    a = posterior(x, 2, prior=PRIOR2, num_chains=2, num_samples=50, seed=5)
    b = posterior(x, 2, prior=PRIOR2, num_chains=2, num_samples=50, seed=6)
    assert not np.allclose(a.means, b.means, rtol=2e-5, atol=1e-6)


def test_compiles_once_per_bucket():
    """After one call per bucket, em and posterior on other sizes in the bucket, other K
    (em), other restarts, chains, warm-up and sample counts lower no new program at all."""
    posterior(data(20), 2, prior=PRIOR2, num_chains=4, num_samples=100, seed=0)
    em(data(20), 4, restarts=5)
    sizes = {"em": _em_restarts._cache_size(), "start": start_chains._cache_size(), "chunk": run_chunk._cache_size()}
    with count_lowerings() as count:
        for i, n in enumerate((7, 13, 25, 31, 32)):
            x = data(n, seed=i)
            for k in range(1, min(n, 6) + 1):
                em(x, k, restarts=3 + k, seed=i)
            post = posterior(x, 2, prior=PRIOR2, num_chains=1 + i, num_samples=50 + 70 * i, num_warmup=13 * i, seed=i)
            assert post.means.shape == (1 + i, 50 + 70 * i, 2)
        bic_table(data(29), 6)
    assert count["n"] == 0
    assert sizes == {"em": _em_restarts._cache_size(), "start": start_chains._cache_size(),
                     "chunk": run_chunk._cache_size()}


def test_em_compiles_once_for_all_small_data():
    """EM has one program for every N up to the last small bucket (its E-step picks a prefix
    of the padded data): sizes across the prefixes and the Gibbs buckets lower nothing new."""
    em(data(20), 2)
    before = _em_restarts._cache_size()
    with count_lowerings() as count:
        for n in (7, 33, 256, 257, 2000, 2048):
            fit = em(data(n, seed=n), 3, seed=n)
            assert np.isfinite(fit.log_likelihood)
    assert count["n"] == 0 and _em_restarts._cache_size() == before


def test_multivariate_em_compiles_once_per_bucket():
    """Multivariate EM's two programs (the k-means++ starts and the EM loop, through
    `bucket_jit`) serve every N of a bucket: after one call per bucket (32 and 2,048 points),
    other sizes lower nothing; a new bucket (above the small ones) lowers both again."""
    mve = importlib.import_module("gmmcourse.multivariate_em")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2.0, 0.7, (1300, 2)), rng.normal(2.0, 1.0, (1300, 2))])[rng.permutation(2600)]
    for n in (20, 100):
        mve.em(x[:n], 2, n_init=2)
    before = (mve.em_starts._cache_size(), mve.em_run._cache_size())
    with count_lowerings() as count:
        for n in (7, 31, 33, 256, 2048):
            assert np.isfinite(mve.em(x[:n], 2, key=n, n_init=2).loglik)
    assert count["n"] == 0, f"{count['n']} programs lowered for new sizes in a bucket"
    assert (mve.em_starts._cache_size(), mve.em_run._cache_size()) == before
    with count_lowerings() as count:  # power: 2,600 points are in a bucket of their own
        mve.em(x, 2, n_init=2)
    assert count["n"] >= 2 and (mve.em_starts._cache_size(), mve.em_run._cache_size()) == (before[0] + 1, before[1] + 1)


ONE_PATH = ("dpmm", "dpmm_prior", "dpmm_exact", "dpmm_sweeps", "dpmm_samplers", "multivariate_em", "multivariate_gibbs",
            "multivariate_model", "importance", "em", "chains", "exact")


def test_the_kernels_compile_through_the_one_path(tmp_path, monkeypatch):
    """The DP mixture's chains, multivariate EM, Gibbs and summaries, and importance sampling
    compile through `gmmcourse.programs.exported_jit` (kept between processes), as EM, the 1-D
    chains, SMC and exact do; none of these modules compiles with a plain `jax.jit`."""
    import inspect

    from gmmcourse import dpmm, importance, multivariate
    from gmmcourse.models import bento_prior

    for name in ONE_PATH:
        source = inspect.getsource(importlib.import_module(f"gmmcourse.{name}"))
        assert "jax.jit" not in source.replace("`jax.jit`", ""), f"gmmcourse.{name} compiles with a plain jax.jit"
    store = tmp_path / programs.SUBDIR
    monkeypatch.setattr(programs, "program_dir", lambda: store)
    mve, mg = (importlib.import_module(f"gmmcourse.{m}") for m in ("multivariate_em", "multivariate_gibbs"))
    for program in (dpmm.run_chains.small, mve.em_starts.small, mve.em_run.small, mg.chain_start.small, mg.chain_chunk.small,
                    mg.batch_tables, importance.draw_particles):
        monkeypatch.setattr(program, "_lowered", {})  # forget what earlier tests compiled: export again, to `store`
        monkeypatch.setattr(program, "_programs", {})
    x = data(13)
    dpmm.collapsed_gibbs(x, dpmm.DPPrior.for_data(x), num_chains=2, num_samples=3, num_warmup=1)
    y = np.stack([x, x[::-1]], axis=1)
    multivariate.em(y, 2)
    draws = multivariate.posterior(y, 2, key=0, num_chains=1, num_draws=2, num_warmup=0)
    multivariate.draw_log_likelihood(draws, y)
    importance.importance_sampling(x, bento_prior(2), num_particles=8)
    names = {p.name.split("-")[0] for p in store.glob("*.jaxexport")}
    for want in ("gmmcourse.dpmm_sweeps.run_chains[small]", "gmmcourse.multivariate_em.em_starts[small]",
                 "gmmcourse.multivariate_em.em_run[small]", "gmmcourse.multivariate_gibbs.chain_start[small]",
                 "gmmcourse.multivariate_gibbs.chain_chunk[small]", "gmmcourse.multivariate_gibbs.batch_tables",
                 "gmmcourse.importance.draw_particles"):
        assert want in names, (want, sorted(names))


def test_chain_groups_in_threads_keep_float64():
    """Chain groups run in threads and JAX's x64 mode is per thread: every group of a
    float64 posterior computes in float64 (in float32 the draws would come back float32)."""
    post = posterior(data(20), 2, prior=PRIOR2, num_chains=2 * shapes.CHAIN_GROUP + 1, num_samples=20, seed=0,
                     dtype=np.float64)
    assert post.means.dtype == np.float64 and post.log_joint.dtype == np.float64
    assert post.means.shape == (2 * shapes.CHAIN_GROUP + 1, 20, 2)


def test_the_counter_counts():
    """The compile counter has power: a new bucket compiles EM again, and a new static
    setting (num_mh) compiles a new sampler chunk."""
    x = data(2050)  # above the small buckets: padded to 2304 (used nowhere else)
    before = _em_restarts._cache_size()
    with count_lowerings() as count:
        em(x, 2, restarts=2)
    assert count["n"] >= 1 and _em_restarts._cache_size() == before + 1
    before = run_chunk._cache_size()
    with count_lowerings() as count:
        posterior(data(20), 2, prior=PRIOR2, num_chains=1, num_samples=10, num_mh=3, seed=0)
    assert count["n"] >= 1 and run_chunk._cache_size() == before + 1


# Warm-up is about programs a *later process* finds: the check runs in fresh processes (the
# grader's sandboxed kernels) with an empty cache folder (tests above have compiled the same
# programs in this process).

WARM_SOURCE = """import numpy as np
from gmmcourse import bic_table, posterior
rng = np.random.default_rng(0)
x = np.where(rng.random(20) < 0.4, rng.normal(-2.0, 0.7, 20), rng.normal(2.0, 1.0, 20))
post = posterior(x, 2, num_chains=2, num_samples=20, seed=0)
table = bic_table(x, 3)
"""
COUNTING = """import jax, jax.export
COUNT = {"compiles": 0, "cache_hits": 0, "exports": 0}
def _listen(event, **kwargs):
    if event == "/jax/compilation_cache/compile_requests_use_cache":
        COUNT["compiles"] += 1
    elif event == "/jax/compilation_cache/cache_hits":
        COUNT["cache_hits"] += 1
jax.monitoring.register_event_listener(_listen)
_export = jax.export.export
def _counted(*a, **k):
    COUNT["exports"] += 1
    return _export(*a, **k)
jax.export.export = _counted
"""
STUDENT = """import numpy as np
from gmmcourse import bic_table, posterior
rng = np.random.default_rng(7)
x = np.where(rng.random(27) < 0.4, rng.normal(-2.0, 0.7, 27), rng.normal(2.0, 1.0, 27))
post = posterior(x, 2, num_chains=4, num_samples=1000, seed=1)
table = bic_table(x, 5)
"""


def _notebook(*sources) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


def test_the_graders_warm_up_covers_the_buckets(tmp_path):
    """What the grader calls before grading (`engine.warm_jax_cache`: the source notebook run
    once in the sandbox, with a writable cache) into an empty cache folder; then a student's
    sandboxed kernel (read-only cache, the grader's configuration) that uses another size of
    the bucket, other chain and draw counts and other K: every program it compiles is found
    in the cache, and none is traced and exported again."""
    from gmmcourse.grading import engine
    from gmmcourse.grading.executor import run_submission
    from gmmcourse.grading.sandbox import Limits
    from gmmcourse.grading.spec import Assignment, Part, Verdict

    assert shutil.which("bwrap"), "bubblewrap (bwrap) is needed to run the grading sandbox: apt-get install bubblewrap"
    cache = tmp_path / "cache"
    limits = Limits(cell_timeout=600, notebook_timeout=900)
    part = Part("p", 1, "answer = 0", lambda answer, ref: Verdict(1.0, ""))
    a = Assignment(id="warm", notebook="warm.ipynb", parts=(part,))
    engine.warm_jax_cache(a, _notebook(WARM_SOURCE), "{}", cache, limits)
    assert any((cache / programs.SUBDIR).glob("*.jaxexport")), "the warm-up kept no program"
    res = run_submission(_notebook(COUNTING, STUDENT), [("count", "answer = COUNT")], "{}", limits,
                         {"jax_cache": str(cache), "single_thread": True, "offers": a.sandbox_offers})
    assert res["infra_error"] is None and res["answers"]["count"]["ok"], res["answers"]
    count = json.loads(res["answers"]["count"]["json"])
    assert count["compiles"] > 0, count  # the kernel used the cache (power: a cold cache would miss)
    assert count["cache_hits"] == count["compiles"] and count["exports"] == 0, count
