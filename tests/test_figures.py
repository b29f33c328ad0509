"""Every figure of the README's performance table comes from a committed result file."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402


def test_readme_figures_are_the_committed_results():
    """The generated blocks of README.md equal what benchmarks/report.py renders from the
    results: a figure typed by hand, or a result rerun without `make bench`'s report, fails."""
    text = (ROOT / "README.md").read_text()
    assert report.render(text) == text, "README.md's figures differ from benchmarks/results: run python benchmarks/report.py"


def test_check_mode_fails_on_a_hand_edited_figure(tmp_path, monkeypatch):
    """The --check mode can fail: a README whose table was edited by hand is refused."""
    text = (ROOT / "README.md").read_text()
    em = json.loads((ROOT / "benchmarks/results/em.json").read_text())
    shown = f"**{em['speedup_vs_sklearn']:,.1f}x faster**"
    assert shown in text
    fake = tmp_path / "README.md"
    fake.write_text(text.replace(shown, "**99.9x faster**"))
    monkeypatch.setattr(report, "README", fake)
    assert report.main(["--check"]) == 1
    fake.write_text(text)
    assert report.main(["--check"]) == 0


def test_grading_doc_figures_are_the_committed_results():
    """docs/grading.md's grading-scale figures equal what benchmarks/report.py renders from
    benchmarks/results/grading.json."""
    text = report.GRADING_DOC.read_text()
    assert report.render(text, report.GRADING_DOC_BLOCKS) == text, (
        "docs/grading.md's figures differ from benchmarks/results: run python benchmarks/report.py")


def test_check_mode_fails_on_a_hand_edited_doc_figure(tmp_path, monkeypatch):
    gr = json.loads((ROOT / "benchmarks/results/grading.json").read_text())
    text = report.GRADING_DOC.read_text()
    shown = f"**{gr['speedup']:,.2f}x**"
    assert shown in text
    fake = tmp_path / "grading.md"
    fake.write_text(text.replace(shown, "**9.99x**"))
    monkeypatch.setattr(report, "GRADING_DOC", fake)
    assert report.main(["--check"]) == 1
    fake.write_text(text)
    assert report.main(["--check"]) == 0


def test_grading_figures_come_from_a_real_assignment():
    """The grading benchmark graded one of the course's assignments (not a toy), the class it
    says, every submission of it, and its resume was measured to a recorded grade."""
    from gmmcourse.grading.assignments import ASSIGNMENTS

    gr = json.loads((ROOT / "benchmarks/results/grading.json").read_text())
    assert gr["assignment"] in ASSIGNMENTS
    assert sum(k["n"] for k in gr["parallel"]["per_kind"].values()) == gr["class_size"]
    assert gr["parallel"]["summary"].startswith(f"graded {gr['class_size']} ")
    assert gr["no_change_rerun"]["summary"].startswith("graded 0 ")
    assert gr["resume_killed"]["killed"] and gr["resume"]["first_recorded_s"] > 0
    # the class is what it says: the solutions earned every automatic point, the blank none
    full = sum(p.points for p in ASSIGNMENTS[gr["assignment"]].parts)
    kinds = gr["parallel"]["per_kind"]
    assert kinds["correct"]["score_min"] == full and kinds["blank"]["score_max"] == 0


# Results written before common.write recorded the commit, not rerun since (the GPU ones by
# benchmarks/gpu_check.sh on a lent GPU machine; the others take longer than a loaded shared
# machine allowed): the README says "commit not recorded" for each. Rerunning one removes it
# from this list (the test fails until it is removed); a new file is never allowed on it.
COMMIT_NOT_RECORDED = {"gpu/em-gpu.json", "gpu/sampler-gpu.json"}
MACHINE_KEYS = {"cpu", "cores", "device", "jax", "python"}


def result_files() -> dict[str, dict]:
    results = ROOT / "benchmarks" / "results"
    return {str(f.relative_to(results)): json.loads(f.read_text()) for f in sorted(results.rglob("*.json"))}


def test_every_result_names_its_run():
    """Every committed result file names the commit it measured, the machine (CPU, cores, JAX
    device, JAX and Python versions) and the date: benchmarks/common.write adds them."""
    files = result_files()
    assert len(files) >= 16, sorted(files)
    for f, r in files.items():
        m = r.get("machine") or {}
        assert MACHINE_KEYS <= set(m), f"{f} does not name its machine ({sorted(MACHINE_KEYS - set(m))} missing): rerun its benchmark"
        assert str(r.get("measured", ""))[:4].isdigit(), f"{f} does not name its date: rerun its benchmark"
        if f in COMMIT_NOT_RECORDED:
            assert "commit" not in r, f"{f} names its commit now: remove it from COMMIT_NOT_RECORDED"
            shown = report.gpu_figures() if f.startswith("gpu/") else report.performance_table()
            assert f"{report.when(r)}" in shown and "commit not recorded" in report.when(r), f
            continue
        assert len(str(r.get("commit", "")).split("+")[0]) >= 12, f"{f} does not name its commit: rerun its benchmark"
    for f in COMMIT_NOT_RECORDED:
        assert f in files, f"{f} is gone: remove it from COMMIT_NOT_RECORDED"


