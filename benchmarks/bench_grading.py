"""The grading benchmark on the real assignment; writes benchmarks/results/grading.json.

    python benchmarks/bench_grading.py [--class-size 150] [--serial-size 50] [--workers 2]
    python benchmarks/bench_grading.py --ctrl-c-only   # benchmarks/results/grading_ctrl_c.json

A class of `coffee_blends` submissions (`benchmarks/coffee_class.py`: the released notebook
filled from the solution; mostly correct, some typical mistakes, a few that run past the cell
time limit or raise) is graded by the real CLI, ``python -m gmmcourse.grading autograde``, in
its bwrap sandbox with the real hidden inputs, reference and limits:

* throughput and speed-up: the whole class on ``--workers`` local Dask workers, and
  ``--serial`` on the first `--serial-size` students (a multiple of the mix's cycle, so the
  same mix), compared per submission; wall clock of the command, start-up included;
* peak memory: the grader's process tree (grader, Dask workers, sandboxes and kernels) polled
  every 0.2 s: the largest sum of RSS (shared pages counted once per process: an upper bound);
* a no-change re-run of the whole class (nothing is graded);
* resume: a third of the class resubmits, the grader is killed (SIGKILL to its process group)
  after its first grades are recorded, and restarted: seconds from the restart to the first
  grade *recorded* in the gradebook, and to the end.

Both runs start from the same warm state (the reference posterior cached in the course and
the shared JAX cache warmed by a one-submission run first), as on a term's second day. The
machine's load average is recorded at the start and end of each phase: on a shared machine
the figures say how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "hostile"))

import coffee_class  # noqa: E402
import common  # noqa: E402

AID = coffee_class.AID
POLL_S = 0.2


load = common.load


def grade_cmd(course: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gmmcourse.grading", "autograde", AID, "--course", str(course),
            "--source", str(ROOT / "solutions"), "--no-progress", *extra]


class Tree:
    """Peak memory of a process and its descendants, polled."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = {"total_mib": 0.0, "grader_mib": 0.0, "largest_other_mib": 0.0, "processes": 0}

    def processes(self) -> list:
        import psutil

        try:
            return [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def poll(self) -> None:
        import psutil

        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        rss = []
        for p in procs:
            try:
                rss.append(p.memory_info().rss / 2**20)
            except psutil.Error:
                rss.append(0.0)
        pk = self.peak
        pk["total_mib"] = max(pk["total_mib"], sum(rss))
        pk["grader_mib"] = max(pk["grader_mib"], rss[0])
        pk["largest_other_mib"] = max([pk["largest_other_mib"], *rss[1:]])
        pk["processes"] = max(pk["processes"], len(procs))


def run_grader(course: Path, *extra: str, log: Path, until=None) -> dict:
    """Run the CLI in its own process group, polling its memory; `until(course)` true: SIGKILL
    the group then. Returns wall seconds, exit status, peak memory and its summary line."""
    t = time.perf_counter()
    with open(log, "a") as err:
        p = subprocess.Popen(grade_cmd(course, *extra), cwd=ROOT, stdout=err, stderr=err, start_new_session=True)
        tree = Tree(p.pid)
        killed = False
        while p.poll() is None:
            tree.poll()
            if until is not None and until(course):
                victims = tree.processes()
                os.killpg(p.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(POLL_S)
        p.wait()
    wall = time.perf_counter() - t
    text = log.read_text().splitlines()
    summary = next((ln for ln in reversed(text) if ln.startswith("graded ")), None)
    out = {"wall_s": wall, "returncode": p.returncode, "killed": killed, "peak": tree.peak, "summary": summary}
    if killed:
        time.sleep(1)
        out["survivors"] = [v for v in victims if alive(v)]  # outside the process group (sandboxes?)
    return out


def alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def recorded(course: Path) -> dict[str, tuple]:
    """student -> (sha256, status, score, graded_at) of each grade recorded in the gradebook."""
    db = course / "gradebook.db"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("select student, sha256, status, score, graded_at from gmm_autograde "
                               "where assignment = ?", (AID,)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or being written: next poll
        return {}
    return {r[0]: tuple(r[1:]) for r in rows}


def graded_count(summary: str | None) -> int | None:
    return int(summary.split()[1]) if summary else None


def scores(course: Path, made: dict[str, str]) -> dict:
    """Per kind of submission: how many, and their scores (min, max) and statuses."""
    rec = recorded(course)
    out: dict = {}
    for student, kind in made.items():
        sha, status, score, _ = rec.get(student, (None, "missing", None, None))
        k = out.setdefault(kind, {"n": 0, "status": {}, "scores": []})
        k["n"] += 1
        k["status"][status] = k["status"].get(status, 0) + 1
        k["scores"].append(score)
    for k in out.values():
        s = [v for v in k.pop("scores") if v is not None]
        k["score_min"], k["score_max"] = (min(s), max(s)) if s else (None, None)
    return out
def ctrl_c_stop(tmp: Path, repeats: int = 3) -> dict:
    """Seconds from Ctrl-C (SIGINT) to the grader's exit, during a parallel run whose two
    workers each run a kernel (an infinite loop and a memory bomb among the submissions)."""
    import psutil
    import toy

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "benchmarks" / "hostile"), os.environ.get("PYTHONPATH", "")]))
    stops = []
    for i in range(repeats):
        course = toy.write_course(tmp / f"ctrlc{i}", ["infinite_loop", "memory_bomb_list", "solution", "half"])
        p = subprocess.Popen([sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
                              "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm",
                              "--cell-timeout", "6000", "--notebook-timeout", "6000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             # SIGINT back to its default: inherited ignored (a background run), Python keeps it ignored
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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




def _shown(value):
    """How a phase's result shows a value JSON has no type for: a number as a float, anything
    else (the psutil processes that outlived a kill) by its repr."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)


def phase(name: str, fn, out: dict | None = None, progress: Path | None = None):
    before = load()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: start, load {before}", flush=True)
    r = fn()
    r["load_start"], r["load_end"] = before, load()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(r, default=_shown)}", flush=True)
    if progress is not None and out is not None:  # what is measured so far, if a later phase never ends
        progress.write_text(json.dumps({**out, name: r}, indent=2, default=_shown) + "\n")
    return r


def resubmit(course: Path, students: list[str]) -> None:
    """These students hand in again: the same answers, one more markdown cell."""
    for s in students:
        path = course / "submitted" / s / AID / f"{AID}.ipynb"
        nb = nbformat.read(path, 4)
        nb.cells.append(nbformat.v4.new_markdown_cell("(resubmitted)"))
        nbformat.write(nb, path)


def bench(args, tmp: Path) -> dict:
    workers = ["--workers", str(args.workers)]
    out: dict = {"assignment": AID, "class_size": args.class_size, "serial_size": args.serial_size,
                 "workers": args.workers,
                 "notebooks": f"the real `{AID}` release filled from its solution: per {coffee_class.CYCLE}, "
                              + ", ".join(f"{m} {k}" for k, m in coffee_class.MIX.items()),
                 "load_start": load(),
                 "commit": common.commit(),
                 "src_pinned_at": os.environ.get("GMM_SRC_PINNED"),  # at the start: the code graded with (see benchmarks/pin_src.sh)
                 "invocation": " ".join(["benchmarks/bench_grading.py", *sys.argv[1:]])}
    if args.note:
        out["note"] = args.note
    progress = Path(args.progress_json) if args.progress_json else None
    logs = tmp / "logs"
    logs.mkdir()
    # warm state: the reference posterior (cached in <course>/.cache) and the shared JAX cache
    warm = tmp / "warm"
    coffee_class.write_class(warm, 1)
    out["warm_up"] = phase("warm-up (1 submission, reference computed)", lambda: run_grader(warm, "--serial", log=logs / "warm.log"), out, progress)

    def course(name: str, n: int) -> tuple[Path, dict]:
        c = tmp / name
        made = coffee_class.write_class(c, n)
        shutil.copytree(warm / ".cache", c / ".cache")
        return c, made

    # the parallel class is graded in two legs with the serial run between them, so that the
    # two sides of the speed-up see the same stretch of a shared machine's drifting load; the
    # second leg's grader skips the first leg's submissions (unchanged) and grades the rest
    half = args.class_size // 2
    first = half // coffee_class.CYCLE * coffee_class.CYCLE or half or args.class_size  # whole cycles where it can
    par, _ = course("parallel", first)
    legs = [phase(f"parallel, leg 1: {first} of {args.class_size} submissions",
                  lambda: run_grader(par, *workers, log=logs / "parallel.log"), out, progress)]
    assert graded_count(legs[0]["summary"]) == first, legs[0]

    ser, made_s = course("serial", args.serial_size)
    r = out["serial"] = phase(f"serial, {args.serial_size} submissions",
                              lambda: run_grader(ser, "--serial", log=logs / "serial.log"), out, progress)
    assert graded_count(r["summary"]) == args.serial_size, r
    out["serial"]["per_kind"] = scores(ser, made_s)

    made = coffee_class.write_class(par, args.class_size)  # the first leg's files rewritten identical: skipped
    if first < args.class_size:
        legs.append(phase(f"parallel, leg 2: the other {args.class_size - first} submissions",
                          lambda: run_grader(par, *workers, log=logs / "parallel.log"), out, progress))
        assert graded_count(legs[1]["summary"]) == args.class_size - first, legs[1]
    out["parallel"] = {"wall_s": sum(leg["wall_s"] for leg in legs),
                       "summary": f"graded {args.class_size} submissions in {len(legs)} legs: "
                                  + "; ".join(leg["summary"] for leg in legs),
                       "peak": max((leg["peak"] for leg in legs), key=lambda pk: pk["total_mib"]),
                       "legs": legs, "load_start": legs[0]["load_start"], "load_end": legs[-1]["load_end"],
                       "per_kind": scores(par, made)}
    out["no_change_rerun"] = phase("no-change re-run", lambda: run_grader(par, *workers, log=logs / "rerun.log"), out, progress)
    assert graded_count(out["no_change_rerun"]["summary"]) == 0, out["no_change_rerun"]

    def resume() -> None:
        # resume: correct submissions are handed in again (one cell more); the grader is killed
        # once it has recorded the first of them, then restarted
        again = [st for st in sorted(made) if made[st] == "correct"][: args.resubmit or args.class_size // 3]
        resubmit(par, again)
        before = recorded(par)

        def new_grades(c: Path, snapshot: dict) -> list[str]:
            now = recorded(c)
            return [st for st in again if st in now and now[st] != snapshot.get(st)]

        r = out["resume_killed"] = phase("resume: run to be killed", lambda: run_grader(
            par, *workers, log=logs / "killed.log", until=lambda c: len(new_grades(c, before)) >= args.kill_after),
            out, progress)
        assert r["killed"], r
        survivors = r.pop("survivors")
        r["processes_left_1s_after_kill"] = len(survivors)
        after_kill = recorded(par)
        done_before = len(new_grades(par, before))
        first: dict = {}

        def watch(c: Path) -> bool:
            if "t" not in first and new_grades(c, after_kill):
                first["t"] = time.perf_counter()
            return False

        t0 = time.perf_counter()
        r = out["resume"] = phase("resume: restart", lambda: run_grader(par, *workers, log=logs / "resume.log", until=watch), out, progress)
        r["first_recorded_at_exit"] = "t" not in first  # none seen while it ran: its last grade came within a poll
        if "t" not in first:
            first["t"] = t0 + r["wall_s"]
        r["processes_of_killed_run_left_after_restart"] = sum(alive(v) for v in survivors)
        for v in survivors:  # our own orphans: never left running into the next phase
            if alive(v):
                v.kill()
        r.update(first_recorded_s=first["t"] - t0, graded_before_kill=done_before, resubmitted=len(again),
                 graded_after_restart=graded_count(r["summary"]))

    try:
        resume()
    except Exception as e:  # noqa: BLE001  the other figures stand; the JSON says what failed
        out["resume_error"] = f"{type(e).__name__}: {e}"
        print("resume failed:", out["resume_error"], flush=True)
    out["load_end"] = load()
    if args.keep_logs:
        for f in logs.iterdir():
            shutil.copy(f, Path(args.keep_logs) / f.name)

    p, s = out["parallel"], out["serial"]
    out["throughput_per_min"] = {"parallel": 60 * args.class_size / p["wall_s"], "serial": 60 * args.serial_size / s["wall_s"]}
    out["per_submission_s"] = {"parallel": p["wall_s"] / args.class_size, "serial": s["wall_s"] / args.serial_size}
    out["speedup"] = out["per_submission_s"]["serial"] / out["per_submission_s"]["parallel"]
    out["speedup_basis"] = (f"per-submission wall clock: --serial on the first {args.serial_size} students (the same mix) "
                            f"vs {args.workers} workers on all {args.class_size}, graded in two legs before and after "
                            "the serial run (start-up paid twice)"
                            if args.serial_size != args.class_size else "the whole class, --serial vs workers")
    out["peak_memory_mib"] = {"parallel": p["peak"], "serial": s["peak"]}
    out["goals"] = {"speedup>=1.8": out["speedup"] >= 1.8,
                    "no-change re-run < 3 s": out["no_change_rerun"]["wall_s"] < 3,
                    "resume: first recorded grade < 5 s": (out["resume"]["first_recorded_s"] < 5
                                                           if "first_recorded_s" in out.get("resume", {}) else None)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--class-size", type=int, default=150)
    ap.add_argument("--serial-size", type=int, default=coffee_class.CYCLE,
                    help=f"students graded --serial (a multiple of {coffee_class.CYCLE} keeps the mix)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-after", type=int, default=3, help="resume: grades recorded before the kill")
    ap.add_argument("--resubmit", type=int, default=0, help="resume: students who resubmit (default a third)")
    ap.add_argument("--progress-json", default=None, metavar="FILE", help="write what is measured after each phase")
    ap.add_argument("--keep-logs", default=None, metavar="DIR", help="copy the grader's logs here")
    ap.add_argument("--out", default=None, help="write here instead of benchmarks/results/grading.json")
    ap.add_argument("--note", default=None, help="why this run departs from the defaults (shown in the README)")
    ap.add_argument("--ctrl-c-only", action="store_true",
                    help="only the Ctrl-C stop time (benchmarks/results/grading_ctrl_c.json)")
    args = ap.parse_args()
    if args.ctrl_c_only:
        with tempfile.TemporaryDirectory(prefix="gmmbench-") as tmp:
            common.write("grading_ctrl_c", ctrl_c_stop(Path(tmp)))
        return
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gmmbench-") as tmp:
        out = bench(args, Path(tmp))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")
    else:
        common.write("grading", out)
    if "resume_error" in out:  # the other figures are written; the run still failed
        sys.exit(f"the resume phase failed: {out['resume_error']}")


if __name__ == "__main__":
    main()
