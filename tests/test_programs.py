"""Programs kept between processes (gmmcourse.programs): exported once, loaded after, never wrong."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmcourse import codeversion, programs
from gmmcourse.programs import exported_jit


def toy(key, x, scale):
    """A function with a key argument and a static one."""
    return (x * scale + jax.random.normal(key, x.shape, x.dtype), [jnp.sum(x)])


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "program_dir", lambda: tmp_path / programs.SUBDIR)
    return tmp_path / programs.SUBDIR


def no_export(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("traced and exported again")

    monkeypatch.setattr(jax.export, "export", fail)


def test_exported_once_then_loaded(store, monkeypatch):
    x = jnp.arange(5.0)
    first = exported_jit(toy)(jax.random.key(1), x, scale=2.0)
    files = list(store.glob("*.jaxexport"))
    assert len(files) == 1
    no_export(monkeypatch)  # a new process (a new wrapper) must load the file, not trace
    again = exported_jit(toy)(jax.random.key(1), x, scale=2.0)
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert np.allclose(first[0], x * 2 + jax.random.normal(jax.random.key(1), (5,)))  # it computes toy


def test_new_signature_new_file(store):
    f = exported_jit(toy)
    f(jax.random.key(1), jnp.arange(5.0), scale=2.0)
    f(jax.random.key(1), jnp.arange(5.0), scale=3.0)
    f(jax.random.key(1), jnp.arange(6.0), scale=2.0)
    f(jax.random.key(2), jnp.arange(6.0), scale=2.0)  # same signature: same program
    assert len(list(store.glob("*.jaxexport"))) == 3 and f._cache_size() == 3


def test_damaged_file_is_exported_again(store):
    x = jnp.arange(4.0)
    good = exported_jit(toy)(jax.random.key(0), x, scale=1.0)
    (path,) = store.glob("*.jaxexport")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again = exported_jit(toy)(jax.random.key(0), x, scale=1.0)
    jax.tree.map(np.testing.assert_array_equal, good, again)
    assert path.stat().st_size > 100  # replaced by a whole one


def test_unwritable_store_still_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(programs, "program_dir", lambda: blocker / programs.SUBDIR)
    out = exported_jit(toy)(jax.random.key(0), jnp.arange(3.0), scale=1.0)
    assert out[1][0] == 3.0 and not list(tmp_path.glob("**/*.tmp"))


def test_code_version_follows_the_sources(tmp_path, monkeypatch):
    """On a copy of the package: the version is the package's own, changes with any kernel
    source (a word, a new module) and comes back with the source;
    the grading subpackage is not a kernel source."""
    import shutil

    copy = tmp_path / "gmmcourse"
    shutil.copytree(codeversion.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codeversion, "PACKAGE_DIR", copy)
    version = codeversion.code_version.__wrapped__  # not the process's cached value
    v = version()
    assert v == programs.code_version() and len(v) == 24
    gibbs = copy / "gibbs.py"
    source = gibbs.read_bytes()
    gibbs.write_bytes(source.replace(b"num_chains", b"num_chainz", 1))
    changed = version()
    gibbs.write_bytes(source)
    assert changed != v and version() == v
    (copy / "extra.py").write_text("X = 1\n")
    assert version() != v
    (copy / "extra.py").unlink()
    (copy / "grading" / "engine.py").write_text("# another grader\n")
    assert version() == v


POSTERIOR = """
import json, sys
import jax, numpy as np
if sys.argv[1] == "load":
    def fail(*a, **k):
        raise AssertionError("traced and exported again")
    jax.export.export = fail
