"""Per-submission cgroups on cgroup v1, v2 (a delegated subtree) and hybrid hosts, fail closed.

Each submission's kernel joins its own cgroup with a memory cap (no swap), a process and
thread cap and a CPU quota; its CPU time is counted (`CGroup.cpu_seconds`, v1's cpuacct, v2's
cpu.stat), since the time limits count CPU seconds (`gmmcourse.grading.clock`). `CGroup(limits)` raises `LimitUnavailable` (one line: which limit
and how to fix it) when a controller is missing, not delegated or not writable, unless
``limits.allow_unlimited`` (a trusted class; the engine records it in the run's log).

Where the hierarchy is:

* ``GMG_CGROUP_ROOT`` (default ``/sys/fs/cgroup``): the cgroup file system. cgroup v2 when
  it holds ``cgroup.controllers``; hybrid when ``unified/`` does and the v1 controllers are
  mounted beside it (the controllers are then v1's); v1 otherwise.
* on v2, ``GMG_CGROUP_BASE`` (a directory under the root) is the delegated subtree the grader
  may write, with ``memory pids cpu`` in its ``cgroup.controllers``; by default the grader's
  own cgroup (``/proc/self/cgroup``). The controllers are enabled in the base's
  ``cgroup.subtree_control``; when the base holds processes (v2 allows controllers only below
  cgroups without processes), they first move into a leaf ``gmmgrade-supervisor``.

Tests point both variables at a fake v2-shaped tree.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

from .spec import GradingError

__all__ = ["CONTROLLERS", "CGroup", "LimitUnavailable", "hierarchy", "owner_alive", "parent_dirs", "sigkill"]

CONTROLLERS = ("memory", "pids", "cpu")
SUPERVISOR = "gmmgrade-supervisor"
_FIX_V2 = ("run the grader as root in a cgroup v2 subtree delegated to it (e.g. `systemd-run --scope -p "
           "Delegate=yes ...`) or set GMG_CGROUP_BASE to a directory whose cgroup.subtree_control "
           "holds +memory +pids +cpu; or pass --allow-unlimited for a trusted class")
_FIX_V1 = ("run the grader as root with the cgroup v1 memory, pids and cpu controllers mounted under "
           "/sys/fs/cgroup; or pass --allow-unlimited for a trusted class")


class LimitUnavailable(GradingError):
    """A resource limit cannot be applied on this host (one line: which and how to fix it)."""


def owner_alive(pid: int) -> bool:
    """Whether the process that owns a cgroup or scratch dir still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def sigkill(victims: Callable[[], Iterable[int]], rounds: int = 100) -> None:
    """SIGKILL every process that ``victims()`` names, and ask again, until it names none that
    can still run (a fork racing the kill is caught the next round) or ``rounds`` rounds have
    passed. Never this process; a zombie (dead, not yet reaped) is not killed again. The one
    kill loop of the grader: a submission's cgroup, a worker's process tree, this process's
    own sandboxes."""
    me = os.getpid()
    for _ in range(rounds):
        pids = {p for p in victims() if p != me and owner_alive(p)}
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # gone meanwhile
                pass
        time.sleep(0.02)


def _root() -> Path:
    return Path(os.environ.get("GMG_CGROUP_ROOT", "/sys/fs/cgroup"))


def hierarchy(root: Path | None = None) -> str:
    """``"v2"``, ``"hybrid"``, ``"v1"`` or ``"none"`` for the cgroup file system at `root`."""
    root = root or _root()
    if (root / "cgroup.controllers").is_file():
        return "v2"
    v1 = any((root / c).is_dir() for c in CONTROLLERS)
    if v1 and (root / "unified" / "cgroup.controllers").is_file():
        return "hybrid"
    return "v1" if v1 else "none"


