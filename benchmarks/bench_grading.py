"""Benchmarks of the autograding engine; writes benchmarks/results/grading.json.

    python benchmarks/bench_grading.py [--class-size 150] [--workers 2]

* speed-up: the same class graded ``--serial`` vs on a Dask LocalCluster (``--workers``),
  wall clock including cluster start-up (goal >= 1.8x on 2 cores);
* overhead: grading (sandbox + limits + exports) vs plainly executing the same notebooks with
  nbclient, per notebook (goal <= 1.5x);
* cache: a JAX notebook graded with an empty JAX compilation cache vs a warmed one
  (goal >= 2x faster per submission after the first);
* a term: throughput (submissions per minute), peak memory, a no-change re-run of the whole
  class (goal < 3 s) and a resume after a kill (goal: grading starts within 5 s).

The class is made of copies of a toy assignment's solution/blank/wrong notebooks (a JAX
toy: jitted EM on 1-D data) until the real assignments have solution notebooks.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hostile"))

from gmmcourse.grading.engine import autograde  # noqa: E402
from gmmcourse.grading.executor import run_submission  # noqa: E402
from gmmcourse.grading.sandbox import Limits  # noqa: E402
from gmmcourse.grading.spec import Assignment, Part, Verdict  # noqa: E402

SETUP = """import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
x = jnp.concatenate([jnp.linspace(-3, -1, 40), jnp.linspace(2, 4, 60)])
"""
SOL = """def em(x, k=2, iters=50):
    ### BEGIN SOLUTION
    def step(_, p):
        w, m, s = p
        lp = jnp.log(w)[:, None] - 0.5 * ((x[None] - m[:, None]) / s[:, None]) ** 2 - jnp.log(s)[:, None]
        r = jax.nn.softmax(lp, axis=0)
        n = r.sum(1)
        m = (r * x[None]).sum(1) / n
        s = jnp.sqrt((r * (x[None] - m[:, None]) ** 2).sum(1) / n)
        return n / n.sum(), m, s
    p0 = (jnp.ones(k) / k, jnp.linspace(x.min(), x.max(), k), jnp.ones(k) * x.std())
    return jax.jit(lambda p: jax.lax.fori_loop(0, iters, step, p))(p0)
    ### END SOLUTION
"""
# Model selection over K: one compilation per K (like the course's GenJAX samplers, the
# notebook's time is dominated by XLA compilation, which the persistent cache removes).
SCAN = """fits = {k: em(x, k) for k in range(1, 7)}
loglik = {k: float(jax.jit(lambda w, m, s: jax.scipy.special.logsumexp(
    jnp.log(w)[:, None] + jax.scipy.stats.norm.logpdf(x[None], m[:, None], s[:, None]), axis=0).sum())(*fits[k]))
    for k in fits}
