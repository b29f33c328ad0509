"""The README's performance table and GPU paragraph, and docs/grading.md's grading-scale
figures, written from `benchmarks/results/*.json`.

    python benchmarks/report.py          # rewrite the generated blocks of README.md and docs/grading.md
    python benchmarks/report.py --check  # exit 1 if either differs from the results

Every figure in those blocks is read from a committed result file, with the date and commit of
its run; `make bench` rewrites them after running the benchmarks, and `tests/test_figures.py`
fails when the README and the results disagree (a figure typed by hand, or a result file
rerun without updating the README). A goal is "met" or "not met" by the number in the file,
never by the prose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BLOCKS = ("performance-table", "gpu-figures")
GRADING_DOC = ROOT / "docs" / "grading.md"
GRADING_DOC_BLOCKS = ("grading-scale", "grading-limits")
LIMITS_NOT_RUN = ("`benchmarks/results/limits.json` is not written yet: `python benchmarks/run.py limits` measures "
                  "the styles' times, R-hat, throttling and flood memory, and rewrites this paragraph.")


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def when(r: dict) -> str:
    """Date and commit of a result file's run, as the table cites them."""
    stamp = r.get("measured") or r.get("date")
    date = stamp[:10] if stamp else "date not recorded"
    commit = r.get("commit")
    return f"{date}, {'commit ' + commit if commit else 'commit not recorded'}"


def loads(r: dict) -> str:
    """The 1-minute load average at the run's start and end, as the table cites it."""
    if "load_start" not in r:
        return "load not recorded"
    return f"load {r['load_start'][0]:.1f} to {r['load_end'][0]:.1f}"


def machine(r: dict) -> str:
    m = r.get("machine")
    if not m:
        return "machine not recorded"
    return f"{m.get('cpu', 'CPU not recorded')}, {m.get('cores', m.get('cpus', '?'))} cores"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def x(v: float, d: int = 1) -> str:
    return f"{v:,.{d}f}x"


def s(v: float, d: int = 2) -> str:
    return f"{v:,.{d}f} s"


def ms(v: float, d: int = 1) -> str:
    return f"{v * 1e3:,.{d}f} ms"


def spread_text(sp: dict | None, rounds: int | None, d: int = 1) -> str:
    """" (median of N alternated rounds; quartiles a-b, extremes c-d)" where the run recorded them."""
    if not sp or not rounds:
        return " (one timing of each side, not alternated)"
    return (f" (median of {rounds} alternated rounds; quartiles {sp['q1']:.{d}f}-{sp['q3']:.{d}f}, "
            f"extremes {sp['min']:.{d}f}-{sp['max']:.{d}f})")


def graded(r: dict) -> str:
    """"N graded, M skipped" from a grading run's summary line ("graded N submission(s) (...),
    skipped M unchanged, in ...")."""
    words = (r.get("summary") or "").split()
    if len(words) < 7 or words[0] != "graded":
        return "no summary"
    return f"{words[1]} graded, {words[words.index('skipped') + 1]} skipped unchanged"


