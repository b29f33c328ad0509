"""A grader killed by SIGKILL alone (its pid, not its process group: an OOM killer, ``kill -9
<pid>``) takes its Dask workers and their sandboxed kernels with it: nothing it started goes
on running a student's notebook with no one to stop it. The workers carry a parent-death
signal (`runners.dask_setup`), the sandboxes bwrap's ``--die-with-parent``. Needs bubblewrap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from grading_helpers import _env, needs_bwrap, toy
from proc_state import can_run, start_time

pytestmark = needs_bwrap


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _cmd(q: psutil.Process) -> str:
    try:
        return " ".join(q.cmdline())
    except psutil.Error:
        return ""


def test_sigkill_of_the_grader_alone_leaves_no_worker_or_sandbox(tmp_path):
    course = toy.write_course(tmp_path, ["infinite_loop", "memory_bomb_list", "solution", "half"])
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm",
           "--cell-timeout", "6000", "--notebook-timeout", "6000"]
    # its own session: the test's kill can only be the grader's pid, never its group
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs: dict[int, int] = {}
    try:
        guard = time.monotonic() + 600  # two kernels running: a hang guard only
        while p.poll() is None and time.monotonic() < guard:
            kids = _tree(p.pid)
            if sum("ipykernel" in _cmd(k) for k in kids) >= 2:
                break
            time.sleep(0.2)
        assert p.poll() is None, "the grader ended before two kernels ran"
        kids = _tree(p.pid)
        assert sum("ipykernel" in _cmd(k) for k in kids) >= 2, [_cmd(k) for k in kids]
        procs = {k.pid: t for k in kids if (t := start_time(k.pid)) is not None}
        workers = {k.pid: procs[k.pid] for k in psutil.Process(p.pid).children()
                   if "spawn_main" in _cmd(k) and k.pid in procs}
        assert len(workers) >= 2, [_cmd(k) for k in kids]
        os.kill(p.pid, signal.SIGKILL)  # the grader only
        p.wait()
        # The kernel signals the workers as the grader exits, before it can be reaped: by now
        # each is gone, exiting or has SIGKILL pending (no wait, no timing: the mechanism).
        assert not [pid for pid, t in workers.items() if can_run(pid, t)]
        guard = time.monotonic() + 120  # the processes' way out: a hang guard only
        left = list(procs)
        while left and time.monotonic() < guard:
            left = [pid for pid, t in procs.items() if can_run(pid, t)]
            time.sleep(0.2)
        assert not left, [(pid, _cmd(psutil.Process(pid))) for pid in left]
    finally:  # what a broken grader left: never into the next test
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid, t in procs.items():
            if can_run(pid, t):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


LAUNCHER = """
import subprocess, sys
from gmmcourse.grading.sandbox import die_with
prefix, check = die_with(int(sys.argv[1]))
p = subprocess.Popen([*prefix, "/bin/sh", "-c", check + 'exec sleep 1000', "gmm-sandbox"])
print(p.pid, flush=True)
print(p.wait(), flush=True)
"""


def test_a_sandbox_never_outlives_the_worker_that_launched_it():
    """The sandbox's launch (`sandbox.die_with`): a worker killed just after it forked the
    sandbox, before bwrap armed its own parent-death signal, left an idle kernel running until
    the next grader (seen in benchmarks/bench_grading.py's resume phase). Now (1) a launch
    whose worker is already gone when its first shell word runs exits at once, running
    nothing, and (2) a launched sandbox dies when its worker is killed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a launcher that has died: its pid is no sandbox's parent
    r = subprocess.run([sys.executable, "-c", LAUNCHER, str(gone.pid)], env=_env(), capture_output=True, text=True,
                       timeout=300)  # a hang guard: sleep 1000 would run if the check did not stop it
    assert r.returncode == 0 and r.stdout.split()[-1] == "1", (r.stdout, r.stderr)  # the sandbox exited 1 at once
    # (2) the launcher is the worker: SIGKILL it once its sandbox runs
    worker = subprocess.Popen([sys.executable, "-c", LAUNCHER.replace("int(sys.argv[1])", "__import__('os').getpid()")],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        child = int(worker.stdout.readline())
        born = start_time(child)
        guard = time.monotonic() + 120  # until the sandbox runs sleep (milliseconds): a hang guard
        while _cmd(psutil.Process(child)) != "sleep 1000":
            assert time.monotonic() < guard, "the launched sandbox never ran"
            time.sleep(0.01)
        worker.kill()
        worker.wait()
        guard = time.monotonic() + 120  # the kernel delivers the signal at once; a guard against a hang only
        while can_run(child, born) and time.monotonic() < guard:
            time.sleep(0.05)
        assert not can_run(child, born), "the sandbox outlived the worker that launched it"
    finally:
        if worker.poll() is None:
            worker.kill()
        try:
            psutil.Process(child).kill()
        except (psutil.Error, NameError):
            pass
