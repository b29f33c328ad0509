"""Bubblewrap sandbox and resource limits for one student kernel.

Only the *kernel* runs inside the sandbox. The trusted driver (nbclient, in the grading
worker) stays outside and talks to the kernel over Unix-domain (``ipc``) ZeroMQ sockets that
live in the submission's private scratch directory, the only writable place the kernel sees.

Layers (each one a fallback for the other):

* bubblewrap: new mount, PID, network (loopback only), IPC and UTS namespaces; read-only
  view of the Python install, the venv and ``src/`` with ``gmmcourse/grading`` (and whatever
  an assignment hides, `SandboxConfig.hide`) masked; no ``solutions/``, no ``grading/`` course
  root; ``--die-with-parent``. bwrap itself starts from an empty environment (its pid-1
  process is visible in the sandbox as ``/proc/1``), the kernel from a minimal one.
* seccomp: ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM (kernel keyrings are
  per host uid, shared with root's outside the sandbox).
* scratch: the only writable places (the kernel's working directory with the ZeroMQ sockets,
  and ``/tmp``) are size-capped tmpfs mounts whose pages are charged to the submission's
  memory cgroup; nothing a student writes reaches the host's disk.
* cgroup v1 ``memory``, ``pids`` and ``cpu`` controllers (one cgroup per submission, killed
  and removed afterwards) when ``/sys/fs/cgroup`` is writable: memory cap, process cap, and
  a CPU quota (``Limits.cpus``) so that a burner cannot slow its neighbours;
* ``prlimit``: address space, file size, core dumps, open files (always).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from gmmcourse import course

__all__ = ["Limits", "SandboxConfig", "CGroup", "Scratch", "kernel_command", "sandbox_available", "seccomp_filter"]

GRADING_PKG = Path(__file__).resolve().parent
SRC_ROOT = GRADING_PKG.parent.parent  # .../src
REPO_ROOT = SRC_ROOT.parent


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    # Sized from measured run times of slow but reasonable solutions (docs/grading.md, "Time
    # limits"); the values students read (book, notebooks) are in gmmcourse.course.
    cell_timeout: float = float(course.CELL_TIME_LIMIT_S)  # seconds per student cell
    notebook_timeout: float = float(course.NOTEBOOK_TIME_LIMIT_S)  # seconds for all student cells
    export_timeout: float = 60.0  # seconds per Part.export
    startup_timeout: float = 60.0  # kernel start
    # One wall-clock budget for everything else a submission costs after its cells (exports,
    # kernel restarts, replays): a submission never holds a worker longer than
    # notebook_timeout + grace_timeout (+ a few seconds to stop the kernel).
    grace_timeout: float = 180.0
    memory_bytes: int = course.MEMORY_LIMIT_GIB << 30  # cgroup memory cap (kernel + children)
    address_space_bytes: int = 0  # RLIMIT_AS; 0 = only when no memory cgroup is available
    max_pids: int = 64  # cgroup pids cap (threads count too)
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE
    output_bytes: int = 1 << 20  # outputs kept per notebook (the rest is truncated)
    max_message_bytes: int = 16 << 20  # ZeroMQ message cap (bigger ones are dropped)
    export_bytes: int = 4 << 20  # one exported answer
    max_restarts: int = 3  # kernel restarts after a death or timeout
    scratch_bytes: int = 256 << 20  # the kernel's writable working directory (tmpfs)
    tmp_bytes: int = 64 << 20  # /tmp inside the sandbox (tmpfs)
    cpus: float = float(course.CPU_CORES)  # CPU quota of a submission (cgroup cpu.cfs_quota_us), in cores
    notebook_bytes: int = 4 << 20  # the executed notebook returned to the grader (sources + outputs)
    submission_bytes: int = 20 << 20  # a submitted notebook file (a bigger one is invalid, never read)


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox exposes. Paths are resolved on the machine that grades."""

    python_prefix: str = sys.base_prefix  # e.g. /root/.pyenv/versions/3.12.1
    venv: str = sys.prefix  # the course venv
    src: str = str(SRC_ROOT)
    mask: str = str(GRADING_PKG)
    jax_cache: str | None = None  # mounted read-only (writable when warming)
    jax_cache_writable: bool = False
    single_thread: bool = True
    use_bwrap: bool = True
    # Paths under ``src`` that the kernel must not see (an assignment asks the student to
    # write what they contain): a module file is replaced by /dev/null (importing it fails),
    # a directory by an empty tmpfs; ``("gmmcourse",)`` leaves ``src/`` out altogether.
    hide: tuple[str, ...] = ()

    @property
    def python(self) -> str:
        return str(Path(self.venv) / "bin" / "python")