def _own_cgroup(match) -> str | None:
    """Our path in /proc/self/cgroup for the line whose controller list satisfies `match`."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if match(ctrls):
                return path
    except (OSError, ValueError):
        return None
    return None


def write_control(path: Path, text: str) -> None:
    """Write one cgroup control file (a test can watch every write the grader makes)."""
    with open(path, "w") as f:  # in a cgroup file system open() cannot create a file: a missing one raises
        f.write(text)


# --------------------------------------------------------------------------- v1


def _v1_base(controller: str) -> Path | None:
    """Our own cgroup (v1) for `controller`, if it exists and is writable."""
    root = _root() / controller
    if not root.is_dir():
        return None
    rel = _own_cgroup(lambda c: controller in c.split(",")) or "/"
    base = root / rel.lstrip("/")
    return base if base.is_dir() and os.access(base, os.W_OK) else None


def _v1_make(name: str, limits) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for ctrl in CONTROLLERS:
        base = _v1_base(ctrl)
        if base is None:
            raise LimitUnavailable(f"{_WHAT[ctrl]}: no writable cgroup v1 {ctrl} controller under {_root()}: {_FIX_V1}")
        d = base / name
        try:
            d.mkdir()
            dirs[ctrl] = d
            if ctrl == "memory":
                write_control(d / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (d / "memory.memsw.limit_in_bytes").exists():  # no swap either (absent without swap accounting)
                    write_control(d / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            elif ctrl == "pids":
                write_control(d / "pids.max", str(limits.max_pids))
            elif limits.cpus > 0:
                period = int((d / "cpu.cfs_period_us").read_text())
                write_control(d / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * period))))
        except (OSError, ValueError) as e:
            _rmdirs(dirs.values())
            raise LimitUnavailable(f"{_WHAT[ctrl]}: cannot set up the cgroup v1 {ctrl} controller in {d} "
                                   f"({e.strerror or e}): {_FIX_V1}") from None
    # CPU time accounting (`gmmcourse.grading.clock`: limits count CPU seconds): cpuacct, a
    # directory of its own unless it is mounted together with cpu ("cpu,cpuacct")
    base = _v1_base("cpuacct")
    if base is None:
        _rmdirs(dirs.values())
        raise LimitUnavailable(f"CPU time accounting: no writable cgroup v1 cpuacct controller under {_root()} "
                               f"(time limits count CPU seconds): {_FIX_V1}")
    d = base / name
    if d.resolve() == dirs["cpu"].resolve():
        dirs["cpuacct"] = dirs["cpu"]
    else:
        try:
            d.mkdir()
            dirs["cpuacct"] = d
        except OSError as e:
            _rmdirs(dirs.values())
            raise LimitUnavailable(f"CPU time accounting: cannot set up the cgroup v1 cpuacct controller in {d} "
                                   f"({e.strerror or e}): {_FIX_V1}") from None
    return dirs


# --------------------------------------------------------------------------- v2


def _v2_base() -> Path:
    root = _root()
    env = os.environ.get("GMG_CGROUP_BASE")
    if env:
        base = Path(env)
        return base if base.is_absolute() else root / env
    rel = _own_cgroup(lambda c: c == "")
    if rel is None:
        raise LimitUnavailable(f"cgroup limits: /proc/self/cgroup names no cgroup v2 path: {_FIX_V2}")
    return root / rel.lstrip("/")


def _words(path: Path) -> set[str]:
    try:
        return {w.lstrip("+") for w in path.read_text().split()}
    except OSError:
        return set()


def _v2_prepare(base: Path) -> None:
    """Enable memory, pids and cpu for the children of `base` (or raise LimitUnavailable)."""
    if not base.is_dir() or not os.access(base, os.W_OK):
        raise LimitUnavailable(f"cgroup limits: the cgroup v2 directory {base} is not writable: {_FIX_V2}")
    have = _words(base / "cgroup.controllers")
    for ctrl in CONTROLLERS:
        if ctrl not in have:
            raise LimitUnavailable(f"{_WHAT[ctrl]}: the cgroup v2 {ctrl} controller is not delegated to {base} "
                                   f"(its cgroup.controllers: {' '.join(sorted(have)) or 'none'}): {_FIX_V2}")
    if set(CONTROLLERS) <= _words(base / "cgroup.subtree_control"):
        return
    want = " ".join(f"+{c}" for c in CONTROLLERS)
    try:
        write_control(base / "cgroup.subtree_control", want)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise LimitUnavailable(f"cgroup limits: cannot enable {want} in {base}/cgroup.subtree_control "
                                   f"({e.strerror}): {_FIX_V2}") from None
        # "no internal processes": move the base's processes (ours: the subtree is delegated) into a leaf
        leaf = base / SUPERVISOR
        try:
            leaf.mkdir(exist_ok=True)
            for pid in (base / "cgroup.procs").read_text().split():
                try:
                    write_control(leaf / "cgroup.procs", pid)
                except ProcessLookupError:
                    pass
            write_control(base / "cgroup.subtree_control", want)
        except OSError as e2:
            raise LimitUnavailable(f"cgroup limits: cannot enable {want} in {base}/cgroup.subtree_control "
                                   f"({e2.strerror}; processes outside the grader live there?): {_FIX_V2}") from None


def _v2_make(name: str, limits) -> dict[str, Path]:
    base = _v2_base()
    _v2_prepare(base)
    d = base / name
    try:
        d.mkdir()
    except OSError as e:
        raise LimitUnavailable(f"cgroup limits: cannot create a cgroup in {base} ({e.strerror}): {_FIX_V2}") from None
    try:
        write_control(d / "memory.max", str(limits.memory_bytes))
        if (d / "memory.swap.max").exists():  # absent without swap accounting
            write_control(d / "memory.swap.max", "0")
        write_control(d / "pids.max", str(limits.max_pids))
        if limits.cpus > 0:
            period = 100_000
            write_control(d / "cpu.max", f"{max(1000, int(limits.cpus * period))} {period}")
    except OSError as e:
        _rmdirs([d])
        raise LimitUnavailable(f"cgroup limits: cannot set a limit in {d} ({e.strerror}): {_FIX_V2}") from None
    return {c: d for c in CONTROLLERS}


def parent_dirs() -> list[Path]:
    """The directories the per-submission cgroups (``gmmgrade-*``) are made in on this host:
    v2's base, or one per v1 controller (cpuacct included; one when mounted together)."""
    if hierarchy() == "v2":
        return [_v2_base()]
    return sorted({b.resolve() for b in (_v1_base(c) for c in (*CONTROLLERS, "cpuacct")) if b is not None})


