"""Time limits count CPU time (gmmcourse.grading.clock): the grader's load never decides a grade.

A busy grading machine is simulated deterministically by a small CPU quota (`Limits.cpus`):
the kernel then gets a fixed share of one core, as it would on a machine busy with other
work, and its cells take that many times longer in wall-clock time.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gmmcourse.grading.clock import Allowance, Clock
from gmmcourse.grading.sandbox import Limits
from grading_helpers import needs_bwrap, run_toy, toy_score
import toy

# An honest cell: about 0.4 s of CPU time on this machine (a few million additions).
HONEST = "acc = 0\nfor i in range(6_000_000):\n    acc += i\nassert acc > 0"


class FakeCpu:
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self):
        return self.value


def test_clock_charges_cpu_seconds_and_bounds_wall_time(monkeypatch):
    import gmmcourse.grading.clock as clock_mod

    now = [100.0]
    monkeypatch.setattr(clock_mod.time, "monotonic", lambda: now[0])
    cpu = FakeCpu(50.0)
    clock = Clock(cpu, wait_factor=4)
    assert clock.accounting and clock.charged() == 0.0
    now[0] += 30.0  # 30 s of wall-clock time in which the submission got 3 s of CPU
    cpu.value += 3.0
    assert clock.charged() == pytest.approx(3.0) and clock.wall() == pytest.approx(30.0)
    assert clock.left(10.0) == Allowance(pytest.approx(7.0), pytest.approx(10.0))  # 4 x 10 - 30
    assert not clock.left(10.0).spent
    now[0] += 10.0
    assert clock.left(10.0).spent  # the wall-clock bound, with CPU seconds left
    assert clock.allowance(5.0) == Allowance(5.0, 20.0)
    assert Allowance(5, 20).at_most(Allowance(7, 3)) == Allowance(5, 3)


def test_clock_without_accounting_counts_wall_time(monkeypatch):
    import gmmcourse.grading.clock as clock_mod

    now = [0.0]
    monkeypatch.setattr(clock_mod.time, "monotonic", lambda: now[0])
    clock = Clock(lambda: None, wait_factor=4)
    assert not clock.accounting and clock.wait_factor == 1.0
    now[0] = 12.0
    assert clock.charged() == 12.0
    assert clock.allowance(10.0) == Allowance(10.0, 10.0)  # plain wall-clock limits
    assert clock.left(10.0).spent


@needs_bwrap
def test_a_starved_honest_cell_is_not_cut():
    """The kernel gets 3 % of a core (a machine about 30 times oversubscribed): the honest
    cell's ~0.4 s of CPU take ~13 s of wall-clock time, past a 6 s wall-clock limit but far
    within 6 s of CPU time (7 %; CPU time, unlike wall time, barely moves with the machine's
    load). Under wall-clock limits (the old grader) it was cut and the notebook lost its
    points; now it keeps them. The wall-clock bound (6 s x 40 = 240 s) is far above what the
    starved cell needs even at three times this suite's load."""
    limits = Limits(cell_timeout=6, notebook_timeout=90, export_timeout=30, cpus=0.03, wait_factor=40,
                    memory_bytes=512 << 20)
    res = run_toy(toy.notebook(extra_before=[HONEST]), limits)
    assert not any("time limit" in e for e in res["events"]), res["events"]
    assert toy_score(res) == 5.0, res["answers"]
    # the quota starved it past the limit in wall-clock time (a lower bound: load only adds)
    assert res["cpu_s"] < res["duration"] and res["duration"] > limits.cell_timeout, res


@needs_bwrap
def test_a_computing_offender_is_cut_by_its_cpu_seconds():
    """A cell that computes forever is stopped when it has used its CPU seconds (3 s here),
    long before its wall-clock bound (3 s x 100), and says so; the notebook's other cells run."""
    limits = Limits(cell_timeout=3, notebook_timeout=60, export_timeout=30, cpus=0.5, wait_factor=100,
                    memory_bytes=512 << 20)
    res = run_toy(toy.notebook(extra_before=["while True:\n    pass"]), limits)
    stopped = [e for e in res["events"] if "was stopped" in e]
    assert stopped and "3 s of CPU time per cell" in stopped[0], res["events"]
    assert toy_score(res) == 5.0, res["answers"]


@needs_bwrap
def test_a_waiting_offender_is_cut_by_the_wall_clock_bound():
    """A cell that only waits uses no CPU: it is stopped by the wall-clock bound
    (wait_factor x the limit: 2 x 3 s here), with a message that says it waited."""
    limits = Limits(cell_timeout=3, notebook_timeout=60, export_timeout=30, wait_factor=2, memory_bytes=512 << 20)
    res = run_toy(toy.notebook(extra_before=["import time\ntime.sleep(100_000)"]), limits)
    stopped = [e for e in res["events"] if "was stopped" in e]
    assert stopped and "waiting rather than computing" in stopped[0] and "at most 6 s per cell" in stopped[0], res["events"]
    assert toy_score(res) == 5.0, res["answers"]


def test_limits_state_cpu_time_to_students():
    """What the notebooks and the book say is what the grader does: CPU seconds, and the
    wall-clock bound for waiting."""
    from gmmcourse import course
    from gmmcourse.grading.assignments import ASSIGNMENTS
    from gmmcourse.grading.release import grading_environment  # the "How this notebook is graded" cell

    lim = Limits()
    assert lim.cell_timeout == course.CELL_TIME_LIMIT_S and lim.wait_factor == course.WAIT_FACTOR
    text = grading_environment(next(iter(ASSIGNMENTS.values())), replace(lim))
    assert f"{lim.cell_timeout:.0f} s of CPU time per cell" in text, text
    assert f"{lim.wait_factor * lim.cell_timeout:.0f} s" in text, text
