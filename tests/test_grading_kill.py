"""The grader's one kill loop (`cgroups.sigkill`, behind `runners.kill_tree`, the grader's own
sandboxes and `CGroup.kill_all`): when it returns, nothing it was given can run any more,
including descendants that would outlive their parent; zombies and the grader itself are left
alone. Plain processes, no sandbox: every check is on process states, none on time."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
from proc_state import can_run, start_time

from gmmcourse.grading.cgroups import sigkill
from gmmcourse.grading.runners import kill_tree


def _argv0(q: psutil.Process) -> str:
    try:
        return (q.cmdline() or [""])[0]
    except psutil.Error:
        return ""


def test_kill_tree_leaves_no_descendant_running():
    """A worker-like process with children and a grandchild, one in its own session: they
    would all outlive it (reparented). When kill_tree returns, none of them can run."""
    kids: list[psutil.Process] = []
    root = subprocess.Popen(["sh", "-c", "setsid sleep 1000 & sleep 1000 & sh -c 'sleep 1000; :' & wait"])
    try:
        guard = time.monotonic() + 120  # the shell starting its children: a hang guard only
        while time.monotonic() < guard:
            kids = psutil.Process(root.pid).children(recursive=True)
            if sum(_argv0(k) == "sleep" for k in kids) >= 3:
                break
            time.sleep(0.05)
        assert len(kids) >= 4, kids  # three sleeps and the inner shell
        procs = {q.pid: start_time(q.pid) for q in [psutil.Process(root.pid), *kids]}
        kill_tree({root.pid})
        left = [pid for pid, t in procs.items() if t is not None and can_run(pid, t)]
        assert not left, left
    finally:  # what a broken kill_tree left
        for q in [*kids, psutil.Process(root.pid)]:
            try:
                q.kill()
            except psutil.Error:
                pass
        root.wait()


def test_sigkill_skips_zombies_and_this_process():
    """A zombie is dead already and this process is never a victim: one look, nothing to kill
    (before, CGroup.kill_all re-killed a zombie in its cgroup for all of its rounds)."""
    z = subprocess.Popen(["sleep", "1000"])
    z.kill()
    guard = time.monotonic() + 120  # the kill landing: a hang guard only
    while psutil.Process(z.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < guard:
        time.sleep(0.05)
    calls = []

    def victims():
        calls.append(1)
        return {z.pid, os.getpid()}

    try:
        sigkill(victims)
        assert len(calls) == 1
    finally:
        z.wait()