def performance_rows() -> list[tuple[str, str, str, str]]:
    """(benchmark, measured, goal, result file) for each row of the README's table."""
    rows = []
    em = load("em")
    rows.append((f"EM, N = {em['n']:,}, K = {em['k']}, {em['dtype']}: time per iteration vs scikit-learn `GaussianMixture`",
                 f"{ms(em['ours_s_per_iter'])} vs {ms(em['sklearn_s_per_iter'], 0)}: **{x(em['speedup_vs_sklearn'])} faster**"
                 + spread_text(em.get("speedup_spread"), em.get("rounds")),
                 f">= 12x: {met(em['speedup_vs_sklearn'] >= 12)}", "em.json"))
    rows.append(("EM vs the machine's exp/log floor (K·N `exp` + N `log`)",
                 f"{x(em['ratio_to_floor'], 2)} the floor ({ms(em['exp_log_floor_s'])})"
                 + spread_text(em.get("ratio_to_floor_spread"), em.get("rounds"), 2),
                 f"stretch <= 3x: {met(em['ratio_to_floor'] <= 3)}", "em.json"))

    sa = load("sampler")
    g, n = sa["gibbs"], sa["numpyro_nuts"]
    rows.append((f"Gibbs vs NumPyro NUTS on coffee (same model, {sa['chains']} chains x {sa['samples_per_chain']} draws), min-ESS/s, warm",
                 f"{g['min_ess_per_s_warm']:,.0f} vs {n['min_ess_per_s_warm']:,.0f} ESS/s: **{x(sa['speedup_warm'], 0)}**"
                 + spread_text(sa.get("speedup_warm_spread"), sa.get("warm_alternated", {}).get("rounds"), 0),
                 f">= 30x: {met(sa['speedup_warm'] >= 30)}", "sampler.json"))
    rows.append(("same, cold (first call in the benchmark's process, compilation included, with the environment's persistent JAX cache)",
                 f"{s(g['cold_s'], 1)} vs {s(n['cold_s'], 1)}: **{x(sa['speedup_cold'], 2)}** (one first call each)",
                 f">= 2x: {met(sa['speedup_cold'] >= 2)}", "sampler.json"))
    c = sa["cold_without_compilation_cache"]
    rows.append(("same, cold in a fresh process with no compilation cache",
                 f"{s(c['gibbs_s'], 1)} vs {s(c['numpyro_nuts_s'], 1)}: **{x(c['speedup'], 2)}**"
                 + spread_text(c.get("speedup_spread"), len(c.get("times_s", {}).get("gibbs", ())) or None, 2),
                 f">= 2x: {met(c['speedup'] >= 2)}", "sampler.json"))

    k = load("kernel")
    a = k["alternated"]
    r, rr = a["genjax_over_plain"], a["genjax_relabel_over_plain"]
    rows.append(("GenJAX-driven Gibbs kernel vs the same kernel in plain JAX (`gmmcourse.plain`), warm, like for like "
                 f"(the two alternated {a['rounds']} times in one process; per-round ratio)",
                 f"median **{x(r['median'], 2)}** (quartiles {r['q1']:.2f}-{r['q3']:.2f}, extremes {r['min']:.2f}-{r['max']:.2f}; "
                 f"{ms(a['genjax']['median_s'], 0)} vs {ms(a['plain']['median_s'], 0)}); with relabelling over all 3! "
                 f"permutations: median {x(rr['median'], 2)}",
                 f"median <= 1.25x: {met(r['median'] <= 1.25)}", "kernel.json"))

    dp = load("dpmm")
    dpa, dps, dpt = dp["alternated"], dp["sweeps_per_s"], dp["time_to_rhat"]
    dpr = dpa["genjax_over_plain"]
    rows.append((f"DP mixture, collapsed Gibbs (`gmmcourse.dpmm`) on {dp['data']}, {dp['chains']} chains: the GenJAX sweep vs "
                 f"its plain-JAX twin (`benchmarks/bench_dpmm.py`, the same draws; alternated {dpa['rounds']} times, per-round "
                 "ratio) and a NumPy loop; time to R-hat < 1.01 on the number of clusters",
                 f"median **{x(dpr['median'], 2)}** (quartiles {dpr['q1']:.2f}-{dpr['q3']:.2f}; with GenJAX's TFP-backed "
                 f"`student_t` {x(dp['genjax_tfp_student_t_over_plain'], 2)}); {dps['genjax']:,.0f} vs "
                 f"{dps['plain_jax']:,.0f} vs NumPy {dps['numpy_loop']:,.1f} sweeps/s per chain; R-hat {dpt['r_hat']:.3f} after "
                 f"**{s(dpt['seconds'], 1)}** ({dpt['warmup_sweeps']} + {dpt['kept_sweeps_per_chain']:,} sweeps a chain, "
                 f"ESS {dpt['ess_bulk']:,.0f}; compiling {s(dpt['compile_s'], 1)})",
                 f"median <= 1.25x: {met(dpr['median'] <= 1.25)}", "dpmm.json"))

    mv = load("mvn")
    me, mg = mv["em"], mv["gibbs_compile"]
    msp = me["speedup_per_iteration"]
    rows.append((f"Multivariate EM (`gmmcourse.multivariate`) vs scikit-learn's `GaussianMixture(covariance_type=\"full\")`, "
                 f"one iteration at N = {me['n']:,}, D = {me['d']}, K = {me['k']}, {me['dtype']} (`benchmarks/bench_mvn.py`; "
                 f"alternated {me['per_iteration']['rounds']} times, per-round ratio); the Gibbs sampler's programs over "
                 f"{len(mg['calls'])} calls in {mg['buckets_used']} shape buckets",
                 f"**{x(msp['median'], 1)}** faster (quartiles {msp['q1']:.1f}-{msp['q3']:.1f}, worst round {msp['min']:.1f}x; "
                 f"{s(me['per_iteration']['ours']['median_s'], 2)} vs {s(me['per_iteration']['sklearn']['median_s'], 1)}); "
                 f"{mg['programs_total']} programs ({mg['expected_programs']})",
                 f">= 5x: {met(msp['median'] >= 5)}; one compile per bucket: {met(mg['buckets_used'] * 2 == mg['programs_total'])}",
                 "mvn.json"))

    co = load("compile")
    z = co["sizes"]
    base = z.get("issue_baseline")
    if base:
        rows.append((f"`posterior(x, 2)` on {len(z['n'])} data sizes ({z['n'][0]:,}-{z['n'][-1]:,} points) in a fresh process, no cache: "
                     "shape buckets vs the package when the issue was filed (one program per size) and vs today's kernels compiled per shape",
                     f"{s(z['bucketed']['total_s'], 1)} vs {s(base['total_s'], 1)}: **{x(z['speedup_vs_issue_baseline'])}** "
                     f"(vs per shape, {s(z['per_shape_compilation']['total_s'], 1)}: {x(z['speedup'])})"
                     + ("" if z.get("rounds") else " (one fresh process of each, not alternated)"),
                     f">= 5x: {met(z['speedup_vs_issue_baseline'] >= 5)}", "compile.json"))
    sel = co["selection_coffee_k5"]
    w, cold = sel["warm_persistent_cache"], sel["cold_no_cache"]
    rows.append(("`bic_table(coffee, 5)` / `loo_table(coffee, 5)`, fresh process with a warm persistent cache (cold, no cache; second call)",
                 f"**{s(w['bic_table_s'])}** / **{s(w['loo_table_s'], 1)}** (cold {s(cold['bic_table_s'], 1)} / {s(cold['loo_table_s'], 0)}; "
                 f"second call {s(cold['bic_table_again_s'])} / {s(cold['loo_table_again_s'], 1)})",
                 f"< 2 s / < 5 s: {met(w['bic_table_s'] < 2 and w['loo_table_s'] < 5)}", "compile.json"))
    rz = co["resize_sampler_call"]
    first_name = next(iter(rz))
    again = {name: v for name, v in rz.items() if name != first_name}
    lowered = sum(v["programs_lowered"] for v in again.values())
    rows.append(("`posterior` again with other `num_samples`, `num_warmup`, `num_chains` or N in the bucket",
                 f"**{lowered} programs compiled** over {len(again)} calls "
                 f"({min(v['s'] for v in again.values()):.2f}-{max(v['s'] for v in again.values()):.2f} s per call; "
                 f"first call {s(rz[first_name]['s'], 1)})",
                 f"no recompilation: {met(lowered == 0)}", "compile.json"))

    st = load("startup")
    rows.append(("`import genjax, gmmcourse` + first `posterior` call",
                 f"import {s(st['no_cache']['import_s'], 1)}; first call {s(st['no_cache']['first_call_s'], 1)} without cache, "
                 f"**{s(st['cache_warm']['first_call_s'])} with a warm persistent cache ({x(st['first_call_speedup_with_warm_cache'], 0)})**",
                 "-", "startup.json"))

    b = load("book")
    rows.append(("book: no-change rebuild vs clean build",
                 f"{s(b['no_change_rebuild_s'], 1)} vs {s(b['clean_build_s'], 0)}: **{100 * b['ratio']:.1f} %**",
                 f"<= 10 %: {met(b['ratio'] <= 0.10)}", "book.json"))

    gr = load("grading")
    pm, sp = gr["per_submission_s"], gr["throughput_per_min"]
    rows.append((f"grading {gr['class_size']} submissions of the real `{gr['assignment']}` (released notebook filled from the "
                 f"solution: mostly correct, some mistakes, a few past the time limit or raising; real sandbox, inputs and "
                 f"reference), {gr['workers']} Dask workers"
                 f"{' (the class in two legs, before and after the serial run)' if 'legs' in gr['parallel'] else ''}"
                 f" vs `--serial` on the first {gr['serial_size']} (same mix), "
                 f"per submission; load average {gr['load_start'][0]:.1f} at the start, {gr['load_end'][0]:.1f} at the end "
                 f"(each phase's is in the file){'; ' + gr['note'] if gr.get('note') else ''}",
                 f"{s(pm['parallel'], 1)} vs {s(pm['serial'], 1)} a submission: **{x(gr['speedup'], 2)}**; "
                 f"{sp['parallel']:.1f} vs {sp['serial']:.1f} a minute ({s(gr['parallel']['wall_s'], 0)} for the class)",
                 f">= 1.8x: {met(gr['speedup'] >= 1.8)}", "grading.json"))
    rs, nc, mem = gr["resume"], gr["no_change_rerun"], gr["peak_memory_mib"]["parallel"]
    rows.append(("the same class: no-change re-run; resume after `SIGKILL` of the grader's process group "
                 f"({rs['resubmitted']} resubmitted, killed after {rs['graded_before_kill']} were recorded): restart to the "
                 "first grade recorded in the gradebook, and to the end; peak memory of grader, workers and sandboxes",
                 f"**{s(nc['wall_s'], 1)}** ({graded(nc)}); **{s(rs['first_recorded_s'], 1)}** to the first grade, "
                 f"{s(rs['wall_s'], 0)} for the {rs['graded_after_restart']} left; **{mem['total_mib']:,.0f} MiB** summed RSS "
                 f"(grader {mem['grader_mib']:.0f} MiB, largest other process {mem['largest_other_mib']:.0f} MiB)",
                 f"< 3 s: {met(nc['wall_s'] < 3)}; first grade < 5 s: {met(rs['first_recorded_s'] < 5)}", "grading.json"))
    cc = load("grading_ctrl_c")
    rows.append((f"Ctrl-C during a grading run on 2 workers, each running a kernel: until the grader has exited with "
                 f"every worker, kernel and sandbox gone ({cc['repeats']} repeats)",
                 f"at most **{s(cc['max_stop_s'], 1)}** ({', '.join(f'{v:.1f}' for v in cc['stop_s'])} s)",
                 f"< 5 s: {met(cc['max_stop_s'] < 5)}", "grading_ctrl_c.json"))

    sn = load("sanitise")
    cases = {k: v for k, v in sn["cases"].items() if k != "worst_notebook"}
    worst = max(cases, key=lambda k: cases[k]["markdown_html_s"] + cases[k]["clean_html_s"])
    rows.append(("the grader's own CPU on a hostile student's markdown and HTML (`grading.html_safety`): the costliest "
                 f"allowed notebook, and the worst of {len(cases)} hostile cell shapes (`benchmarks/bench_sanitise.py`)",
                 f"**{s(sn['cases']['worst_notebook']['markdown_html_s'])}** a notebook; worst cell `{worst}` "
                 f"{s(cases[worst]['markdown_html_s'] + cases[worst]['clean_html_s'])}",
                 "-", "sanitise.json"))

    pr = load("probe_rates")
    rows.append((f"the coffee notebook's function probes (`sample_z`, `sample_weights`, `sample_means`): correct functions "
                 f"over {pr['seeds']:,} seeds ({pr['loop_seeds']} for the per-cup loop versions); each listed mistake",
                 f"worst 95 % upper bound on a false fail **{100 * pr['worst_false_fail_upper95']:.1f} %** (no failure "
                 f"observed); lowest power **{pr['lowest_power']:.2f}**",
                 "-", "probe_rates.json"))
    dp = load("dpmm_probe_rates")
    ffs, pw = dp["false_fail"], dp["power"]
    rows.append((f"the dpmm notebook's function probes (`crp_probs`, `log_conditional`): correct functions "
                 f"({', '.join(ffs)}) over {dp['draws']:,} fresh probe states; each of {len(pw)} listed mistakes",
                 f"{sum(v['failed'] for v in ffs.values())} false fails, worst 95 % upper bound "
                 f"**{100 * max(v['upper95'] for v in ffs.values()):.1f} %**; lowest power **{dp['lowest_power']:.2f}**",
                 "-", "dpmm_probe_rates.json"))
    dq = load("dpmm_posterior_rates")
    ffs, pw = dq["false_fail"], dq["power"]
    weakest = min(pw, key=lambda k: pw[k]["caught"] / pw[k]["seeds"])
    rows.append((f"the dpmm notebook's posterior-over-K part on {dq['seeds']} seeds of the student's sampler run: "
                 f"correct samplers ({', '.join(ffs)}); each of {len(pw)} listed mistakes",
                 f"{sum(v['failed'] for v in ffs.values())} false fails, worst 95 % upper bound "
                 f"**{100 * max(v['upper95'] for v in ffs.values()):.1f} %**; lowest power **{dq['lowest_power']:.2f}** "
                 f"(`{weakest}`: {pw[weakest]['caught']} of {pw[weakest]['seeds']})",
                 "-", "dpmm_posterior_rates.json"))
    if (RESULTS / "limits.json").exists():
        li = load("limits")
        st, th, fl = li["styles"], li["throttle"], li["flood"]
        rows.append(("the grader's limits (`benchmarks/bench_limits.py`): the slowest sampler style (per-cup loop calling "
                     "scipy) at the minimum draws on one core, vs the cell limit; a JAX cell under the one-core quota with "
                     "one thread vs the default pools; the grading process's memory under an output flood",
                     f"**{s(st['scipy_loop']['at_minimum_s'], 0)}** ({100 * st['scipy_loop']['at_minimum_s'] / li['limits']['cell_s']:.0f} % "
                     f"of {s(li['limits']['cell_s'], 0)}); {s(th['single_thread_median_s'], 1)} vs "
                     f"{s(th['default_threads_median_s'], 1)}; **{fl['growth_mib']:,.0f} MiB** for {fl['outputs_mb']} MB "
                     f"(bound {fl['bound_mib']:,.0f} MiB)",
                     f"under the cell limit: {met(st['scipy_loop']['at_minimum_s'] < li['limits']['cell_s'])}; "
                     f"under the bound: {met(fl['growth_mib'] <= fl['bound_mib'])}", "limits.json"))
    ff = load("false_fail")
    rows.append(("exercises' hidden posterior checks, false-fail rate of a correct sampler (the minimum draws asked)",
                 f"**{ff['seeds_with_any_failure']} / {ff['num_seeds']} seeds**",
                 "-", "false_fail.json"))
    return rows