from gmmcourse import posterior
x = np.linspace(-2, 2, 21) ** 3
post = posterior(x, 2, num_chains=2, num_samples=30, num_warmup=10, seed=4)
print("RESULT", json.dumps({"means": post.means.tolist(), "probs": post.assignment_probs.tolist()}))
"""


def run_posterior(mode, cache):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, "-c", POSTERIOR, mode], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULT", 1)[1])


def test_a_fresh_process_loads_the_sampler_and_draws_the_same(tmp_path):
    """The sampler's programs written by one process are loaded by the next (no tracing),
    and the draws are the same as with no cache at all."""
    first = run_posterior("export", tmp_path)
    names = sorted(p.name.split("-")[0] for p in (tmp_path / programs.SUBDIR).glob("*.jaxexport"))
    assert names == ["gmmcourse.chains.run_chunk[small]", "gmmcourse.chains.start_chains[small]",
                     "gmmcourse.em._em_restarts[small]"]
    loaded = run_posterior("load", tmp_path)
    uncached = run_posterior("export", None)
    assert first == loaded == uncached


SANDBOX_CELL = """import numpy as np
{poison}
from gmmcourse import posterior
x = np.linspace(-2, 2, 21) ** 3
post = posterior(x, 2, num_chains=2, num_samples=30, num_warmup=10, seed=4)
"""
POISON = """import jax.export
def _no_export(*a, **k):
    raise RuntimeError("traced and exported again")
jax.export.export = _no_export
"""


def test_the_sandbox_loads_what_the_warm_up_kept(tmp_path):
    """The grader's warm-up (writable cache) keeps the sampler's programs; a student's
    sandboxed kernel (read-only cache) loads them without tracing and draws what the
    warm-up drew, and what the trusted parent draws. Both hide a module of the package, as
    an assignment may (the uncertainty one hides `categorize`): its source is unreadable."""
    import shutil

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from gmmcourse.grading.executor import run_submission
    from gmmcourse.grading.sandbox import Limits

    assert shutil.which("bwrap"), "bubblewrap (bwrap) is needed to run the grading sandbox: apt-get install bubblewrap"
    # no offender here: the warm-up's compiling cell used 11.8 s of CPU (22 s wall at load 10),
    # 10 % of a 120 s limit; 600 s puts it at 2 %
    limits = Limits(cell_timeout=600, notebook_timeout=900)
    exports = [("means", "answer = post.means.tolist()")]

    def run(poison, writable):
        nb = new_notebook(cells=[new_code_cell(SANDBOX_CELL.format(poison=poison))])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        res = run_submission(nbformat.writes(nb), exports, "{}", limits,
                             {"jax_cache": str(tmp_path), "jax_cache_writable": writable, "single_thread": True,
                              "hide": ["gmmcourse/categorize.py"]})
        assert res["infra_error"] is None and res["answers"]["means"]["ok"], res["answers"]
        return json.loads(res["answers"]["means"]["json"])

    warm = run("", True)
    assert len(list((tmp_path / programs.SUBDIR).glob("*.jaxexport"))) == 3
    student = run(POISON, False)
    assert student == warm
    from gmmcourse import posterior

    here = posterior(np.linspace(-2, 2, 21) ** 3, 2, num_chains=2, num_samples=30, num_warmup=10, seed=4)
    np.testing.assert_allclose(here.means, np.asarray(student), rtol=1e-5)


# The package's one thread pool (gmmcourse.programs.start / parallel_map / detach)


def finishes(fn, timeout=60.0):
    """fn() in a daemon thread: (finished within `timeout`, its result)."""
    import threading

    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive(), out.get("value")


def test_pool_tasks_that_wait_for_pool_work_never_deadlock():
    """loo_table's shape: every K is a pool task that starts work (building programs) and
    maps work (chain groups) over the same bounded pool and waits for both. With more such
    tasks than threads, every thread would wait for work queued behind it, forever; the
    pool's own threads run such work at once instead."""

    def inner(i):
        return i * i

    def outer(i):
        built = programs.start(inner, i)
        return built.result() + sum(programs.parallel_map(inner, range(i + 2)))

    tasks = range(programs.pool_size() + 2)
    done, value = finishes(lambda: programs.parallel_map(outer, tasks))
    assert done, "a pool task waiting for pool work deadlocked"
    assert value == [i * i + sum(j * j for j in range(i + 2)) for i in tasks]


