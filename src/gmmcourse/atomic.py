"""The package's one atomic write: a file is replaced whole or not at all.

The new contents go to a temporary file beside the target (same folder, so the rename is
atomic; never through a link, never over an existing file), flushed to disk, then renamed
over the target: a reader sees the old file or the new one, never half of one, and a failed
write leaves the old file and no temporary behind. The grader's course files
(its `files` module) and the exported-program cache (`gmmcourse.programs`) both write
through here; this module imports nothing of the package, so that the student wheel (which
has no grader) carries it too.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["stage", "staged", "atomic_write"]


def stage(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, *, exact: bool = False,
          durable: bool = True) -> Path:
    """Write `data` (text as UTF-8, no newline translation) to a new temporary file beside
    `path` and return it; the caller renames it into place (`staged`). Nothing is left
    behind when the write fails (a full disk).

    Args:
        mode: the file's permissions, less the process's umask (as ``open`` does), or exactly
            `mode` with `exact` (a file that other users must read whatever the umask).
        durable: flush the data to disk (``fsync``) before returning; a cache that is rebuilt
            when an entry is missing or torn may skip it.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if exact:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(raw)
            f.flush()
            if durable:
                os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


@contextmanager
def staged() -> Iterator[list[tuple[Path, Path]]]:
    """Several files replaced together: append ``(stage(target, data), target)`` pairs to the
    list this yields; when the block ends without an error each temporary file is renamed
    over its target, in order. In every case (an error in the block, a failed rename) no
    temporary file is left behind, and a target not yet renamed keeps its old contents."""
    pairs: list[tuple[Path, Path]] = []
    try:
        yield pairs
        for tmp, target in pairs:
            os.replace(tmp, target)
    finally:
        for tmp, _ in pairs:
            Path(tmp).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, *, exact: bool = False,
                 durable: bool = True) -> None:
    """Replace `path` by `data` atomically (`stage`, then rename; see `stage` for the options)."""
    with staged() as batch:
        batch.append((stage(path, data, mode, exact=exact, durable=durable), Path(path)))
