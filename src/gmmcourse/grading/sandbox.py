"""Bubblewrap sandbox and resource limits for one student kernel.

Only the *kernel* runs inside the sandbox. The trusted driver (nbclient, in the grading
worker) stays outside and talks to the kernel over Unix-domain (``ipc``) ZeroMQ sockets that
live in the submission's private scratch directory, the only writable place the kernel sees.

Layers (each one a fallback for the other):

* bubblewrap: new mount, PID, network (loopback only), IPC and UTS namespaces; read-only
  view of the Python install, the venv and ``src/`` with ``gmmcourse/grading`` masked by an
  empty tmpfs; no ``solutions/``, no ``grading/`` course root; ``--die-with-parent``;
  environment cleared.
* cgroup v1 ``memory`` and ``pids`` controllers (one cgroup per submission, killed and
  removed afterwards) when ``/sys/fs/cgroup`` is writable;
* ``prlimit``: address space, file size, core dumps, open files (always).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxConfig", "CGroup", "kernel_command", "sandbox_available"]

GRADING_PKG = Path(__file__).resolve().parent
SRC_ROOT = GRADING_PKG.parent.parent  # .../src
REPO_ROOT = SRC_ROOT.parent


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    cell_timeout: float = 60.0  # seconds per student cell
    notebook_timeout: float = 300.0  # seconds for all student cells of a notebook
    export_timeout: float = 60.0  # seconds per Part.export
    startup_timeout: float = 60.0  # kernel start
    memory_bytes: int = 2 << 30  # cgroup memory cap (kernel + children)
    address_space_bytes: int = 0  # RLIMIT_AS; 0 = only when no memory cgroup is available
    max_pids: int = 64  # cgroup pids cap (threads count too)
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE
    output_bytes: int = 1 << 20  # outputs kept per notebook (the rest is truncated)
    max_message_bytes: int = 16 << 20  # ZeroMQ message cap (bigger ones are dropped)
    export_bytes: int = 4 << 20  # one exported answer
    max_restarts: int = 3  # kernel restarts after a death or timeout


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


class CGroup:
    """A per-submission cgroup (v1 ``memory`` + ``pids``); a no-op where unavailable."""

    def __init__(self, limits: Limits, name: str | None = None):
        self.name = name or f"gmmgrade-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dirs: dict[str, Path] = {}
        for ctrl in ("memory", "pids"):
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
                else:
                    (d / "pids.max").write_text(str(limits.max_pids))
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
        for ctrl in ("memory", "pids"):
            base = _cgroup_base(ctrl)
            if base is None:
                continue
            for d in base.glob("gmmgrade-*"):
                try:
                    owner = int(d.name.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if owner == os.getpid() or Path(f"/proc/{owner}").exists():
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


def _kernel_env(cfg: SandboxConfig, scratch: str) -> dict[str, str]:
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
        box += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        seen: set[str] = set()
        for p in (cfg.python_prefix, cfg.venv, cfg.src):
            rp = os.path.realpath(p)
            for q in {p, rp}:
                if q not in seen:
                    box += ["--ro-bind", q, q]
                    seen.add(q)
        box += ["--tmpfs", cfg.mask, "--remount-ro", cfg.mask]
        if cfg.jax_cache:
            os.makedirs(cfg.jax_cache, exist_ok=True)
            box += ["--bind" if cfg.jax_cache_writable else "--ro-bind", cfg.jax_cache, cfg.jax_cache]
        box += ["--bind", scratch, scratch, "--chdir", scratch, "--clearenv"]
        for k, v in env.items():
            box += ["--setenv", k, v]
        cmd = prl + box + ["--"] + inner
    else:  # unsandboxed (tests of the limits only; never for students)
        cmd = prl + ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + inner
    if cgroup.active:
        join = "; ".join(f'echo $$ > "{f}"' for f in cgroup.procs_files())
        cmd = ["/bin/sh", "-c", f'{join} && exec "$@"', "gmm-sandbox"] + cmd
    return cmd


def make_scratch() -> str:
    # Short path: Unix socket paths are limited to ~107 bytes.
    return tempfile.mkdtemp(prefix=f"gmg-{os.getpid()}-", dir="/tmp")


def cleanup_stale_scratch() -> int:
    """Remove scratch dirs of graders that were killed (their owner pid is gone)."""
    n = 0
    for d in Path("/tmp").glob("gmg-*-*"):
        try:
            owner = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n
