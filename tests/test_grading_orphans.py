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