def sandbox_available() -> bool:
    return shutil.which("bwrap") is not None


def _cgroup_base(controller: str) -> Path | None:
    """Our own cgroup (v1) for ``controller``, if writable."""
    root = Path("/sys/fs/cgroup") / controller
    if not root.is_dir():
        return None
    rel = "/"
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if controller in ctrls.split(","):
                rel = path
                break
    except OSError:
        return None
    base = root / rel.lstrip("/")
    return base if base.is_dir() and os.access(base, os.W_OK) else None


CONTROLLERS = ("memory", "pids", "cpu")


class CGroup:
    """A per-submission cgroup (v1 ``memory`` + ``pids`` + ``cpu``); a no-op where unavailable."""

    def __init__(self, limits: Limits, name: str | None = None):
        self.name = name or f"gmmgrade-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dirs: dict[str, Path] = {}
        for ctrl in CONTROLLERS:
            base = _cgroup_base(ctrl)
            if base is None:
                continue
            d = base / self.name
            try:
                d.mkdir()
                if ctrl == "memory":
                    (d / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                    try:  # no swap either
                        (d / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
                    except OSError:
                        pass
                elif ctrl == "pids":
                    (d / "pids.max").write_text(str(limits.max_pids))
                elif limits.cpus > 0:
                    period = int((d / "cpu.cfs_period_us").read_text())
                    (d / "cpu.cfs_quota_us").write_text(str(max(1000, int(limits.cpus * period))))
                self.dirs[ctrl] = d
            except OSError:
                try:
                    d.rmdir()
                except OSError:
                    pass

    @staticmethod
    def cleanup_stale() -> int:
        """Remove per-submission cgroups left by graders that were killed (dead owner pid)."""
        n = 0
        for ctrl in CONTROLLERS:
            base = _cgroup_base(ctrl)
            if base is None:
                continue
            for d in base.glob("gmmgrade-*"):
                try:
                    owner = int(d.name.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if owner == os.getpid() or owner_alive(owner):
                    continue
                stale = CGroup.__new__(CGroup)
                stale.name, stale.dirs = d.name, {ctrl: d}
                stale.remove()
                n += 1
        return n

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def oom_events(self) -> int:
        d = self.dirs.get("memory")
        if d is None:
            return 0
        try:
            for line in (d / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
            return int((d / "memory.failcnt").read_text())
        except (OSError, ValueError):
            return 0

    def pids_hit(self) -> bool:
        d = self.dirs.get("pids")
        if d is None:
            return False
        try:
            ev = (d / "pids.events").read_text().split()
            return len(ev) >= 2 and int(ev[1]) > 0
        except (OSError, ValueError):
            return False

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (all of them were started by this grader)."""
        for _ in range(50):
            pids: set[int] = set()
            for f in self.procs_files():
                try:
                    pids |= {int(p) for p in Path(f).read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = {}


# --------------------------------------------------------------------------- seccomp

# Syscalls the kernel may not make: the kernel keyring calls (keyrings are per host uid, so a
# sandbox running as root would share root's user keyring and could leave keys behind for
# the next student). Numbers per architecture (see the kernel's syscall tables).
_DENIED = {
    # AUDIT_ARCH_*: (add_key, request_key, keyctl)
    0xC000003E: (248, 249, 250),  # x86_64 (x32 variants are these | 0x40000000)
    0x40000003: (286, 287, 288),  # i386
    0xC00000B7: (217, 218, 219),  # aarch64
}
_X32 = 0x40000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_RET_ALLOW, _RET_EPERM, _RET_KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000


def seccomp_filter() -> bytes:
    """A classic-BPF seccomp program (as bwrap's ``--seccomp FD`` reads it) that makes the
    keyring syscalls fail with EPERM, allows everything else, and kills a process that
    uses an architecture the table does not know (fail closed)."""
    prog: list[tuple[int, int, int, int]] = []
    for arch, nrs in _DENIED.items():
        nrs = nrs + tuple(n | _X32 for n in nrs) if arch == 0xC000003E else nrs
        body = [(_BPF_LD_W_ABS, 0, 0, 0)]  # seccomp_data.nr
        for i, nr in enumerate(nrs):
            # jump to the EPERM return (after the remaining jeqs and the ALLOW)
            body.append((_BPF_JEQ_K, len(nrs) - i, 0, nr))
        body += [(_BPF_RET_K, 0, 0, _RET_ALLOW), (_BPF_RET_K, 0, 0, _RET_EPERM)]
        prog += [(_BPF_LD_W_ABS, 0, 0, 4), (_BPF_JEQ_K, 0, len(body), arch)] + body  # seccomp_data.arch
    prog.append((_BPF_RET_K, 0, 0, _RET_KILL))
    order = "<" if sys.byteorder == "little" else ">"  # the kernel reads it in native order
    return b"".join(struct.pack(order + "HBBI", *ins) for ins in prog)


_FILTER_PATH: str | None = None


def _filter_file() -> str:
    """The seccomp program in a root-only file of this process (bwrap reads it from an fd)."""
    global _FILTER_PATH
    if _FILTER_PATH is None or not os.path.exists(_FILTER_PATH):
        fd, path = tempfile.mkstemp(prefix="gmg-seccomp-", suffix=".bpf")
        with os.fdopen(fd, "wb") as f:
            f.write(seccomp_filter())
        _FILTER_PATH = path
        atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return _FILTER_PATH


# --------------------------------------------------------------------------- scratch


class Scratch:
    """The submission's private working directory on the host: a size-capped tmpfs mount
    (when this process may mount, i.e. runs as root) holding the ZeroMQ sockets, the
    connection file and everything the kernel writes. Its pages are charged to the memory
    cgroup of the process that writes them (the student's kernel).

    The path is short (Unix socket paths are limited to ~107 bytes) and names its owner pid,
    so that a grader that was killed has its scratch cleaned by the next one.
    """

    def __init__(self, size_bytes: int):
        self.path = tempfile.mkdtemp(prefix=f"gmg-{os.getpid()}-", dir="/tmp")
        self.mounted = False
        if os.geteuid() == 0 and shutil.which("mount"):
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={max(size_bytes, 1 << 20)},mode=0700,nosuid,nodev", "tmpfs", self.path],
                capture_output=True,
            )
            self.mounted = r.returncode == 0

    def remove(self) -> None:
        _remove_scratch(Path(self.path))


def _remove_scratch(d: Path) -> None:
    if os.path.ismount(d):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def _kernel_env(cfg: SandboxConfig, scratch: str) -> dict[str, str]:
    """The kernel's whole environment (nothing of the grader's is passed on)."""
    env = {
        "PATH": f"{cfg.venv}/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{scratch}/.mpl",
        "IPYTHONDIR": f"{scratch}/.ipython",
        "JUPYTER_PLATFORM_DIRS": "1",
        "JAX_PLATFORMS": "cpu",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    if cfg.single_thread:
        env.update(
            {
                "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "NUMEXPR_NUM_THREADS": "1",
                "TF_NUM_INTEROP_THREADS": "1",
                "TF_NUM_INTRAOP_THREADS": "1",
            }
        )
    if cfg.jax_cache:
        env.update(
            {
                "JAX_COMPILATION_CACHE_DIR": cfg.jax_cache,
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            }
        )
    return env


def kernel_command(
    cfg: SandboxConfig, limits: Limits, scratch: str, connection_file: str, cgroup: CGroup
) -> list[str]:
    """argv that starts an ipykernel inside the sandbox, under the limits."""
    env = _kernel_env(cfg, scratch)
    inner = [cfg.python, "-m", "ipykernel_launcher", "-f", connection_file]
    prl = ["prlimit", f"--fsize={limits.file_size_bytes}", "--core=0", "--nofile=1024"]
    # Without a memory cgroup, RLIMIT_AS is the memory cap (JAX runs under 1 GiB of it).
    as_bytes = limits.address_space_bytes or (0 if cgroup.active else max(limits.memory_bytes, 1 << 30))
    if as_bytes:
        prl.append(f"--as={as_bytes}")
    if not cgroup.active:  # poor man's fork-bomb guard (not effective for root)
        prl.append(f"--nproc={limits.max_pids}")
    prl.append("--")
    if cfg.use_bwrap:
        box = [
            # bwrap's own pid-1 process inside the sandbox keeps bwrap's environment, readable
            # as /proc/1/environ: start bwrap from an empty one.
            "env", "-i", "PATH=/usr/bin:/bin",
            "bwrap",
            "--unshare-net",  # loopback only
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",  # run as root, bwrap would otherwise keep root's capabilities
            "--ro-bind", "/usr", "/usr",
        ]
        for d in ("/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32"):
            if os.path.islink(d):
                box += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                box += ["--ro-bind", d, d]
        for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group",
                  "/etc/nsswitch.conf", "/etc/hosts", "/etc/ssl", "/etc/ca-certificates",
                  "/etc/fonts", "/etc/matplotlibrc"):
            box += ["--ro-bind-try", f, f]
        box += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
        seen: set[str] = set()
        hide_all = "gmmcourse" in cfg.hide  # then src/ is not there at all (an empty dir would import)
        for p in (cfg.python_prefix, cfg.venv) + (() if hide_all else (cfg.src,)):
            rp = os.path.realpath(p)
            for q in {p, rp}:
                if q not in seen:
                    box += ["--ro-bind", q, q]
                    seen.add(q)
        if not hide_all:
            box += ["--tmpfs", cfg.mask, "--remount-ro", cfg.mask]
        for rel in () if hide_all else cfg.hide:
            target = str(Path(cfg.src) / rel)
            if os.path.isdir(target):
                box += ["--tmpfs", target, "--remount-ro", target]
            elif os.path.exists(target):
                box += ["--ro-bind", "/dev/null", target]
        if cfg.jax_cache:
            os.makedirs(cfg.jax_cache, exist_ok=True)
            box += ["--bind" if cfg.jax_cache_writable else "--ro-bind", cfg.jax_cache, cfg.jax_cache]
        box += ["--bind", scratch, scratch, "--chdir", scratch, "--clearenv", "--seccomp", "9"]
        for k, v in env.items():
            box += ["--setenv", k, v]
        cmd = prl + box + ["--"] + inner
        redirect = f' 9<"{_filter_file()}"'
    else:  # unsandboxed (tests of the limits only; never for students)
        cmd = prl + ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + inner
        redirect = ""
    join = "".join(f'echo $$ > "{f}" && ' for f in cgroup.procs_files())
    return ["/bin/sh", "-c", f'{join}exec "$@"{redirect}', "gmm-sandbox"] + cmd


def owner_alive(pid: int) -> bool:
    """Whether the process that owns a cgroup or scratch dir still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def make_scratch(size_bytes: int = Limits.scratch_bytes) -> Scratch:
    return Scratch(size_bytes)


def cleanup_stale_scratch() -> int:
    """Remove scratch dirs (and their tmpfs mounts) of graders that were killed (their owner
    pid is gone)."""
    n = 0
    for d in Path("/tmp").glob("gmg-*-*"):
        try:
            owner = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if owner != os.getpid() and not owner_alive(owner):
            _remove_scratch(d)
            n += 1
    return n
