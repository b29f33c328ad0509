"""Per-user caps of the course server (server/gmm_server/limits.py, fast, no hub): a
v2-shaped cgroup tree gets memory.max / pids.max / cpu.max, a missing controller is a
one-line refusal (v1 and v2), and on this host's real hierarchy a process over the memory
cap is killed. The same caps on a real student server: tests/test_course_server.py
(``test_hostile_student``)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import limits  # noqa: E402


def _v2_tree(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp_path / "cg"
    (root / "hub").mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "hub" / "cgroup.controllers").write_text(controllers + "\n")
    (root / "hub" / "cgroup.subtree_control").write_text("")
    return root


def test_v2_caps(tmp_path):
    root = _v2_tree(tmp_path)
    caps = limits.Caps(memory_bytes=1 << 30, max_pids=100, cpus=1.5)
    cg = limits.UserCGroup("alice", caps, root=root, proc_cgroup="0::/hub\n")
    d = root / "hub" / "gmm-server-alice"
    assert (d / "memory.max").read_text() == str(1 << 30)
    assert (d / "pids.max").read_text() == "100"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert set((root / "hub" / "cgroup.subtree_control").read_text().split()) >= {"+memory", "+pids", "+cpu"}
    assert cg.procs_files == [str(d / "cgroup.procs")]


@pytest.mark.parametrize("v", ["v1", "v2"])
def test_missing_controller_is_a_one_line_refusal(tmp_path, v):
    if v == "v2":
        root = _v2_tree(tmp_path, "cpuset cpu io pids")  # no memory controller delegated
        proc = "0::/hub\n"
    else:
        root = tmp_path / "cg"
        for ctrl in ("memory", "cpu"):  # no pids hierarchy
            (root / ctrl).mkdir(parents=True)
        proc = "4:memory:/\n1:cpu:/\n"
    with pytest.raises(limits.LimitError) as e:
        limits.UserCGroup("alice", root=root, proc_cgroup=proc)
    msg = str(e.value)
    assert "\n" not in msg and ("memory" if v == "v2" else "pids") in msg and "cannot cap" in msg, msg


def test_memory_cap_holds_on_this_host():
    """On this host's own hierarchy (v1 here, v2 elsewhere), as the spawner does it: a
    process that joined the user's cgroup and allocates past the cap is killed; one below
    it runs."""
    if os.geteuid() != 0:
        pytest.fail("the course server's caps need root (the hub runs as root)")
    name = f"gmltest{secrets.token_hex(3)}"
    cg = limits.UserCGroup(name, limits.Caps(memory_bytes=64 << 20, max_pids=32, cpus=1.0))
    try:
        code = "b = bytearray({n} << 20); b[::4096] = b'x' * len(b[::4096]); print('ok')"
        small = subprocess.run([sys.executable, "-c", code.format(n=8)], preexec_fn=cg.join, capture_output=True,
                               text=True, timeout=120)
        big = subprocess.run([sys.executable, "-c", code.format(n=512)], preexec_fn=cg.join, capture_output=True,
                             text=True, timeout=120)
        assert small.returncode == 0 and "ok" in small.stdout, small.stderr
        assert big.returncode != 0 and "ok" not in big.stdout
    finally:
        for d in cg.dirs:
            d.rmdir()


def test_start_refuses_where_caps_cannot_be_applied(tmp_path, monkeypatch):
    """``server/course start`` checks the caps before starting the hub: one line, no hub."""
    from gmm_server import cli

    root = _v2_tree(tmp_path, "cpuset cpu io memory")  # pids not delegated
    real = limits.UserCGroup
    monkeypatch.setattr(limits, "UserCGroup", lambda name: real(name, root=root, proc_cgroup="0::/hub\n"))
    with pytest.raises(cli.Fail) as e:
        cli.preflight_caps()
    assert "pids" in str(e.value) and "\n" not in str(e.value)