def performance_table() -> str:
    rows = performance_rows()
    dates = {}
    for *_, f in rows:
        r = load(f.removesuffix(".json"))
        dates.setdefault(f, f"{when(r)}; {loads(r)}")
    out = ["| benchmark | measured | goal | run (`benchmarks/results/`) |", "|---|---|---|---|"]
    for name, value, goal, f in rows:
        out.append(f"| {name} | {value} | {goal} | `{f}`: {dates[f]} |")
    machines = sorted({machine(load(f.removesuffix(".json"))) for f in dates})
    out.append("")
    out.append(f"Machines of these runs: {'; '.join(machines)}. Generated by `benchmarks/report.py` from the files named; "
               "`make bench` reruns the benchmarks and rewrites this table.")
    return "\n".join(out)


def gpu_figures() -> str:
    gpu = RESULTS / "gpu"
    em = json.loads((gpu / "em-gpu.json").read_text())
    sa = json.loads((gpu / "sampler-gpu.json").read_text())
    dev = em["machine"]["device"].split(":", 1)[1]
    c = sa["cold_without_compilation_cache"]
    return (f"**On a GPU** ({when(em)}, one {dev}, JAX {em['machine']['jax']}, the same code; run with "
            f"`benchmarks/gpu_check.sh`, results in `benchmarks/results/gpu/`): EM at N = {em['n']:,}, K = {em['k']}, {em['dtype']}: "
            f"**{ms(em['ours_s_per_iter'], 2)} per iteration**, {x(em['speedup_vs_sklearn'], 0)} scikit-learn on that machine's CPU "
            f"and {x(em['ratio_to_floor'], 2)} the GPU's exp/log floor. Gibbs vs NumPyro NUTS (both on the GPU), min-ESS/s: "
            f"**{x(sa['speedup_warm'], 0)}** warm, **{x(sa['speedup_cold'], 1)}** cold with the persistent cache, "
            f"**{x(c['speedup'], 1)}** cold with none ({s(c['gibbs_s'], 1)} vs {s(c['numpyro_nuts_s'], 1)}); the GenJAX kernel "
            f"took {x(sa['genjax_over_plain'], 2)} the plain-JAX kernel's time (one best-of timing each, not alternated). "
            f"On {sa['data'].split('(')[1].split(',')[0].replace('N=', '')} points a GPU gains nothing over the CPU for the sampler "
            f"({s(sa['gibbs']['warm_s'])} warm): it pays from large N, as EM shows. The package's statistical tests that passed "
            "there are listed in `benchmarks/results/gpu/tests.txt`.")