# Results made before common.write recorded the load averages, not rerun since: the table
# says "load not recorded" for each. Every committed result records its load now (the last
# four were rerun on 2026-12-07); a file added here must say why it could not be rerun.
LOAD_NOT_RECORDED: set[str] = set()


def test_every_result_records_its_load():
    """Result files record the load averages at their run's start and end (a shared machine's
    figures say how loaded it was), and the table cites them."""
    table = report.performance_table()
    for f, r in result_files().items():
        if f.startswith("gpu/"):
            continue
        if f in LOAD_NOT_RECORDED:
            assert "load_start" not in r, f"{f} records its load now: remove it from LOAD_NOT_RECORDED"
            assert f"`{f}`: {report.when(r)}; load not recorded |" in table, f
            continue
        assert len(r.get("load_start", ())) == 3 and len(r.get("load_end", ())) == 3, f"{f} does not record its load"
        assert f"{report.loads(r)} |" in table, f


def test_make_bench_runs_every_benchmark_whose_result_is_committed():
    """Each result file is written by a benchmark that `make bench` (benchmarks/run.py) runs,
    and each registered script exists: none is left out, none is stale."""
    import run

    made = {out: name for name, (script, _, outs) in run.BENCHMARKS.items() for out in outs}
    for name, (script, _, _) in run.BENCHMARKS.items():
        assert (ROOT / "benchmarks" / script).exists(), f"{name}: {script} does not exist"
    for f in result_files():
        if f.startswith("gpu/"):  # written by benchmarks/gpu_check.sh on a GPU machine (run.py's docstring)
            continue
        assert f in made, f"benchmarks/results/{f} is written by no benchmark in benchmarks/run.py's BENCHMARKS"


