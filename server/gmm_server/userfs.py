"""Each user's disk: one ext4 image of ``limits.CAPS.disk_bytes`` (sparse: it takes only what
is written), ``<root>/users/<name>.img``, loop-mounted ``nosuid,nodev`` at
``<root>/users/<name>/`` (``<root>/users`` is root-only ``0700``):

* ``home/``: the user's home inside their server (first filled from the unix account's home);
* ``inbound/``: where a student's ``Submit`` writes (shown to their server as the exchange's
  ``inbound/``; ``server/course collect`` reads it as root, gmm_server/collect.py).

So a user's files and submissions together cannot take more than the image's size, and
nothing a student writes reaches the host's disk otherwise (the rest of their server is
read-only or size-capped tmpfs).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from . import settings
from .limits import CAPS, LimitError


def area(st: settings.Settings, name: str) -> Path:
    return st.root / "users" / name


def image(st: settings.Settings, name: str) -> Path:
    return st.root / "users" / f"{name}.img"


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        line = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise LimitError(f"cannot {what} ({cmd[0]}: {line}); the server needs root, loop devices and mkfs.ext4 "
                         f"to cap each user's disk")


def ensure(st: settings.Settings, name: str, gid: int) -> Path:
    """Create (first time) and mount the user's image; returns the mounted area."""
    pw = pwd.getpwnam(name)
    users = st.root / "users"
    users.mkdir(mode=0o700, exist_ok=True)
    os.chown(users, 0, 0)
    os.chmod(users, 0o700)
    mnt, img = area(st, name), image(st, name)
    mnt.mkdir(mode=0o700, exist_ok=True)
    if not os.path.ismount(mnt):
        if not img.exists():
            tmp = img.with_suffix(".new")
            with open(tmp, "wb") as f:
                f.truncate(CAPS.disk_bytes)
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0", str(tmp)], f"make the disk image of {name}")
            os.chmod(tmp, 0o600)
            os.replace(tmp, img)
            fresh = True
        else:
            fresh = False
        _run(["mount", "-o", "loop,nosuid,nodev", str(img), str(mnt)], f"mount the disk image of {name}")
        if fresh:
            shutil.rmtree(mnt / "lost+found", ignore_errors=True)
            home = mnt / "home"
            if os.path.isdir(pw.pw_dir) and not os.path.islink(pw.pw_dir):
                shutil.copytree(pw.pw_dir, home, symlinks=True)  # the account's skeleton files
            home.mkdir(exist_ok=True)
            for d, dirs, files in os.walk(home):
                for p in [d, *(os.path.join(d, f) for f in files + dirs)]:
                    os.lchown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(home, 0o700)
            inbound = mnt / "inbound"
            inbound.mkdir()
            os.chown(inbound, 0, gid)
            os.chmod(inbound, 0o2733)  # as the exchange's inbound: write, not list
    os.chmod(mnt, 0o755)  # inside the root-only users/
    return mnt


def unmount(st: settings.Settings, name: str) -> None:
    mnt = area(st, name)
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def remove(st: settings.Settings, name: str) -> None:
    unmount(st, name)
    image(st, name).unlink(missing_ok=True)
    try:
        area(st, name).rmdir()
    except OSError:
        pass
