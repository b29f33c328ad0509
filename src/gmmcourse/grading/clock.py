"""The time a submission is charged for: the CPU time its cgroup used, so that a busy grading
machine never uses up a student's time limits.

Every time limit of a submission (a cell's, the notebook's, an export's, the grace after the
cells) is a number of CPU seconds. The kernel runs on at most ``Limits.cpus`` cores (one by
default), so on a quiet machine a computing cell is stopped exactly when its wall-clock time
reaches the limit, as before; on a machine busy with other work (other submissions, other
users) it is stopped when it has had as much CPU as the limit, however long that took. The
same notebook therefore gets the same grade at any load.

Waiting costs no CPU (``time.sleep``, ``input()``, a lock, a stopped process), so each limit
also bounds wall-clock time: ``Limits.wait_factor`` times the limit. Nothing holds a grading
worker longer than that, and a cell that only waits is stopped after that long.

Without CPU accounting (no cgroup: ``--allow-unlimited`` on a host without one) CPU time is
read as wall-clock time and the wall-clock bound is the limit itself: the limits are then
plain wall-clock limits, as before (the run's log says that no limit could be applied).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["Allowance", "Clock"]


@dataclass(frozen=True)
class Allowance:
    """How long one request may still run: `cpu` seconds of CPU time, and at most `wall`
    seconds of wall-clock time whatever it does."""

    cpu: float
    wall: float

    @property
    def spent(self) -> bool:
        return self.cpu <= 0 or self.wall <= 0

    def at_most(self, other: "Allowance") -> "Allowance":
        return Allowance(min(self.cpu, other.cpu), min(self.wall, other.wall))


class Clock:
    """A submission's two clocks from its start: charged (CPU) seconds and wall seconds.

    `cpu_seconds` reads the CPU time of the submission's cgroup (None: no accounting)."""

    def __init__(self, cpu_seconds: Callable[[], float | None], wait_factor: float):
        self._cpu_seconds = cpu_seconds
        start = cpu_seconds()
        self.accounting = start is not None
        self.wait_factor = float(wait_factor) if self.accounting else 1.0
        self._cpu0 = start or 0.0
        self._wall0 = time.monotonic()

    def wall(self) -> float:
        return time.monotonic() - self._wall0

    def charged(self) -> float:
        """CPU seconds the submission used since the start (wall seconds without accounting)."""
        if not self.accounting:
            return self.wall()
        now = self._cpu_seconds()
        return self.wall() if now is None else now - self._cpu0  # accounting lost: count wall time

    def allowance(self, limit: float) -> Allowance:
        """A fresh request's own limit: `limit` CPU seconds, `wait_factor` x `limit` wall seconds."""
        return Allowance(limit, limit * self.wait_factor)

    def left(self, budget: float) -> Allowance:
        """What remains of a budget of `budget` charged seconds counted from the start."""
        return Allowance(budget - self.charged(), budget * self.wait_factor - self.wall())
