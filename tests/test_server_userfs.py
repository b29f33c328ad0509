"""Each user's disk (server/gmm_server/userfs.py, fast, no hub): an ext4 image of the capped
size, loop-mounted nosuid,nodev in the root-only users/ folder, first filled from the
account's home; home (the user's, 0700) and inbound (root:instructors 2733) together cannot
exceed the cap; removing the user unmounts and deletes it. From a real student server:
tests/test_course_server.py (``test_hostile_student``)."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import settings, userfs  # noqa: E402
from gmm_server.limits import Caps  # noqa: E402


def test_user_disk(tmp_path, monkeypatch):
    if os.geteuid() != 0 or not (shutil.which("useradd") and shutil.which("mkfs.ext4")):
        pytest.fail("the users' disks are loop-mounted ext4 images: run as root with useradd and mkfs.ext4")
    name = f"gmu{secrets.token_hex(3)}"
    st = settings.load({"GMM_SERVER_ROOT": str(tmp_path / "state")})
    st.root.mkdir(parents=True)
    monkeypatch.setattr(userfs, "CAPS", Caps(disk_bytes=32 << 20))
    gid = grp.getgrnam("root").gr_gid
    subprocess.run(["useradd", "--create-home", "--home-dir", str(tmp_path / "home" / name), name], check=True)
    try:
        pw = pwd.getpwnam(name)
        Path(pw.pw_dir, "notes.txt").write_text("kept")
        mnt = userfs.ensure(st, name, gid)
        assert os.path.ismount(mnt) and userfs.ensure(st, name, gid) == mnt  # idempotent
        opts = next(line.split()[3] for line in Path("/proc/self/mounts").read_text().splitlines()
                    if line.split()[1] == str(mnt))
        assert {"nosuid", "nodev"} <= set(opts.split(",")), opts
        assert stat.S_IMODE((st.root / "users").stat().st_mode) == 0o700
        home, inbound = mnt / "home", mnt / "inbound"
        assert (home / "notes.txt").read_text() == "kept"
        assert home.stat().st_uid == pw.pw_uid and stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (inbound.stat().st_uid, inbound.stat().st_gid, stat.S_IMODE(inbound.stat().st_mode)) == (0, gid, 0o2733)
        # as the user: 64 MiB cannot be written on a 32 MiB image, 1 MiB can
        fill = "head -c {n} /dev/zero > {p} 2>/dev/null && echo ok || echo full"
        code = "; ".join([fill.format(n=1 << 20, p="small"), fill.format(n=64 << 20, p="big")])
        r = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                            "sh", "-c", code], cwd=home, capture_output=True, text=True, timeout=120)  # users/ is 0700
        assert r.stdout.split() == ["ok", "full"], r.stdout + r.stderr
        userfs.remove(st, name)
        assert not os.path.ismount(mnt) and not userfs.image(st, name).exists()
    finally:
        userfs.unmount(st, name)
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)