def test_make_bench_installs_what_the_benchmarks_need():
    """`make bench` from a fresh clone installs the Python environment, the system tools and
    the npm packages (the book benchmark builds the book, which serves MathJax from
    node_modules): pretend each stamp's inputs are new, and make's plan runs each installer.
    (A fresh-clone run found the npm packages missing: the book benchmark failed at once.)"""
    plan = subprocess.run(["make", "-n", "-W", "package-lock.json", "-W", "requirements.lock", "bench"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # a dry run: a hang guard only
    assert plan.returncode == 0, plan.stderr
    assert "npm ci" in plan.stdout, plan.stdout
    assert "pip sync" in plan.stdout, plan.stdout


def test_every_result_file_is_cited():
    """The README's table cites every result file (outside gpu/, which its GPU paragraph cites)."""
    cited = {f for *_, f in report.performance_rows()}
    assert {f for f in result_files() if not f.startswith("gpu/")} - cited == set()


def test_benchmarks_write_the_commit():
    out = subprocess.run([sys.executable, "-c", "import common; print(common.commit())"], cwd=ROOT / "benchmarks",
                         capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert out.startswith(head)


def test_grading_doc_probe_figures_are_the_committed_results():
    """docs/grading.md's prose figures of the function probes are those of
    benchmarks/results/probe_rates.json (they were once left at an earlier run's 100 seeds)."""
    text = " ".join(report.GRADING_DOC.read_text().split())
    pr = json.loads((ROOT / "benchmarks/results/probe_rates.json").read_text())
    correct = {k: v for k, v in pr["false_fail"].items() if "loop" not in k}
    loops = {k: v for k, v in pr["false_fail"].items() if "loop" in k}
    assert {v["seeds"] for v in correct.values()} == {pr["seeds"]} and not any(v["failed"] for v in pr["false_fail"].values())
    assert f"failed in 0 of {pr['seeds']:,} seeds each (95 % upper bound {100 * max(v['upper95'] for v in correct.values()):.1f} %)" in text
    assert f"per-cup loop versions in 0 of {max(v['seeds'] for v in loops.values())}" in text
    caught = {(v["failed"], v["seeds"]) for v in pr["power"].values()}
    assert len(caught) == 1, caught  # the doc states one figure for every mistake
    (n, seeds), = caught
    assert f"each of {len(pr['power'])} listed mistakes" in text and f"was caught in {n} of {seeds} seeds" in text


def test_grading_doc_limit_figures_are_a_committed_run():
    """docs/grading.md's measured limits (the slowest style vs the cell limit, R-hat of a correct
    sampler, throttling, the grader's memory under a flood) come from a real run of
    benchmarks/bench_limits.py, committed as benchmarks/results/limits.json; the generated block
    (checked by test_grading_doc_figures_are_the_committed_results) holds them."""
    path = ROOT / "benchmarks/results/limits.json"
    assert path.exists(), "benchmarks/results/limits.json is missing: run python benchmarks/run.py limits"
    li = json.loads(path.read_text())
    assert not li["smoke"], "benchmarks/results/limits.json is a --smoke run's: run python benchmarks/run.py limits"
    assert li["styles"]["scipy_loop"]["sweeps_timed"] > 0 and li["flood"]["outputs_mb"] >= 600
    text = " ".join(report.GRADING_DOC.read_text().split())
    assert f"**{li['flood']['growth_mib']:,.1f} MiB**" in text and f"**{li['styles']['rhat']['max']:.3f}**" in text


def test_grading_doc_limits_are_the_defaults():
    """The limits docs/grading.md's time-limit paragraph states are `Limits`' defaults."""
    from gmmcourse.grading.sandbox import Limits

    text = " ".join(report.GRADING_DOC.read_text().split())
    lim = Limits()
    assert f"The limits are {lim.cell_timeout:.0f} s per cell and {lim.notebook_timeout:.0f} s per notebook" in text


def test_grading_doc_dpmm_figures_are_the_committed_results():
    """docs/grading.md's prose figures of the dpmm probes and of the posterior-over-K part are
    those of benchmarks/results/dpmm_probe_rates.json and dpmm_posterior_rates.json."""
    text = " ".join(report.GRADING_DOC.read_text().split())
    pr = json.loads((ROOT / "benchmarks/results/dpmm_probe_rates.json").read_text())
    assert not any(v["failed"] for v in pr["false_fail"].values())
    up = 100 * max(v["upper95"] for v in pr["false_fail"].values())
    assert f"on {pr['draws']:,} fresh draws of the probe states" in text
    assert f"failed on none (95 % upper bound {up:.1f} %); each of the {len(pr['power'])} listed mistakes" in text
    assert {(v["caught"], v["draws"]) for v in pr["power"].values()} == {(pr["draws"], pr["draws"])}
    assert f"with its own advice on all {pr['draws']:,}" in text
    po = json.loads((ROOT / "benchmarks/results/dpmm_posterior_rates.json").read_text())
    assert not any(v["failed"] for v in po["false_fail"].values())
    up = 100 * max(v["upper95"] for v in po["false_fail"].values())
    assert f"the part on {po['seeds']} seeds" in text and f"failed at none (95 % upper bound {up:.1f} %)" in text
    pw = po["power"]
    caught_all = [k for k in ("k_from_largest_label", "share_of_one_chain", "shares_shifted_by_one", "too_few_draws")]
    assert all(pw[k]["caught"] == pw[k]["seeds"] == po["seeds"] for k in caught_all)
    assert f"lost the part at all {po['seeds']}" in text
    wrong = [k for k in pw if k.startswith("sampler_") and k != "sampler_plugin_for_new"]
    assert len({(pw[k]["caught"], pw[k]["seeds"]) for k in wrong}) == 1 and pw[wrong[0]]["caught"] == pw[wrong[0]]["seeds"]
    assert f"at all {pw[wrong[0]]['seeds']} tried" in text
    weak = pw["sampler_plugin_for_new"]
    assert f"only {weak['caught']} of {weak['seeds']}" in text


def _main_defaults(script: str) -> dict:
    """The default arguments of ``main`` in benchmarks/<script> (read, not imported)."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / script).read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    args = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
    return {a.arg: ast.literal_eval(d) for a, d in zip(args, fn.args.defaults)}


def test_make_bench_reruns_the_committed_rates():
    """`make bench` runs the statistical rate scripts as the committed files were made:
    false_fail.py and probe_rates.py get no arguments there (benchmarks/run.py), so their
    defaults must be the committed runs' sizes (once they were not: `make bench` would have
    graded the corpus at 3 seeds where the evidence of record has 10)."""
    import run

    assert run.BENCHMARKS["false_fail"][1] == [] and run.BENCHMARKS["probe_rates"][1] == []
    ff = json.loads((ROOT / "benchmarks/results/false_fail.json").read_text())
    assert _main_defaults("false_fail.py") == {"num_seeds": ff["num_seeds"], "corpus_seeds": ff["corpus_seeds"]}
    pr = json.loads((ROOT / "benchmarks/results/probe_rates.json").read_text())
    d = _main_defaults("probe_rates.py")
    assert (d["seeds"], d["loop_seeds"]) == (pr["seeds"], pr["loop_seeds"])


def test_a_grading_phase_with_survivors_is_still_recorded(tmp_path):
    """bench_grading's resume phase returns the processes that outlived its SIGKILL (psutil
    objects, which JSON cannot write): the phase is printed and its progress file written all
    the same. A fresh-clone `make bench` lost its resume figures to this (TypeError: Object of
    type Process is not JSON serializable) when one process outlived the kill by a second."""
    import psutil

    import bench_grading

    progress = tmp_path / "progress.json"
    r = bench_grading.phase("resume: run to be killed", lambda: {"wall_s": 1.0, "survivors": [psutil.Process()]},
                            {"commit": "x"}, progress)
    assert isinstance(r["survivors"][0], psutil.Process)  # the caller still gets the processes
    shown = json.loads(progress.read_text())["resume: run to be killed"]
    assert shown["wall_s"] == 1.0 and "psutil.Process" in shown["survivors"][0]
