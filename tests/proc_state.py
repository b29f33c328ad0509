"""Whether a process can still run code, read from /proc (Linux), for the tests of stopping.

A process the grader killed may still be on its way out when the grader moves on: a SIGKILL
pending, then exiting (its command line already empty), then a zombie (Z) that its parent,
or a pid 1 that never reaps, leaves in the table. None of these can run code again."""

from __future__ import annotations

import signal
from pathlib import Path

PF_EXITING = 0x4
"""The kernel's flag for a task in do_exit (include/linux/sched.h)."""
SIGKILL_BIT = 1 << 8  # signal 9 in the SigPnd/ShdPnd masks of /proc/<pid>/status


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot; with the pid, a process's identity:
    pids are reused), or None if there is no such process."""
    st = _stat(pid)
    return None if st is None else st[0]


def _stat(pid: int) -> tuple[int, str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]), fields[0], int(fields[6])  # fields 22 (start), 3 (state), 9 (flags)


def _kill_pending(pid: int) -> bool:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return True  # gone meanwhile
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value.strip(), 16) & SIGKILL_BIT:
            return True
    return False


def can_run(pid: int, start: int) -> bool:
    """Whether the process ``pid`` started at ``start`` still exists and can run code: not a
    zombie (Z) or dead (X), not exiting, no SIGKILL pending."""
    st = _stat(pid)
    if st is None or st[0] != start or st[1] in "ZX" or st[2] & PF_EXITING:
        return False
    return not _kill_pending(pid)


def sigint_default() -> None:
    """``preexec_fn`` for a grader that a test will Ctrl-C: SIGINT back to its default in the child.

    A process started in the background of a non-interactive shell (``make test &``, ``nohup``,
    many CI launchers) inherits SIGINT *ignored*, and Python then leaves it ignored instead of
    installing its KeyboardInterrupt handler: the grader would never see the test's Ctrl-C and
    would grade on (that, not load, made the Ctrl-C tests fail in background runs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def catches_sigint(pid: int) -> bool:
    """Whether ``pid`` has a handler for SIGINT (Python's KeyboardInterrupt), from /proc."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        key, _, value = line.partition(":")
        if key == "SigCgt":
            return bool(int(value.strip(), 16) & (1 << (signal.SIGINT - 1)))
    return False


SIGINT_IGNORED = ("the grader has no SIGINT handler (SIGINT ignored, inherited from a background shell?): "
                  "start it with preexec_fn=proc_state.sigint_default")


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant: what a test does when the grader it started failed to
    stop, so that a failing test leaves nothing running to load the tests after it."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass


def ctrl_c(p, hang_guard: float) -> tuple[str, str]:
    """Press Ctrl-C on the grader ``p`` (a ``subprocess.Popen`` started with `sigint_default`)
    and return its ``(stdout, stderr)`` once it has exited. Fails, leaving nothing running
    (`kill_tree`), when it has no SIGINT handler or has not exited within ``hang_guard``
    seconds (a guard against a hang, not a measured bound)."""
    import subprocess

    if not catches_sigint(p.pid):  # it would grade on
        kill_tree(p.pid)
        p.communicate()
        raise AssertionError(SIGINT_IGNORED)
    p.send_signal(signal.SIGINT)
    try:
        return p.communicate(timeout=hang_guard)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid)
        p.communicate()
        raise AssertionError(f"the grader did not stop within {hang_guard:g} s of Ctrl-C") from None
