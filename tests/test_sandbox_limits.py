"""The grading sandbox's limits: cgroup v1 (this host), v2 (a v2-shaped tree), fail closed,
an unprivileged kernel uid for which RLIMIT_NPROC holds, a sized /dev/shm, the scratch's
removal without recursion, a seccomp filter that leaves no file, look-alike student ids."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_helpers import require_sandbox, run_in_sandbox

from gmmcourse.grading import sandbox
from gmmcourse.grading.cgroups import CGroup, LimitUnavailable, hierarchy
from gmmcourse.grading.intake import student_id
from gmmcourse.grading.sandbox import Limits, SandboxConfig, check_host, wipe_dir
from gmmcourse.grading.seccomp import filter_path, seccomp_filter

LIMITS = Limits(max_pids=32, memory_bytes=512 << 20)
CFG = SandboxConfig(offers=("numpy",))


def _v2_tree(tmp_path: Path, controllers="cpuset cpu io memory pids") -> Path:
    root = tmp_path / "cgroup"
    base = root / "grader.slice"
    base.mkdir(parents=True)
    for d in (root, base):
        (d / "cgroup.controllers").write_text(controllers + "\n")
        (d / "cgroup.subtree_control").write_text("")
        (d / "cgroup.procs").write_text("")
    return root


def _cgroupfs(monkeypatch, root: Path, cpu_stat: bool = True) -> None:
    """Make the fake `root` behave like a cgroup file system where it matters here: a new
    cgroup comes with its CPU time counter (cpu.stat, nothing run yet; `cpu_stat`), and
    removing a cgroup removes its control files with it."""
    real_mkdir, real_rmdir = Path.mkdir, Path.rmdir

    def ours(path: Path) -> bool:
        return path.name.startswith("gmmgrade-") and root in path.parents

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if cpu_stat and ours(self):
            (self / "cpu.stat").write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")

    def rmdir(self):
        if ours(self):
            for f in self.iterdir():
                if f.is_file():
                    f.unlink()
        real_rmdir(self)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "rmdir", rmdir)


@pytest.fixture
def v2(tmp_path, monkeypatch):
    root = _v2_tree(tmp_path)
    monkeypatch.setenv("GMG_CGROUP_ROOT", str(root))
    monkeypatch.setenv("GMG_CGROUP_BASE", "grader.slice")
    _cgroupfs(monkeypatch, root)
    return root


def test_v2_limits_are_written_to_a_delegated_subtree(v2):
    assert hierarchy() == "v2"
    cg = CGroup(Limits(memory_bytes=1 << 30, max_pids=40, cpus=1.5))
    d = v2 / "grader.slice" / cg.name
    assert cg.active and cg.version == "v2" and set(cg.dirs.values()) == {d}
    assert (d / "memory.max").read_text() == str(1 << 30)
    assert (d / "pids.max").read_text() == "40"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert set((v2 / "grader.slice" / "cgroup.subtree_control").read_text().split()) == {"+memory", "+pids", "+cpu"}
    assert cg.procs_files() == [str(d / "cgroup.procs")]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 2\n")
    (d / "pids.events").write_text("max 3\n")
    assert cg.oom_events() == 2 and cg.pids_hit()
    assert cg.cpu_seconds() == 0.0  # nothing ran in it yet
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    assert cg.cpu_seconds() == 2.5  # the time limits' clock (gmmcourse.grading.clock)
    cg.kill_all()
    assert (d / "cgroup.kill").read_text() == "1"


@pytest.mark.parametrize("gone", ["memory", "pids", "cpu"])
def test_v2_refuses_when_a_controller_is_not_delegated(v2, gone):
    base = v2 / "grader.slice"
    (base / "cgroup.controllers").write_text(" ".join(c for c in ("cpuset", "cpu", "io", "memory", "pids") if c != gone))
    with pytest.raises(LimitUnavailable) as e:
        CGroup(LIMITS)
    msg = str(e.value)
    assert "\n" not in msg and f"cgroup v2 {gone} controller is not delegated" in msg
    assert "Delegate=yes" in msg and "--allow-unlimited" in msg
    assert not [p for p in base.iterdir() if p.name.startswith("gmmgrade-")]
    with pytest.raises(LimitUnavailable):  # the run is refused before anything is graded
        check_host(LIMITS)
    cg = CGroup(Limits(allow_unlimited=True))  # a trusted class: no limits, said so
    assert not cg.active and "not delegated" in cg.unavailable
    missing = check_host(Limits(allow_unlimited=True))
    assert any(f"{gone} controller is not delegated" in m for m in missing)


def test_v2_refuses_a_cgroup_whose_cpu_time_cannot_be_read(tmp_path, monkeypatch):
    """The time limits count CPU seconds (gmmcourse.grading.clock): a cgroup without a readable
    counter would silently turn them into wall-clock limits, which the machine's load decides.
    It is refused in one line, and nothing is left behind; a trusted class may go on without."""
    root = _v2_tree(tmp_path)
    monkeypatch.setenv("GMG_CGROUP_ROOT", str(root))
    monkeypatch.setenv("GMG_CGROUP_BASE", "grader.slice")
    _cgroupfs(monkeypatch, root, cpu_stat=False)  # its new cgroups have no cpu.stat
    base = root / "grader.slice"
    with pytest.raises(LimitUnavailable) as e:
        CGroup(LIMITS)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("CPU time accounting: ") and "cpu.stat gives no CPU time" in msg, msg
    assert "Delegate=yes" in msg and "--allow-unlimited" in msg
    assert not [p for p in base.iterdir() if p.name.startswith("gmmgrade-")]
    with pytest.raises(LimitUnavailable, match="CPU time accounting"):  # refused before anything is graded
        check_host(LIMITS)
    cg = CGroup(Limits(allow_unlimited=True))  # a trusted class: plain wall-clock limits, said so
    assert not cg.active and "CPU time accounting" in cg.unavailable
    assert CGroup(LIMITS, accounting=False).active  # the course server's caps count no time


def test_v2_refuses_an_unwritable_or_missing_base(v2, monkeypatch):
    monkeypatch.setenv("GMG_CGROUP_BASE", "no-such.slice")
    with pytest.raises(LimitUnavailable, match="is not writable"):
        CGroup(LIMITS)


def test_hierarchies_are_told_apart(tmp_path):
    hybrid = tmp_path / "hybrid"
    for c in ("memory", "pids", "cpu", "unified"):
        (hybrid / c).mkdir(parents=True)
    (hybrid / "unified" / "cgroup.controllers").write_text("")
    assert hierarchy(hybrid) == "hybrid"
    (hybrid / "unified" / "cgroup.controllers").unlink()
    assert hierarchy(hybrid) == "v1"
    assert hierarchy(_v2_tree(tmp_path)) == "v2"
    assert hierarchy(tmp_path / "nothing") == "none"


def test_no_cgroups_at_all_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GMG_CGROUP_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(LimitUnavailable, match="no cgroup file system"):
        check_host(LIMITS)


def test_v1_cgroup_on_this_host():
    require_sandbox()
    assert hierarchy() in ("v1", "hybrid"), "this test is for the project's cgroup v1 machine"
    cg = CGroup(LIMITS)
    try:
        assert cg.active and set(cg.dirs) == {"memory", "pids", "cpu", "cpuacct"}
        assert (cg.dirs["pids"] / "pids.max").read_text().strip() == "32"
        assert int((cg.dirs["memory"] / "memory.limit_in_bytes").read_text()) == 512 << 20
        assert cg.cpu_seconds() == 0.0  # CPU time accounting (cpuacct): nothing ran in it yet
    finally:
        cg.remove()
    assert check_host(LIMITS) == []


def test_a_scratch_that_cannot_be_mounted_is_refused(monkeypatch):
    require_sandbox()

    class Unmounted(sandbox.Scratch):
        def __init__(self, size_bytes):
            super().__init__(size_bytes)
            if self.mounted:
                subprocess.run(["umount", self.path], check=True)
            self.mounted, self.error = False, "mount: permission denied"

    monkeypatch.setattr(sandbox, "Scratch", Unmounted)
    with pytest.raises(LimitUnavailable, match="disk limit: cannot mount a size-capped tmpfs scratch"):
        check_host(LIMITS)
    assert any("disk limit" in m for m in check_host(Limits(allow_unlimited=True)))


BOMB = """
import os, sys, threading, time
st = open('/proc/self/status').read()
print('uid', os.getuid(), 'caps', st.split('CapEff:')[1].split()[0], st.split('CapBnd:')[1].split()[0])
ev = threading.Event()
n = 0
try:
    for _ in range(400):
        threading.Thread(target=ev.wait, daemon=True).start()
        n += 1
