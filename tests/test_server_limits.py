"""Per-user caps of the course server (server/gmm_server/limits.py, fast, no hub): the cgroup
of a user's server comes from the grader's helper (gmmcourse.grading.cgroups) with the
server's caps; on a v2-shaped tree it gets memory.max / pids.max / cpu.max, a missing
controller is a one-line refusal (also of ``server/course start``), and on this host's real
hierarchy a process over the memory cap is killed and the cgroup removed with what is left.
The same caps on a real student server: tests/test_course_server.py (``test_hostile_student``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import cli, limits  # noqa: E402


def _v2_tree(tmp_path: Path, monkeypatch, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp_path / "cg"
    (root / "hub").mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "hub" / "cgroup.controllers").write_text(controllers + "\n")
    (root / "hub" / "cgroup.subtree_control").write_text("")
    monkeypatch.setenv("GMG_CGROUP_ROOT", str(root))
    monkeypatch.setenv("GMG_CGROUP_BASE", str(root / "hub"))
    return root / "hub"


def test_v2_caps(tmp_path, monkeypatch):
    base = _v2_tree(tmp_path, monkeypatch)
    caps = limits.Caps(memory_bytes=1 << 30, max_pids=100, cpus=1.5)
    cg = limits.UserCGroup("alice", caps)
    (d,) = cg.dirs
    assert d.parent == base and d.name.startswith(f"gmmgrade-{os.getpid()}-server-alice-")
    assert (d / "memory.max").read_text() == str(1 << 30)
    assert (d / "pids.max").read_text() == "100"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert cg.procs_files == [str(d / "cgroup.procs")]


def test_missing_controller_is_a_one_line_refusal(tmp_path, monkeypatch):
    _v2_tree(tmp_path, monkeypatch, "cpuset cpu io pids")  # memory not delegated
    with pytest.raises(limits.LimitError) as e:
        limits.UserCGroup("alice")
    msg = str(e.value)
    assert "\n" not in msg and "memory" in msg and msg.startswith("cannot cap users' servers"), msg
    with pytest.raises(cli.Fail) as e:  # server/course start checks it before starting the hub
        cli.preflight_caps()
    assert "memory" in str(e.value) and "\n" not in str(e.value)


def test_memory_cap_holds_on_this_host():
    """On this host's own hierarchy (v1 here, v2 elsewhere), as the spawner does it: a
    process that joined the user's cgroup and allocates past the cap is killed; one below
    it runs; removing the cgroup kills what is left in it."""
    if os.geteuid() != 0:
        pytest.fail("the course server's caps need root (the hub runs as root)")
    cg = limits.UserCGroup("captest", limits.Caps(memory_bytes=64 << 20, max_pids=32, cpus=1.0))
    try:
        code = "b = bytearray({n} << 20); b[::4096] = b'x' * len(b[::4096]); print('ok')"
        small = subprocess.run([sys.executable, "-c", code.format(n=8)], preexec_fn=cg.join, capture_output=True,
                               text=True, timeout=120)
        big = subprocess.run([sys.executable, "-c", code.format(n=512)], preexec_fn=cg.join, capture_output=True,
                             text=True, timeout=120)
        assert small.returncode == 0 and "ok" in small.stdout, small.stderr
        assert big.returncode != 0 and "ok" not in big.stdout
        left = subprocess.Popen(["sleep", "600"], preexec_fn=cg.join)
    finally:
        dirs = cg.dirs
        cg.remove()
    assert left.wait(timeout=60) != 0
    assert not any(d.exists() for d in dirs)
