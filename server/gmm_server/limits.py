"""Per-user caps of the course server: every number in ``CAPS`` (one place), applied to each
user's server and everything it starts (kernels, terminals).

* memory (RAM + swap, tmpfs pages included), processes and CPU: a cgroup per user,
  ``<hub's own cgroup>/gmm-server-<user>``, on cgroup v1 (``memory``, ``pids``, ``cpu``
  hierarchies) or v2 (``memory.max``, ``memory.swap.max``, ``pids.max``, ``cpu.max`` in a
  delegated subtree); the spawner puts the sandbox in it before anything runs;
* ``/tmp``, ``/var/tmp`` and ``/dev/shm``: size-capped tmpfs (bwrap ``--size``);
* the home and the user's submissions: one ext4 image per user (``userfs.py``), a fixed size.

When a cap cannot be applied the server does not start: ``LimitError`` with one line saying
which and what to do (the user sees "Spawn failed: ..."; the hub's log has it too).

(The grader's sandbox, src/gmmcourse/grading/sandbox.py, has its own cgroup code for
submissions; this module is the server's and can be swapped for a shared helper.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


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


def _own_path(controller: str | None, proc_cgroup: str) -> str:
    """This process's cgroup path for ``controller`` (v1) or the unified one (None)."""
    for line in proc_cgroup.splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller is None and ctrls == "") or (controller and controller in ctrls.split(",")):
            return path
    raise LimitError(f"this process is in no {controller or 'cgroup v2'} cgroup (/proc/self/cgroup)")


def _write(path: Path, value: str, what: str, fix: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise LimitError(f"cannot cap {what} of users' servers ({path}: {e.strerror}); {fix}") from None


class UserCGroup:
    """The cgroup(s) of one user's server; created (or reused) with the caps of ``caps``."""

    def __init__(self, user: str, caps: Caps = CAPS, root: Path = CGROUP_ROOT, proc_cgroup: str | None = None):
        if proc_cgroup is None:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        self.name = f"gmm-server-{user}"
        self.dirs: list[Path] = []
        fix_v1 = "run the hub as root on a host whose cgroup v1 memory, pids and cpu hierarchies are writable"
        fix_v2 = ("run the hub in a delegated cgroup v2 subtree with memory, pids and cpu enabled "
                  "(e.g. systemd-run --property=Delegate=yes, or a container with its own cgroup namespace)")
        if (root / "cgroup.controllers").is_file():  # v2 (unified)
            base = root / _own_path(None, proc_cgroup).lstrip("/")
            have = set((base / "cgroup.controllers").read_text().split()) if (base / "cgroup.controllers").exists() else set()
            missing = {"memory", "pids", "cpu"} - have
            if missing:
                raise LimitError(f"cannot cap users' servers: cgroup v2 controller(s) {', '.join(sorted(missing))} "
                                 f"not available in {base}; {fix_v2}")
            enabled = set((base / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids", "cpu"} <= enabled:
                _write(base / "cgroup.subtree_control", "+memory +pids +cpu", "memory, processes and CPU", fix_v2)
            d = self._mkdir(base / self.name, fix_v2)
            _write(d / "memory.max", str(caps.memory_bytes), "memory", fix_v2)
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0", "swap", fix_v2)
            _write(d / "pids.max", str(caps.max_pids), "processes", fix_v2)
            _write(d / "cpu.max", f"{int(caps.cpus * 100_000)} 100000", "CPU", fix_v2)
            self.dirs.append(d)
            return
        for ctrl in ("memory", "pids", "cpu"):
            if not (root / ctrl).is_dir():
                raise LimitError(f"cannot cap users' servers: no cgroup v1 {ctrl} hierarchy at {root / ctrl}; {fix_v1}")
            d = self._mkdir(root / ctrl / _own_path(ctrl, proc_cgroup).lstrip("/") / self.name, fix_v1)
            if ctrl == "memory":
                _write(d / "memory.limit_in_bytes", str(caps.memory_bytes), "memory", fix_v1)
                if (d / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap either
                    _write(d / "memory.memsw.limit_in_bytes", str(caps.memory_bytes), "swap", fix_v1)
            elif ctrl == "pids":
                _write(d / "pids.max", str(caps.max_pids), "processes", fix_v1)
            else:
                period = int((d / "cpu.cfs_period_us").read_text())
                _write(d / "cpu.cfs_quota_us", str(max(1000, int(caps.cpus * period))), "CPU", fix_v1)
            self.dirs.append(d)

    @staticmethod
    def _mkdir(d: Path, fix: str) -> Path:
        try:
            d.mkdir(exist_ok=True)
        except OSError as e:
            raise LimitError(f"cannot create the cgroup {d} ({e.strerror}); {fix}") from None
        return d

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def join(self, pid: int = 0) -> None:
        """Put ``pid`` (0: the calling process) in every hierarchy (called in the child
        before ``exec``: everything it starts stays in the cgroup)."""
        for f in self.procs_files:
            with open(f, "w") as fh:
                fh.write(str(pid or os.getpid()))