except RuntimeError:
    pass
print('threads', n)
ev.set()
"""


def _bomb(cg=None, cfg=CFG):
    r = run_in_sandbox(BOMB, cfg, LIMITS, cgroup=cg)
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    return out, r


def test_kernel_is_unprivileged_and_rlimit_nproc_holds_without_cgroups(tmp_path, monkeypatch):
    """The kernel runs as a uid of its own with no capabilities; with no cgroup at all
    (--allow-unlimited on a host without one), RLIMIT_NPROC alone stops a thread bomb."""
    require_sandbox()
    monkeypatch.setenv("GMG_CGROUP_ROOT", str(tmp_path / "nothing"))
    cg = CGroup(Limits(allow_unlimited=True))
    assert not cg.active
    out, r = _bomb(cg)
    uid = int(out["uid"].split()[0])
    assert uid >= sandbox.SANDBOX_UID_BASE, r
    assert out["uid"].split()[2:] == ["0000000000000000", "0000000000000000"]
    assert int(out["threads"]) < LIMITS.max_pids, r


def test_the_pids_cgroup_stops_a_thread_bomb():
    require_sandbox()
    out, r = _bomb()
    assert 0 < int(out["threads"]) < LIMITS.max_pids, r


def test_dev_shm_and_tmp_are_sized_tmpfs():
    limits = Limits(shm_bytes=8 << 20, tmp_bytes=16 << 20)
    r = run_in_sandbox("import os; s = [os.statvfs(p) for p in ('/dev/shm', '/tmp')];"
                       "print([x.f_blocks * x.f_frsize for x in s]);"
                       "open('/dev/shm/x', 'wb').write(b'0' * (1 << 20)); print('ok')", CFG, limits)
    assert r.stdout.splitlines() == [str([8 << 20, 16 << 20]), "ok"], r


def _chain(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.symlink("/etc", "link", dir_fd=fd)
    os.close(fd)


def test_a_4000_deep_folder_chain_is_removed_without_recursion(tmp_path):
    """Unmounted (a plain folder) and mounted scratches, and the wipe between kernels."""
    require_sandbox()
    plain = tmp_path / "gmg-plain"
    plain.mkdir()
    _chain(plain, 4000)
    try:
        sandbox.remove_scratch(plain)
        assert not plain.exists() and os.path.exists("/etc/passwd")
    finally:  # never leave the chain to pytest's own (recursive) clean-up of tmp_path
        if plain.exists():
            wipe_dir(plain, remove_top=True)
    s = sandbox.make_scratch(8 << 20)
    assert s.mounted
    _chain(Path(s.path), 4000)
    wipe_dir(s.path)  # between two kernels: emptied, kept
    assert os.listdir(s.path) == []
    _chain(Path(s.path), 4000)
    s.remove()
    assert not os.path.exists(s.path)


def test_a_killed_graders_run_folder_is_removed_by_the_next(tmp_path, monkeypatch):
    """The local cluster's run folder (TMPDIR of its workers) is named by the grader's pid
    (test_grading_term's Ctrl-C test sees it in a real run); one left by a grader killed with
    SIGKILL (its `finally` never ran) is removed by the next grader's clean-up, one of a live
    grader is kept, and other files are never touched."""
    import tempfile

    from gmmcourse.grading.wipe import cleanup_stale_scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid with no process
    stale = tmp_path / f"gmg-{dead.pid}-run-abc123"
    live = tmp_path / f"gmg-{os.getpid()}-run-def456"
    other = tmp_path / "gmg-run-unrelated"
    for d in (stale, live, other):
        d.mkdir()
        (d / "seccomp.bpf").write_bytes(b"x")
    cleanup_stale_scratch()
    assert not stale.exists() and live.exists() and other.exists()


def test_the_seccomp_filter_never_touches_the_disk(tmp_path):
    before = set(glob.glob("/tmp/gmg-seccomp-*"))
    path = filter_path()
    assert path.startswith(f"/proc/{os.getpid()}/fd/")
    with open(path, "rb") as f:
        assert f.read() == seccomp_filter()
    # a grader killed while it holds the filter leaves nothing behind
    code = "from gmmcourse.grading.seccomp import filter_path; import os, signal; filter_path(); os.kill(os.getpid(), signal.SIGKILL)"
    r = subprocess.run([sys.executable, "-c", code])
    assert r.returncode == -signal.SIGKILL
    require_sandbox()
    r = run_in_sandbox("import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
                       "print(libc.syscall(250, 0, 0, 0, 0, 0), ctypes.get_errno())", CFG)  # keyctl on x86_64
    if os.uname().machine == "x86_64":
        assert r.stdout.split() == ["-1", "1"], r  # EPERM
    assert set(glob.glob("/tmp/gmg-seccomp-*")) <= before


@pytest.mark.parametrize("name, same_as", [("ａｌｉｃｅ", "alice"), ("ALICE", "ALICE"), ("José", "José"), ("Андрей", "Андрей")])
def test_student_ids_are_normalised(name, same_as):
    assert student_id(name) == (same_as, None)


@pytest.mark.parametrize("name", ["\u0430lice", "bo\u0431", "\u0430\u0435", "\u0430l\uff49ce"])
def test_look_alike_student_ids_are_refused(name):
    norm, why = student_id(name)
    assert norm is None and "look-alike" in why and "\n" not in why


def test_a_worker_refuses_a_scratch_that_is_not_a_tmpfs(tmp_path):
    """A remote worker whose host cannot mount fails closed too (the submission is reported
    not graded), unless the class is trusted."""
    require_sandbox()
    cg = CGroup(LIMITS)
    try:
        with pytest.raises(LimitUnavailable, match="not a size-capped tmpfs"):
            sandbox.kernel_command(CFG, LIMITS, str(tmp_path), str(tmp_path / "k.json"), cg)
        argv = sandbox.kernel_command(CFG, Limits(allow_unlimited=True), str(tmp_path), str(tmp_path / "k.json"), cg)
        assert "bwrap" in argv
    finally:
        cg.remove()


def test_the_cli_refuses_in_one_line_and_allow_unlimited_is_said(tmp_path):
    """`autograde` on a host without cgroups: one line naming the limit and the fix, exit 2,
    nothing graded; with --allow-unlimited each missing limit is printed as a warning."""
    require_sandbox()
    env = {**os.environ, "GMG_CGROUP_ROOT": str(tmp_path / "no-cgroups")}
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "--course", str(tmp_path / "course"), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cgroup limits: no cgroup file system"), r.stderr
    assert "--allow-unlimited" in lines[0]
    r = subprocess.run(cmd + ["--allow-unlimited"], capture_output=True, text=True, env=env, timeout=300)
    assert "warning: --allow-unlimited: cgroup limits: no cgroup file system" in r.stderr, r.stderr
    assert "does not exist" in r.stderr  # it went on, to the next check


def test_v2_moves_the_grader_out_of_a_base_with_processes(v2, monkeypatch):
    """cgroup v2 enables controllers only below cgroups without processes (EBUSY): the base's
    processes move into a leaf, then the controllers are enabled."""
    import errno

    from gmmcourse.grading import cgroups

    base = v2 / "grader.slice"
    (base / "cgroup.procs").write_text(f"{os.getpid()}\n")
    real, calls = cgroups.write_control, []

    def write(path, text):
        calls.append(path.name)
        if path == base / "cgroup.subtree_control" and calls.count("cgroup.subtree_control") == 1:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real(path, text)

    monkeypatch.setattr(cgroups, "write_control", write)
    cg = CGroup(LIMITS)
    assert cg.active
    assert (base / cgroups.SUPERVISOR / "cgroup.procs").read_text() == str(os.getpid())
    assert set((base / "cgroup.subtree_control").read_text().split()) == {"+memory", "+pids", "+cpu"}
