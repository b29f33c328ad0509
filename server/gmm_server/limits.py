"""Per-user caps of the course server: every number in ``CAPS`` (one place), applied to each
user's server and everything it starts (kernels, terminals).

* memory (RAM + swap, tmpfs pages included), processes and CPU: a cgroup per server, made by
  the grader's own helper (src/gmmcourse/grading/cgroups.py: cgroup v1, v2 in a delegated
  subtree, hybrid; ``GMG_CGROUP_ROOT`` / ``GMG_CGROUP_BASE`` as for the grader); the spawner
  puts the sandbox in it before anything of the user's runs, and removes it (killing what
  is left) when the server stops. It is named ``gmmgrade-<hub pid>-server-<user>-...`` so
  that a grader run or a later hub removes it if the hub was killed;
* ``/tmp``, ``/var/tmp`` and ``/dev/shm``: size-capped tmpfs (bwrap ``--size``);
* the home and the user's submissions: one ext4 image per user (``userfs.py``), a fixed size.

When a cap cannot be applied the server does not start: ``LimitError`` with one line saying
which and what to do (the user sees "Spawn failed: ..."; the hub's log has it too), and
``server/course start`` checks the same before starting the hub.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Caps:
    memory_bytes: int = 3 << 30  # RAM + swap of a user's server, kernels and tmpfs files together
    max_pids: int = 256  # processes and threads
    cpus: float = 2.0  # CPU time, in cores
    tmp_bytes: int = 512 << 20  # /tmp (and /var/tmp, each)
    shm_bytes: int = 256 << 20  # /dev/shm
    disk_bytes: int = 1 << 30  # the user's image: home + submissions


def from_env(env=None) -> Caps:
    """The caps, each overridable from the environment of ``server/course start``:
    GMM_USER_MEMORY_MIB, GMM_USER_PIDS, GMM_USER_CPUS, GMM_USER_TMP_MIB, GMM_USER_SHM_MIB,
    GMM_USER_DISK_MIB (a disk image keeps the size it was made with)."""
    e = os.environ if env is None else env
    d = Caps()
    mib = lambda k, v: int(e[k]) << 20 if k in e else v  # noqa: E731
    return Caps(memory_bytes=mib("GMM_USER_MEMORY_MIB", d.memory_bytes), max_pids=int(e.get("GMM_USER_PIDS", d.max_pids)),
                cpus=float(e.get("GMM_USER_CPUS", d.cpus)), tmp_bytes=mib("GMM_USER_TMP_MIB", d.tmp_bytes),
                shm_bytes=mib("GMM_USER_SHM_MIB", d.shm_bytes), disk_bytes=mib("GMM_USER_DISK_MIB", d.disk_bytes))


CAPS = from_env()


class LimitError(RuntimeError):
    """A cap could not be applied; the message is one line an administrator can act on."""


class UserCGroup:
    """The cgroup of one user's server, with the caps of ``caps`` (memory, pids, CPU)."""

    def __init__(self, user: str, caps: Caps = CAPS):
        from gmmcourse.grading.cgroups import CGroup, LimitUnavailable

        try:
            self._cg = CGroup(caps, name=f"gmmgrade-{os.getpid()}-server-{user}-{uuid.uuid4().hex[:6]}", accounting=False)
        except LimitUnavailable as e:
            raise LimitError(f"cannot cap users' servers: {e}") from None

    @property
    def dirs(self) -> list:
        return sorted(set(self._cg.dirs.values()))

    @property
    def procs_files(self) -> list[str]:
        return self._cg.procs_files()

    def join(self, pid: int = 0) -> None:
        """Put ``pid`` (0: the calling process) in the cgroup (called in the child before
        ``exec``: everything it starts stays in the cgroup)."""
        for f in self.procs_files:
            with open(f, "w") as fh:
                fh.write(str(pid or os.getpid()))

    def remove(self) -> None:
        """Kill what is left in it and remove it."""
        self._cg.remove()