_WHAT = {"memory": "memory limit", "pids": "process limit", "cpu": "CPU limit"}


def _rmdirs(dirs) -> None:
    for d in set(dirs):
        for _ in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


class CGroup:
    """A per-submission cgroup: memory + pids + cpu, on v1 (one directory per controller) or
    v2 (one directory). `active` is False only under ``limits.allow_unlimited`` on a host
    where the limits cannot be applied."""

    def __init__(self, limits, name: str | None = None, accounting: bool = True):
        """`accounting`: the grader's time limits count this cgroup's CPU seconds, so its CPU
        time counter must be readable, or the cgroup is refused (the course server's caps
        count no time and pass False)."""
        self.name = name or f"gmmgrade-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.version = hierarchy()
        self.dirs: dict[str, Path] = {}
        self.unavailable: str | None = None
        try:
            if self.version == "v2":
                self.dirs = _v2_make(self.name, limits)
            elif self.version in ("v1", "hybrid"):
                self.dirs = _v1_make(self.name, limits)
            else:
                raise LimitUnavailable(f"cgroup limits: no cgroup file system at {_root()}: {_FIX_V2}")
            if accounting and self.cpu_seconds() is None:
                self._refuse_unaccounted()
        except LimitUnavailable as e:
            if not getattr(limits, "allow_unlimited", False):
                raise
            self.unavailable = str(e)

    def _refuse_unaccounted(self) -> None:
        """Without a readable CPU time counter the time limits could not count CPU seconds
        (they would silently become wall-clock limits, which a busy machine decides): refuse."""
        v2 = self.version == "v2"
        where = self.dirs["cpu" if v2 else "cpuacct"] / ("cpu.stat" if v2 else "cpuacct.usage")
        _rmdirs(self.dirs.values())
        self.dirs = {}
        raise LimitUnavailable(f"CPU time accounting: {where} gives no CPU time (the time limits count CPU "
                               f"seconds): {_FIX_V2 if v2 else _FIX_V1}")

    @staticmethod
    def cleanup_stale() -> int:
        """Remove per-submission cgroups left by graders that were killed (dead owner pid)."""
        version = hierarchy()
        try:
            bases = parent_dirs()
        except LimitUnavailable:
            return 0
        n = 0
        for base in bases:
            for d in base.glob("gmmgrade-*"):
                try:
                    owner = int(d.name.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if owner == os.getpid() or owner_alive(owner):
                    continue
                stale = CGroup.__new__(CGroup)
                stale.name, stale.version, stale.dirs = d.name, version, {"memory": d}
                stale.remove()
                n += 1
        return n

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def _read(self, ctrl: str, file: str) -> str:
        d = self.dirs.get(ctrl)
        if d is None:
            return ""
        try:
            return (d / file).read_text()
        except OSError:
            return ""

    @staticmethod
    def _field(text: str, key: str) -> int:
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                try:
                    return int(parts[1])
                except ValueError:
                    return 0
        return 0

    def oom_events(self) -> int:
        if self.version == "v2":
            return self._field(self._read("memory", "memory.events"), "oom_kill")
        text = self._read("memory", "memory.oom_control")
        if "oom_kill " in text:
            return self._field(text, "oom_kill")
        try:
            return int(self._read("memory", "memory.failcnt") or 0)
        except ValueError:
            return 0

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) every process of the cgroup has used so far, in seconds;
        None without accounting (no cgroup, or its counter cannot be read)."""
        if self.version == "v2":
            text = self._read("cpu", "cpu.stat")
            if "usage_usec" not in text:
                return None
            return self._field(text, "usage_usec") / 1e6
        text = self._read("cpuacct", "cpuacct.usage").strip()
        try:
            return int(text) / 1e9
        except ValueError:
            return None

    def pids_hit(self) -> bool:
        if self.version == "v2":
            return self._field(self._read("pids", "pids.events"), "max") > 0
        ev = self._read("pids", "pids.events").split()
        try:
            return len(ev) >= 2 and int(ev[1]) > 0
        except ValueError:
            return False

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (all of them were started by this grader)."""
        if self.version == "v2":
            for d in set(self.dirs.values()):
                try:
                    write_control(d / "cgroup.kill", "1")  # Linux >= 5.14; else the loop below
                except OSError:
                    pass
        sigkill(self.pids, rounds=50)

    def pids(self) -> set[int]:
        """The processes in the cgroup now."""
        pids: set[int] = set()
        for f in self.procs_files():
            try:
                pids |= {int(p) for p in Path(f).read_text().split()}
            except (OSError, ValueError):
                pass
        return pids

    def remove(self) -> None:
        self.kill_all()
        _rmdirs(self.dirs.values())
        self.dirs = {}
