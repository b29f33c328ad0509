"""Removing what a submission leaves on the grading host: its scratch folder (a tmpfs mount,
or a plain folder however deep its tree) is emptied between two kernels and removed after the
submission, and the scratch folders of graders that were killed are removed by the next one.
Nothing here follows a link or recurses (a student's 4,000-deep folder chain costs one open
directory at a time). The scratch itself is made by `sandbox.Scratch`."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
from pathlib import Path

from .cgroups import owner_alive

__all__ = ["wipe_dir", "remove_scratch", "cleanup_stale_scratch"]

log = logging.getLogger("gmmcourse.grading")


def wipe_dir(top: str | os.PathLike, *, remove_top: bool = False) -> None:
    """Delete everything below `top` (and `top` itself with `remove_top`) without recursion and
    without building long paths: a student's 4,000-deep folder chain costs one open directory
    at a time. Links are removed, never followed. Call it only when no process of the
    submission runs any more (its cgroup is killed): a parent is reopened through ``..`` and
    checked against the one it was entered from."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(top, flags)
    stack: list[tuple[str, int, int]] = []  # (name in parent, parent's st_dev, st_ino)
    try:
        while True:
            with os.scandir(fd) as it:
                entry = next(it, None)
            if entry is None:
                if not stack:
                    break
                name, dev, ino = stack.pop()
                parent = os.open("..", flags, dir_fd=fd)
                os.close(fd)
                fd = parent
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (dev, ino):
                    raise OSError(f"{top}: the tree changed while it was removed")
                os.rmdir(name, dir_fd=fd)
                continue
            if entry.is_dir(follow_symlinks=False):
                st = os.fstat(fd)
                try:
                    child = os.open(entry.name, flags, dir_fd=fd)
                except OSError:  # unreadable (mode 000): make it ours to read, once
                    os.chmod(entry.name, stat.S_IRWXU, dir_fd=fd, follow_symlinks=False)
                    child = os.open(entry.name, flags, dir_fd=fd)
                stack.append((entry.name, st.st_dev, st.st_ino))
                os.close(fd)
                fd = child
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    if remove_top:
        os.rmdir(top)


def remove_scratch(d: Path) -> None:
    """Unmount the scratch folder `d` (its whole tmpfs goes at once) and remove it; a plain
    folder is removed by `wipe_dir`; one that cannot be removed is logged."""
    if os.path.ismount(d):  # the whole tmpfs goes at once, however deep its tree
        r = subprocess.run(["umount", str(d)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
    if not os.path.ismount(d):
        try:
            wipe_dir(d, remove_top=True)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove the scratch directory %s: %s", d, e)


def cleanup_stale_scratch() -> int:
    """Remove scratch dirs (and their tmpfs mounts) and run folders (``gmg-<pid>-run-*``, in
    the temporary folder, TMPDIR) of graders that were killed (their owner pid is gone)."""
    n = 0
    for f in Path("/tmp").glob("gmg-seccomp-*.bpf"):  # left by graders before the filter moved to a memfd
        f.unlink(missing_ok=True)
    places = {Path("/tmp"), Path(tempfile.gettempdir())}
    for d in (d for place in places for d in place.glob("gmg-*-*")):
        try:
            owner = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if owner != os.getpid() and not owner_alive(owner):
            remove_scratch(d)
            n += 1
    return n