def grading_scale() -> str:
    """docs/grading.md's "Scale" figures, from benchmarks/results/grading.json."""
    gr = load("grading")
    rs, nc, mem = gr["resume"], gr["no_change_rerun"], gr["peak_memory_mib"]["parallel"]
    return (f"Last committed run ({when(gr)}; {machine(gr)}; load average {gr['load_start'][0]:.1f} at the start and "
            f"{gr['load_end'][0]:.1f} at the end; each phase's is in the file): {gr['workers']} workers graded "
            f"{gr['class_size']} `{gr['assignment']}` submissions in {s(gr['parallel']['wall_s'], 0)} "
            f"({gr['throughput_per_min']['parallel']:.1f} a minute), **{x(gr['speedup'], 2)}** the `--serial` rate per "
            f"submission (serial measured on the first {gr['serial_size']}, the same mix); peak memory of grader, workers "
            f"and sandboxes {mem['total_mib']:,.0f} MiB (summed RSS); a no-change re-run took {s(nc['wall_s'], 1)}; "
            f"after a `SIGKILL` of the grader's process group mid-run, the restarted grader recorded its first grade "
            f"after **{s(rs['first_recorded_s'], 1)}**.")


def grading_limits() -> str:
    """docs/grading.md's measured limits (results/limits.json) and warm-up (startup.json, compile.json)."""
    st_, co = load("startup"), load("compile")
    rz = co["resize_sampler_call"]
    first = next(iter(rz))
    again = [v for k, v in rz.items() if k != first]
    warm = (f"Warm-up ({when(st_)} and {when(co)}): the first `posterior` call in a fresh process took "
            f"{s(st_['no_cache']['first_call_s'], 0)} without a compilation cache (compile-dominated), "
            f"{s(st_['cache_warm']['first_call_s'], 1)} with a warm persistent cache (the grader warms "
            f"`.jax_cache/grading` before grading); after a first call ({first.removeprefix('first: ')}, "
            f"{s(rz[first]['s'], 0)}), calls with other "
            f"sizes compiled {sum(v['programs_lowered'] for v in again)} programs and took "
            f"{min(v['s'] for v in again):.2f}-{max(v['s'] for v in again):.2f} s.")
    if not (RESULTS / "limits.json").exists():
        return f"{LIMITS_NOT_RUN} {warm}"
    li = load("limits")
    st, th, fl, lim = li["styles"], li["throttle"], li["flood"], li["limits"]
    if li.get("smoke"):
        raise SystemExit("benchmarks/results/limits.json is a smoke run's: run python benchmarks/run.py limits")
    slow = st["scipy_loop"]["at_minimum_s"]
    n = st["scipy_loop"]["sweeps_timed"]
    timed = "both timed whole" if n == st["samples"] + st["warmup"] else f"both timed at {n} sweeps and scaled"
    return (f"Last committed run of `benchmarks/bench_limits.py` ({when(li)}; {machine(li)}; {loads(li)}), on one "
            f"pinned core: the coffee solution's vectorised numpy Gibbs sampler took **{s(st['vectorised_s'], 1)}** at the "
            f"minimum draws, {st['chains']} chains x ({st['samples']} + {st['warmup']}) sweeps; per-cup Python loops "
            f"{s(st['math_loop']['at_minimum_s'], 0)} (the math module) and **{s(slow, 0)}** (scipy's `norm.logpdf` for "
            f"every cup and component, the slowest style we know; {timed}), {100 * slow / lim['cell_s']:.0f} % of the {lim['cell_s']:.0f} s cell limit and "
            f"{100 * slow / lim['notebook_s']:.0f} % of the {lim['notebook_s']:.0f} s notebook limit. The solution's "
            f"largest split R-hat at the minimum draws was **{st['rhat']['max']:.3f}** over {st['rhat']['seeds']} seeds "
            f"(`RHAT_MAX` 1.05). A JAX cell (the coffee `posterior` call, compiled without a cache, then {th['matmuls']} "
            f"jitted 1024 x 1024 products) in the sandbox under the "
            f"{th['cpus']:g}-core quota took **{s(th['single_thread_median_s'], 1)}** ({s(th['single_thread_median_cpu_s'], 1)} "
            f"of CPU time, which the time limits count) with the thread pools cut to one thread and "
            f"{s(th['default_threads_median_s'], 1)} ({s(th['default_threads_median_cpu_s'], 1)} of CPU time) without "
            f"({x(th['default_over_single'], 1)} the time; median of "
            f"{th['rounds']} alternated rounds). A grading process's peak memory grew by **{fl['growth_mib']:,.1f} MiB** "
            f"while a notebook published {fl['outputs_mb']} MB of 1 MB outputs (`channels.queued_bytes_bound`: "
            f"{fl['bound_mib']:,.0f} MiB). {warm}")


