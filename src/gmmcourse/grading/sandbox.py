"""Bubblewrap sandbox and resource limits for one student kernel.

Only the *kernel* runs inside the sandbox. The trusted driver (nbclient, in the grading
worker) stays outside and talks to the kernel over Unix-domain (``ipc``) ZeroMQ sockets that
live in the submission's private scratch directory, the only writable place the kernel sees.

Layers (each one a fallback for the other):

* bubblewrap: new mount, PID, network (loopback only), IPC and UTS namespaces; read-only
  view of the Python install and the venv in which ``site-packages`` holds only what the
  assignment offers (`gmmcourse.grading.view`: an allow-list, `SandboxConfig.offers`) and
  ``gmmcourse`` only its offered modules (never ``grading``); no ``solutions/``, no
  ``grading/`` course root; ``--die-with-parent``. bwrap itself starts from an empty
  environment (its pid-1 process is visible in the sandbox as ``/proc/1``), the kernel from a
  minimal one.
* an unprivileged uid: bwrap runs as root (it mounts), the kernel as a uid of its own
  (`sandbox_uid`, no capabilities, no new privileges), so that ``RLIMIT_NPROC`` holds and
  nothing it leaves behind is root's.
* seccomp (`gmmcourse.grading.seccomp`): ``add_key``, ``request_key`` and ``keyctl`` fail
  with EPERM.
* scratch: the only writable places (the kernel's working directory with the ZeroMQ sockets,
  ``/tmp`` and ``/dev/shm``) are size-capped tmpfs mounts whose pages are charged to the
  submission's memory cgroup; nothing a student writes reaches the host's disk.
* cgroups (`gmmcourse.grading.cgroups`: v1, v2 or hybrid): memory cap, process cap, and a
  CPU quota (``Limits.cpus``) so that a burner cannot slow its neighbours;
* ``prlimit``: address space, file size, core dumps, open files, processes (always).

Fail closed: `check_host` refuses (`LimitUnavailable`, one line) when a limit cannot be
applied, unless ``Limits.allow_unlimited`` (``--allow-unlimited``, for a trusted class).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from glob import glob
from pathlib import Path

from gmmcourse import course

from . import view
from .cgroups import CGroup, LimitUnavailable, hierarchy
from .seccomp import filter_path, seccomp_filter
from .wipe import cleanup_stale_scratch, remove_scratch, wipe_dir

__all__ = ["Limits", "SandboxConfig", "CGroup", "Scratch", "LimitUnavailable", "check_host", "kernel_command",
           "lifeline", "make_scratch", "sandbox_available", "sandbox_uid", "seccomp_filter", "hierarchy",
           "wipe_dir", "remove_scratch", "cleanup_stale_scratch"]  # the last three: `wipe`

log = logging.getLogger("gmmcourse.grading")

GRADING_PKG = Path(__file__).resolve().parent
SRC_ROOT = GRADING_PKG.parent.parent  # .../src
REPO_ROOT = SRC_ROOT.parent
SANDBOX_UID_BASE = 2_000_000_000
"""Kernels run as uid/gid SANDBOX_UID_BASE + the grading process's pid: no account has it,
and two submissions graded at once never share one (RLIMIT_NPROC counts per uid)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    # Sized from measured run times of slow but reasonable solutions (docs/grading.md, "Time
    # limits"); the values students read (book, notebooks) are in gmmcourse.course.
    # Time limits count the CPU time of the submission's cgroup (gmmcourse.grading.clock): the
    # grader's load never decides a grade. Each also bounds wall-clock time at wait_factor x itself.
    cell_timeout: float = float(course.CELL_TIME_LIMIT_S)  # CPU seconds per student cell
    notebook_timeout: float = float(course.NOTEBOOK_TIME_LIMIT_S)  # CPU seconds for all student cells
    export_timeout: float = 60.0  # CPU seconds per Part.export
    startup_timeout: float = 60.0  # kernel start (wall-clock seconds)
    # One budget for everything else a submission costs after its cells (exports, kernel
    # restarts, replays): a submission never holds a worker longer than
    # wait_factor x (notebook_timeout + grace_timeout) (+ a few seconds to stop the kernel).
    grace_timeout: float = 180.0
    wait_factor: float = float(course.WAIT_FACTOR)  # wall-clock bound of each limit, x the limit
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
    shm_bytes: int = 64 << 20  # /dev/shm inside the sandbox (tmpfs)
    cpus: float = float(course.CPU_CORES)  # CPU quota of a submission (cgroup cpu.cfs_quota_us), in cores
    notebook_bytes: int = 4 << 20  # the executed notebook returned to the grader (sources + outputs)
    submission_bytes: int = 20 << 20  # a submitted notebook file (a bigger one is invalid, never read)
    # Grade even where a limit cannot be applied (no delegated cgroup, not root): for a trusted
    # class only; `check_host` then logs which limits are missing instead of refusing.
    allow_unlimited: bool = False


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox exposes. Paths are resolved on the machine that grades."""

    python_prefix: str = sys.base_prefix  # e.g. /root/.pyenv/versions/3.12.1
    venv: str = sys.prefix  # the course venv
    src: str = str(SRC_ROOT)
    jax_cache: str | None = None  # mounted read-only (writable when warming)
    jax_cache_writable: bool = False
    single_thread: bool = True
    # What the kernel may import (`gmmcourse.grading.view`): distributions ("numpy") and course
    # modules ("gmmcourse.gibbs"); None offers the whole venv and every course module but those
    # in `hide` (paths under ``src``: "gmmcourse/em.py", or "gmmcourse" for the whole package).
    # Either way what is not offered is absent from the sandbox (never its .pyc either).
    offers: tuple[str, ...] | None = None
    hide: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "hide", tuple(self.hide))
        if self.offers is not None:
            object.__setattr__(self, "offers", tuple(self.offers))

    @property
    def python(self) -> str:
        return str(Path(self.venv) / "bin" / "python")


def sandbox_available() -> bool:
    return shutil.which("bwrap") is not None


def sandbox_uid() -> int | None:
    """The uid (and gid) the kernel runs as: this process's own one when it is not root
    (already unprivileged), else a dedicated one (`SANDBOX_UID_BASE`)."""
    return SANDBOX_UID_BASE + os.getpid() if os.geteuid() == 0 else None


# --------------------------------------------------------------------------- scratch


class Scratch:
    """The submission's private working directory on the host: a size-capped tmpfs mount
    owned by the kernel's uid, holding the ZeroMQ sockets, the connection file and everything
    the kernel writes. Its pages are charged to the memory cgroup of the process that writes
    them (the student's kernel). Mounting needs root: where it fails the scratch is a plain
    directory of the host's /tmp, which `check_host` allows only with ``allow_unlimited``.

    The path is short (Unix socket paths are limited to ~107 bytes) and names its owner pid,
    so that a grader that was killed has its scratch cleaned by the next one.
    """

    def __init__(self, size_bytes: int):
        self.path = tempfile.mkdtemp(prefix=f"gmg-{os.getpid()}-", dir="/tmp")
        self.mounted = False
        self.error = "the grader is not root (mounting a tmpfs needs root)"
        uid = sandbox_uid()
        if os.geteuid() == 0 and shutil.which("mount"):
            owner = f",uid={uid},gid={uid}" if uid is not None else ""
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={max(size_bytes, 1 << 20)},mode=0700,nosuid,nodev{owner}",
                 "tmpfs", self.path],
                capture_output=True, text=True,
            )
            self.mounted = r.returncode == 0
            self.error = (r.stderr.strip().splitlines() or ["mount failed"])[-1][:200]

    def remove(self) -> None:
        remove_scratch(Path(self.path))


def check_host(limits: Limits) -> list[str]:
    """Refuse to grade (`LimitUnavailable`, one line: which limit and how to fix it) when a
    limit of `limits` cannot be applied on this host; with ``limits.allow_unlimited`` return
    the limits that are missing instead (the engine prints each). Called once before a run."""
    missing: list[str] = []

    def fail(msg: str) -> None:
        if not limits.allow_unlimited:
            raise LimitUnavailable(msg)
        missing.append(msg)

    if not sandbox_available():
        raise LimitUnavailable("bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap")
    try:
        probe = CGroup(limits)
    except LimitUnavailable as e:
        fail(str(e))
    else:
        if probe.unavailable:
            missing.append(probe.unavailable)
        probe.remove()
    scratch = Scratch(1 << 20)
    try:
        if not scratch.mounted:
            fail(f"disk limit: cannot mount a size-capped tmpfs scratch ({scratch.error}); the scratch would "
                 "be a folder of the host's /tmp: run the grader as root, or pass --allow-unlimited for a trusted class")
    finally:
        scratch.remove()
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        fail("process limit: setpriv (util-linux) is missing, so the kernel would run as root, where "
             "RLIMIT_NPROC does not hold: apt-get install -y util-linux")
    return missing  # the engine prints each one as a warning of the run


def _site_view(cfg: SandboxConfig) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(offered distributions, or None for the whole venv; offered gmmcourse modules)."""
    if cfg.offers is None:
        if "gmmcourse" in cfg.hide:
            return None, frozenset()
        hidden = {Path(h).stem for h in cfg.hide if h.startswith("gmmcourse/")}
        mods = {p.stem for p in Path(cfg.src, "gmmcourse").glob("*.py")} - hidden
        return None, frozenset(mods)
    site = str(view.site_packages(cfg.venv))
    dists = set(view.closure(view.KERNEL + view.distributions(cfg.offers), site))
    mods = view.course_modules(cfg.offers)
    if mods:
        dists.add("gmmcourse")  # its .pth (the path to src/) and metadata; not its requirements
    return frozenset(dists), mods
def _kernel_env(cfg: SandboxConfig, scratch: str) -> dict[str, str]:
    """The kernel's whole environment (nothing of the grader's is passed on)."""
    env = {
        "PATH": f"{cfg.venv}/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "USER": "student",  # the kernel's uid has no passwd entry (getpass.getuser reads this)
        "LOGNAME": "student",
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


def _chown_tree(top: str, uid: int) -> None:
    """Make `top` and what is in it the kernel's (a writable JAX cache for the warm-up)."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            try:
                os.chown(name, uid, uid, follow_symlinks=False)
            except OSError:
                pass


def _parents(paths, inside: str = "/") -> list[str]:
    """``--perms 0755 --dir`` for every folder between `inside` and each of `paths` (bwrap
    would make them 0700 and root's: the kernel's uid could not pass them)."""
    out: list[str] = []
    seen: set[str] = set()
    for p in paths:
        for d in reversed(Path(p).parents):
            s = str(d)
            if s not in seen and len(s) > len(inside.rstrip("/")) and s.startswith(inside.rstrip("/") + "/"):
                seen.add(s)
                out += ["--perms", "0755", "--dir", s]
    return out


def _readable_tree(top: str) -> None:
    """Make what a warm-up kernel (another uid) wrote into the JAX cache readable by every
    kernel: its files are created 0600 (``tempfile``); the mount is read-only anyway."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name, extra in [(dirpath, 0o555)] + [(os.path.join(dirpath, n), 0o444) for n in filenames]:
            try:
                st = os.lstat(name)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & extra != extra:
                    os.chmod(name, stat.S_IMODE(st.st_mode) | extra)
            except OSError:
                pass


def _view_args(cfg: SandboxConfig) -> list[str]:
    """bwrap arguments for the Python install, the venv and the course package (allow-list)."""
    dists, mods = _site_view(cfg)
    package = Path(cfg.src) / "gmmcourse"
    course_files = view.course_entries(package, mods) if mods else []
    tops = [cfg.python_prefix, cfg.venv, os.path.realpath(cfg.python_prefix), os.path.realpath(cfg.venv)]
    box: list[str] = _parents(tops + [str(f) for f in course_files])
    seen: set[str] = set()
    for p in (cfg.python_prefix, cfg.venv):
        for q in dict.fromkeys((p, os.path.realpath(p))):
            if q not in seen:
                box += ["--ro-bind", q, q]
                seen.add(q)
    # the base interpreter's own site-packages and the host's Python packages are never offered
    hidden = glob(os.path.join(cfg.python_prefix, "lib", "python3*", "site-packages"))
    hidden += glob("/usr/lib/python3*") + glob("/usr/local/lib/python3*")
    for d in hidden:
        if os.path.isdir(d) and not os.path.islink(d):
            box += ["--tmpfs", d, "--remount-ro", d]
    if dists is not None:
        for site in dict.fromkeys((str(view.site_packages(cfg.venv)), str(view.site_packages(os.path.realpath(cfg.venv))))):
            box += ["--tmpfs", site]
            entries = [f"{site}/{rel}" for rel in view.site_entries(dists, site)
                       if rel.split("/")[0] != "gmmcourse"]  # a non-editable install's package: the course view
            box += _parents(entries, inside=site)
            for e in entries:
                box += ["--ro-bind", e, e]
            box += ["--remount-ro", site]
    for f in course_files:
        box += ["--ro-bind", str(f), str(f)]
    return box


def kernel_command(
    cfg: SandboxConfig, limits: Limits, scratch: str, connection_file: str, cgroup: CGroup
) -> list[str]:
    """argv that starts an ipykernel inside the sandbox, under the limits. Start it with a
    `lifeline`'s read end as its standard input, and keep the write end open while it may
    run: end of file there kills it (`LIFELINE_WATCH`)."""
    env = _kernel_env(cfg, scratch)
    uid = sandbox_uid()
    inner = [cfg.python, "-m", "ipykernel_launcher", "-f", connection_file]
    prl = ["prlimit", f"--fsize={limits.file_size_bytes}", "--core=0", "--nofile=1024"]
    # Without a memory cgroup, RLIMIT_AS is the memory cap (JAX runs under 1 GiB of it).
    as_bytes = limits.address_space_bytes or (0 if cgroup.active else max(limits.memory_bytes, 1 << 30))
    if as_bytes:
        prl.append(f"--as={as_bytes}")
    # RLIMIT_NPROC: per uid, ignored for root, so it holds for the kernel's own uid (bwrap, as
    # root, is exempt); besides the cgroup's pids cap, or instead of it
    if uid is not None or not cgroup.active:
        prl.append(f"--nproc={limits.max_pids}")
    prl.append("--")
    pre = ""
    if not os.path.ismount(scratch) and not limits.allow_unlimited:  # a worker host fails closed too
        raise LimitUnavailable(f"disk limit: the scratch {scratch} is not a size-capped tmpfs (mounting needs "
                               "root); run the grader as root, or pass --allow-unlimited for a trusted class")
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
    ]
    if uid is not None:  # only what setpriv needs to become `uid` and drop every capability
        box += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    box += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32"):
        if os.path.islink(d):
            box += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            box += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group",
              "/etc/nsswitch.conf", "/etc/hosts", "/etc/ssl", "/etc/ca-certificates",
              "/etc/fonts", "/etc/matplotlibrc"):
        box += ["--ro-bind-try", f, f]
    box += ["--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm"]
    box += _view_args(cfg)
    box += _parents([scratch] + ([cfg.jax_cache] if cfg.jax_cache else []))
    if cfg.jax_cache:
        os.makedirs(cfg.jax_cache, exist_ok=True)
        if cfg.jax_cache_writable and uid is not None:
            _chown_tree(cfg.jax_cache, uid)
        elif uid is not None:
            _readable_tree(cfg.jax_cache)
        box += ["--bind" if cfg.jax_cache_writable else "--ro-bind", cfg.jax_cache, cfg.jax_cache]
        if not _site_view(cfg)[1]:  # no course module offered: none of its exported programs either
            programs = os.path.join(cfg.jax_cache, "gmmcourse-programs")
            os.makedirs(programs, exist_ok=True)
            box += ["--tmpfs", programs, "--remount-ro", programs]
    box += ["--bind", scratch, scratch, "--clearenv", "--seccomp", "9"]
    for k, v in env.items():
        box += ["--setenv", k, v]
    inner = ["/bin/sh", "-c", LIFELINE_WATCH, scratch] + inner
    if uid is not None:
        # the scratch is the kernel's own (mode 0700): only its uid may enter it
        inner = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"] + inner
        pre = f'chown {uid}:{uid} "{connection_file}" && '
    cmd = prl + box + ["--"] + inner
    redirect = f' 9<"{filter_path()}"'
    join = "".join(f'echo $$ > "{f}" && ' for f in cgroup.procs_files())
    prefix, check = die_with(os.getpid())
    return [*prefix, "/bin/sh", "-c", f'{check}{pre}{join}exec "$@"{redirect}', "gmm-sandbox"] + cmd