def test_start_in_a_pool_thread_raises_where_the_result_is_asked():
    def fails():
        raise ValueError("in the task")

    def outer(_):
        future = programs.start(fails)
        with pytest.raises(ValueError, match="in the task"):
            future.result()
        return True

    assert programs.parallel_map(outer, [0, 1]) == [True, True]
    with pytest.raises(ValueError, match="in the task"):
        programs.start(fails).result()  # from outside the pool, as well


def test_one_small_pool_sized_by_the_usable_cores():
    """The pool follows the CPU affinity, at most MAX_THREADS threads, and stays far below the
    grading sandbox's cap on processes and threads; a posterior with chain groups side by
    side and loo_table's K in threads start no thread outside it."""
    import threading

    from gmmcourse.grading.sandbox import Limits

    assert programs.pool_size() == min(len(os.sched_getaffinity(0)), programs.MAX_THREADS) >= 1
    assert programs.MAX_THREADS * 4 <= Limits().max_pids  # room for XLA's threads and the kernel's own
    from gmmcourse import loo_table, posterior

    before = {t.ident for t in threading.enumerate()}
    posterior(np.linspace(-2, 2, 40) ** 3, 2, num_chains=5, num_samples=5, num_warmup=0, seed=0)
    loo_table(np.linspace(-2, 2, 21) ** 3, 2, num_chains=2, num_samples=200)
    ours = [t.name for t in threading.enumerate() if t.name.startswith("gmmcourse")]
    assert 1 <= len(ours) <= programs.pool_size() and all(n.startswith("gmmcourse_") for n in ours), ours
    pools = [t.name for t in threading.enumerate() if t.ident not in before and "ThreadPoolExecutor" in t.name]
    assert pools == [], pools  # no pool of its own per call


def test_posterior_validates_and_pads_the_data_once(monkeypatch):
    """On its way to the chains' programs `x` is checked once and padded once (the chains'
    start and sweep chunks, prepared and run, share the padded copy)."""
    from gmmcourse import gibbs

    calls = {"check_data": 0, "pad": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    import importlib

    em_module = importlib.import_module("gmmcourse.em")  # the module (gmmcourse.em is also the function)

    monkeypatch.setattr(gibbs, "check_data", counted("check_data", gibbs.check_data))
    monkeypatch.setattr(em_module, "check_data", counted("check_data", em_module.check_data))  # the EM pivot's too
    monkeypatch.setattr(gibbs, "pad", counted("pad", gibbs.pad))
    post = gibbs.posterior(np.linspace(-2, 2, 21) ** 3, 2, num_chains=2, num_samples=5, num_warmup=0, seed=0)
    assert calls == {"check_data": 1, "pad": 1} and post.means.shape == (2, 5, 2)
    import gmmcourse.chains as chains

    assert not hasattr(chains, "pad") and not hasattr(chains, "check_data")  # the chains take padded data


def test_smc_and_exact_compile_through_the_one_path(store):
    """SMC's runs and the exact enumeration's blocks are exported programs too (kept between
    processes, under the package's code version), like EM's and the chains'."""
    from gmmcourse.exact import log_evidence
    from gmmcourse.models import bento_prior
    from gmmcourse.smc import smc_log_evidence

    x = np.array([2.1, 2.4, 3.9, 4.2, 4.4])
    smc = smc_log_evidence(x, bento_prior(2), num_particles=16, num_steps=4, num_runs=2, seed=1)
    exact = log_evidence(x, bento_prior(2))
    assert np.isfinite(smc.log_evidence) and np.isfinite(exact)
    names = sorted(p.name.split("-")[0] for p in store.glob("*.jaxexport"))
    assert "gmmcourse.smc.smc_runs" in names and "gmmcourse.exact.block_k2" in names, names
