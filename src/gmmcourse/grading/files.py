"""The grader's file primitives, written once: the atomic write (the package's one,
`gmmcourse.atomic`: a temporary file beside the target, flushed to disk, renamed over it), the
bounded read that never follows a link, and the course lock that grading and LMS imports
share. Everything the grader writes into a course folder goes through here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gmmcourse.atomic import atomic_write, stage, staged

__all__ = ["stage", "staged", "atomic_write", "read_small", "CourseLocked", "lock_course"]


def read_small(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes of a regular file, never following a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


class CourseLocked(Exception):
    """Another process (its pid in ``args[0]``) holds the course's lock."""


def lock_course(course: Path):
    """The exclusive lock on ``<course>/.autograde.lock`` that grading and LMS imports share
    (never through a symbolic link: the file is written); the open file holds it. Raises
    `CourseLocked` with the holder's pid, or OSError when the course folder is not writable."""
    import fcntl

    fd = os.open(Path(course) / ".autograde.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        other = f.read().strip() or "?"
        f.close()
        raise CourseLocked(other) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