GENERATORS = {"performance-table": performance_table, "gpu-figures": gpu_figures, "grading-scale": grading_scale,
              "grading-limits": grading_limits}


def render(text: str, blocks: tuple[str, ...] = BLOCKS, where: str = "README.md") -> str:
    """`text` with each generated block replaced by what the results say."""
    for name in blocks:
        start, end = f"<!-- {name}: generated by benchmarks/report.py -->", f"<!-- /{name} -->"
        if start not in text or end not in text:
            raise SystemExit(f"{where} has no '{start}' ... '{end}' block")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        indent = head.rsplit("\n", 1)[-1]  # a block inside a list item keeps the item's indentation
        indent = indent if not indent.strip() else ""
        body = "\n".join(indent + line if line else line for line in GENERATORS[name]().split("\n"))
        text = f"{head}{start}\n{body}\n{indent}{end}{tail}"
    return text


def main(argv: list[str]) -> int:
    status = 0
    for path, blocks in ((README, BLOCKS), (GRADING_DOC, GRADING_DOC_BLOCKS)):
        text = path.read_text()
        new = render(text, blocks, path.name)
        if "--check" in argv:
            if new != text:
                print(f"{path.name}'s generated figures differ from benchmarks/results: run python benchmarks/report.py")
                status = 1
            continue
        if new != text:
            path.write_text(new)
            print(f"wrote the generated blocks of {path}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