"""
BLANK = "def em(x, k=2, iters=50):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
WRONG = "def em(x, k=2, iters=50):\n    return jnp.ones(k) / k, jnp.zeros(k), jnp.ones(k)\n"
TEST = "w, m, s = em(x)\nassert abs(float(w.sum()) - 1) < 1e-6\n### BEGIN HIDDEN TESTS\nassert m[0] < m[1]\n### END HIDDEN TESTS\n"


def jax_notebook(body: str):
    md = lambda gid, **k: {"nbgrader": {"grade_id": gid, "schema_version": 3, "locked": False, "solution": False, "grade": False, "task": False, **k}}  # noqa: E731
    nb = new_notebook(
        cells=[
            new_markdown_cell("# EM toy"),
            new_code_cell(SETUP, metadata=md("setup", locked=True)),
            new_code_cell(body, metadata=md("answer_em", solution=True)),
            new_code_cell(TEST, metadata=md("test_em", grade=True, points=2, locked=True)),
            new_code_cell(SCAN),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _check(answer, ref):
    if not (isinstance(answer, list) and len(answer) == 2 and all(isinstance(v, (int, float)) for v in answer)):
        return Verdict(0.0, "em should return two component means.")
    ok = all(abs(a - b) < 1e-3 for a, b in zip(sorted(answer), ref))
    return Verdict(1.0 if ok else 0.0, "means correct." if ok else "means are off.")


JAX_TOY = Assignment(
    "emtoy", "emtoy.ipynb",
    (Part("test_em", 2, "answer = [float(v) for v in em(x)[1]]", _check, "EM means"),),
    reference=lambda: [-2.0, 3.0],
)


def build_class(root: Path, n: int) -> Path:
    course = root / "grading"
    src = root / "solutions" / "emtoy"
    src.mkdir(parents=True)
    nbformat.write(jax_notebook(SOL), src / "emtoy.ipynb")
    kinds = [SOL, SOL, BLANK, WRONG]
    for i in range(n):
        d = course / "submitted" / f"s{i:03d}" / "emtoy"
        d.mkdir(parents=True)
        nbformat.write(jax_notebook(kinds[i % len(kinds)]), d / "emtoy.ipynb")
    return course


def _ref_means():
    """Reference computed by running the solution outside any sandbox (trusted)."""
    import jax
    import jax.numpy as jnp

    ns = {"jax": jax, "jnp": jnp}
    exec(SETUP + SOL, ns)
    return sorted(float(v) for v in ns["em"](ns["x"])[1])


def plain_nbclient(nb_path: Path) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, 4)
    t = time.perf_counter()
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3").execute()
    return time.perf_counter() - t


def term(course: Path, reg, limits, cache, args) -> dict:
    """A term's re-runs on the graded class: a no-change re-run (references cached, every
    submission skipped), and a resume after a kill (a third of the rows gone, the reference
    cache kept): time until the first submission is recorded."""
    import sqlite3

    import gmmcourse.grading.gradebook as gbm

    t = time.perf_counter()
    s = autograde(["emtoy"], course, registry=reg, workers=args.workers, limits=limits, progress=False,
                  jax_cache=cache, warm_cache=False, echo=lambda s: None)
    rerun = time.perf_counter() - t
    assert not s.graded, s.graded
    con = sqlite3.connect(course / "gradebook.db")
    con.execute("delete from gmm_autograde where rowid % 3 = 0")
    con.commit()
    con.close()
    import gmmcourse.grading.engine as eng

    first: dict = {}
    real_record, real_run = gbm.record_submission, eng.run_submission

    def recorded(*a, **k):
        first.setdefault("recorded", time.perf_counter())
        return real_record(*a, **k)

    def started(*a, **k):
        first.setdefault("started", time.perf_counter())
        return real_run(*a, **k)

    import distributed

    real_submit = distributed.Client.submit

    def submitted(self, *a, **k):  # a submission handed to a worker has started grading
        first.setdefault("started", time.perf_counter())
        return real_submit(self, *a, **k)

    gbm.record_submission, eng.run_submission, distributed.Client.submit = recorded, started, submitted
    # Start the Dask workers as the CLI (python -m gmmcourse.grading) does: multiprocessing
    # imports no *.__main__ module in a spawned worker, but it would import this script (the
    # benchmark's corpus, nbformat, ...) in each one unless its main module is hidden.
    main = sys.modules["__main__"]
    main_file = main.__dict__.pop("__file__", None)
    try:
        t = time.perf_counter()
        s = autograde(["emtoy"], course, registry=reg, workers=args.workers, limits=limits, progress=False,
                      jax_cache=cache, warm_cache=False, echo=lambda s: None)
        resume_total = time.perf_counter() - t
    finally:
        gbm.record_submission, eng.run_submission, distributed.Client.submit = real_record, real_run, real_submit
        if main_file is not None:
            main.__file__ = main_file
    # grading starts when the first submission is handed to a worker (or run here, serially)
    return {"no_change_rerun_s": rerun, "resume_grading_starts_s": first["started"] - t,
            "resume_first_recorded_s": first["recorded"] - t, "resume_total_s": resume_total,
            "resumed": len(s.graded)}


def ctrl_c_stop(tmp: Path, repeats: int = 3) -> dict:
    """Seconds from Ctrl-C (SIGINT) to the grader's exit, during a parallel run whose two
    workers each run a kernel (an infinite loop and a memory bomb among the submissions)."""
    import os
    import signal
    import subprocess

    import psutil
    import toy

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "hostile"), os.environ.get("PYTHONPATH", "")]))
    stops = []
    for i in range(repeats):
        course = toy.write_course(tmp / f"ctrlc{i}", ["infinite_loop", "memory_bomb_list", "solution", "half"])
        p = subprocess.Popen([sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
                              "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm",
                              "--cell-timeout", "6000", "--notebook-timeout", "6000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while p.poll() is None:
            kids = psutil.Process(p.pid).children(recursive=True)
            if sum("ipykernel" in " ".join(k.cmdline()) for k in kids if k.is_running()) >= 2:
                break
            time.sleep(0.2)
        t = time.perf_counter()
        p.send_signal(signal.SIGINT)
        p.communicate()
        stops.append(time.perf_counter() - t)
        assert p.returncode == 130, p.returncode
    return {"stop_s": stops, "max_stop_s": max(stops), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--class-size", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overhead-n", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grading.json"))
    ap.add_argument("--ctrl-c-only", action="store_true",
                    help="only the Ctrl-C stop time (benchmarks/results/grading_ctrl_c.json)")
    args = ap.parse_args()
    if args.ctrl_c_only:
        import datetime
        import os
        import subprocess

        with tempfile.TemporaryDirectory(prefix="gmmbench-") as tmp:
            res = ctrl_c_stop(Path(tmp))
        res.update(commit=subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip(),
                   machine={"cpus": os.cpu_count(), "python": platform.python_version()},
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        dest = ROOT / "benchmarks" / "results" / "grading_ctrl_c.json"
        dest.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=2))
        return
    ref = _ref_means()
    asg = Assignment(JAX_TOY.id, JAX_TOY.notebook, JAX_TOY.parts, reference=lambda: ref)
    reg = {"emtoy": asg}
    limits = Limits(cell_timeout=120, notebook_timeout=300)
    out: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
                 "class_size": args.class_size, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="gmmbench-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "jaxcache"
        # --- cache benefit (per submission, serial, one solution notebook)
        nbt = nbformat.writes(jax_notebook(SOL))
        exports = [(p.grade_id, p.code) for p in asg.parts]
        cold, cold_cells = [], []
        for _ in range(2):
            shutil.rmtree(cache, ignore_errors=True)
            t = time.perf_counter()
            r = run_submission(nbt, exports, "{}", limits, {"jax_cache": str(cache), "jax_cache_writable": False})
            cold.append(time.perf_counter() - t)
            cold_cells.append(r["cells_s"])
        assert r["answers"]["test_em"]["ok"], r
        shutil.rmtree(cache, ignore_errors=True)
        run_submission(nbt, exports, "{}", limits, {"jax_cache": str(cache), "jax_cache_writable": True})  # warm
        warm, warm_cells = [], []
        for _ in range(2):
            t = time.perf_counter()
            r = run_submission(nbt, exports, "{}", limits, {"jax_cache": str(cache), "jax_cache_writable": False})
            warm.append(time.perf_counter() - t)
            warm_cells.append(r["cells_s"])
        out["cache"] = {"cold_s": min(cold), "warm_s": min(warm), "speedup": min(cold) / min(warm),
                        "cold_cells_s": min(cold_cells), "warm_cells_s": min(warm_cells),
                        "cells_speedup": min(cold_cells) / min(warm_cells),
                        "cache_entries": len(list(cache.glob("*")))}
        print("cache", out["cache"], flush=True)
        # --- overhead vs plain nbclient
        course = build_class(tmp / "ov", args.overhead_n)
        subs = sorted((course / "submitted").glob("*/emtoy/emtoy.ipynb"))
        plain = [plain_nbclient(p) for p in subs]
        graded = []
        for p in subs:
            t = time.perf_counter()
            nocache = tmp / "nocache"  # empty: no cache benefit, like plain nbclient
            shutil.rmtree(nocache, ignore_errors=True)
            nocache.mkdir()
            run_submission(nbformat.writes(nbformat.read(p, 4)), exports, "{}", limits,
                           {"jax_cache": str(nocache)})  # as the engine grades: one thread under a 1-core quota
            graded.append(time.perf_counter() - t)
        out["overhead"] = {"plain_nbclient_s": sum(plain) / len(plain), "grader_s": sum(graded) / len(graded),
                           "ratio": (sum(graded) / len(graded)) / (sum(plain) / len(plain)), "n": len(subs)}
        print("overhead", out["overhead"], flush=True)
        # --- serial vs parallel (whole class, end to end incl. gradebook, feedback, CSV)
        import logging

        from distributed import Client, LocalCluster

        t = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR, memory_limit=0)
        with Client(cluster) as c:
            c.run(lambda: __import__("gmmcourse.grading.executor"))  # workers import the package
        cluster_s = time.perf_counter() - t
        times, courses = {}, {}
        # parallel on the running cluster; its start-up (cluster_s, the same LocalCluster that
        # autograde starts without --scheduler) is added for the end-to-end figure
        for mode in ("serial", "parallel"):
            course = courses[mode] = build_class(tmp / mode, args.class_size)
            t = time.perf_counter()
            autograde(["emtoy"], course, registry=reg, serial=(mode == "serial"), workers=args.workers,
                      scheduler=cluster.scheduler_address if mode == "parallel" else None,
                      limits=limits, progress=True, jax_cache=cache, warm_cache=False, echo=lambda s: None,
                      trusted_network=True)  # this process's own loopback cluster
            times[mode] = time.perf_counter() - t
            print(mode, times[mode], flush=True)
        cluster.close()
        out["term"] = term(courses["parallel"], reg, limits, cache, args)
        print("term", out["term"], flush=True)
        out["speedup"] = {"serial_s": times["serial"], "parallel_s": times["parallel"],
                          "speedup": times["serial"] / times["parallel"],
                          "parallel_incl_cluster_start_s": times["parallel"] + cluster_s,
                          "speedup_incl_cluster_start": times["serial"] / (times["parallel"] + cluster_s),
                          "cluster_start_s": cluster_s,
                          "per_submission_serial_s": times["serial"] / args.class_size}
    out["throughput_per_min"] = {"serial": 60 * args.class_size / times["serial"],
                                 "parallel": 60 * args.class_size / times["parallel"]}
    import resource

    out["peak_rss_mib"] = {"grader": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    out["goals"] = {"speedup>=1.8": out["speedup"]["speedup"] >= 1.8, "overhead<=1.5": out["overhead"]["ratio"] <= 1.5,
                    "no-change re-run < 3 s": out["term"]["no_change_rerun_s"] < 3,
                    "resume starts grading < 5 s": out["term"]["resume_grading_starts_s"] < 5,
                    "cache>=2 (whole notebook)": out["cache"]["speedup"] >= 2,
                    "cache>=2 (student cells)": out["cache"]["cells_speedup"] >= 2}
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