LIFELINE_WATCH = 'cd "$0" || exit 1; exec 3<&0 </dev/null; (read -r _ <&3; kill -9 -1) & exec "$@" 3<&-'
"""The sandbox's first command (inside it, as the kernel's uid): its standard input is the
read end of the launcher's lifeline (`lifeline`), a pipe nothing ever writes to. A watcher
in the background waits on it; end of file, once the launcher (a grading worker) has died or
closed its end, kills every process of the sandbox that it may signal (``kill -9 -1`` reaches
only the sandbox's own pid namespace, never its pid 1), and bwrap's pid 1 then ends with its
child, taking the namespace with it. The kernel itself gets ``/dev/null``.

Why: the parent-death signals (`die_with`, bwrap's ``--die-with-parent``) are a chain, and
bwrap arms it in the sandbox's pid 1 only after that process has set the sandbox up. A
worker killed in between left pid 1 orphaned, with an idle kernel under it, until the next
grader removed its cgroup (found by benchmarks/bench_grading.py's resume phase, one
process alive 1 s after its ``SIGKILL``). A pipe's end of file needs no chain: the watcher
sees it whenever it starts, so no moment of the launch is left uncovered."""


def lifeline() -> tuple[int, int]:
    """A sandbox's lifeline: (read end, the launched sandbox's standard input; write end, kept
    open by the launcher for as long as the sandbox may live, and closed to end it). Both are
    close-on-exec (`os.pipe`): no other child of the launcher holds the write end."""
    return os.pipe()


def die_with(parent: int) -> tuple[list[str], str]:
    """(argv prefix, first shell words) that kill a sandbox when ``parent`` (the process
    launching it, a grading worker) dies, from its very start: ``setpriv --pdeathsig`` arms
    the parent-death signal before anything else runs, then the shell exits at once if
    ``parent`` was already gone by then. bwrap's own ``--die-with-parent`` arms it only once
    bwrap runs, after a shell, ``chown``, ``prlimit`` and ``env``: a worker killed in between
    left an orphaned sandbox (an idle kernel, found after a ``SIGKILL`` of the grader
    mid-launch in benchmarks/bench_grading.py's resume phase; the next grader removed it)."""
    return ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"], f'[ "$PPID" = {int(parent)} ] || exit 1; '


def make_scratch(size_bytes: int = Limits.scratch_bytes) -> Scratch:
    return Scratch(size_bytes)
