"""``server/course collect``: each student's latest submission, from their own inbound folder
(on their disk image, userfs.py) or the exchange's shared one, into
``course/submitted/<student>/<assignment>/``, run as root on files students made.

Nothing a student puts in their own submission folder can make root read anything else:

* a submission is a real folder (not a link) named ``<student>+<assignment>+<time>+<random>``
  and owned by the account it names, which must be on the roster;
* only regular files are copied, each opened relative to its already-opened folder with
  ``O_NOFOLLOW`` (never through a link), checked with ``lstat`` before and ``fstat`` after
  opening (same inode, regular, owned by the student); links, devices and FIFOs are skipped;
* sizes are capped (``MAX_SUBMISSION_BYTES`` in all, ``MAX_FILES`` files), read at most one byte
  past the cap, so ``/dev/zero`` or a file that grows while read cannot fill the disk;
* the submission time is the trusted one: the latest change time (``ctime``, which only the
  kernel sets) of the folder and of what was copied, never later than now; the time in the
  folder's name and the student's ``timestamp.txt`` are ignored (and replaced).

Every problem is reported as one line naming the student, who is skipped (or the file);
the rest of the class is collected.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import roster

MAX_SUBMISSION_BYTES = 50 << 20  # one submission, all files together
MAX_FILES = 200
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"  # nbgrader's timestamp.txt format


class Skip(Exception):
    """This submission (or file) is not collected; the message says why."""


@dataclass
class Submission:
    student: str
    folder: str  # name inside inbound/
    uid: int
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    time: float = 0.0  # trusted: latest ctime seen, bounded by now
    notes: list[str] = field(default_factory=list)


def format_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str) -> float | None:
    try:
        return dt.datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return None


def _read_tree(sub: Submission, dfd: int, prefix: str, budget: list[int], now: float) -> None:
    """Copy the regular files under the open folder ``dfd`` into ``sub.files``."""
    st = os.fstat(dfd)
    sub.time = max(sub.time, min(st.st_ctime, now))
    for name in sorted(os.listdir(dfd)):
        rel = f"{prefix}{name}"
        if rel == "timestamp.txt":
            continue  # the student's claim; collect writes the trusted time
        try:
            before = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            continue
        if before.st_uid != sub.uid:
            sub.notes.append(f"{rel}: skipped (owned by uid {before.st_uid}, not the student)")
            continue
        if stat.S_ISDIR(before.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                after = os.fstat(fd)
                if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or after.st_uid != sub.uid:
                    sub.notes.append(f"{rel}/: skipped (replaced while collected)")
                    continue
                _read_tree(sub, fd, rel + "/", budget, now)
            finally:
                os.close(fd)
            continue
        if not stat.S_ISREG(before.st_mode):
            kind = "a link" if stat.S_ISLNK(before.st_mode) else "not a regular file"
            sub.notes.append(f"{rel}: skipped ({kind})")
            continue
        if len(sub.files) >= MAX_FILES:
            raise Skip(f"more than {MAX_FILES} files")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
        except OSError as e:
            sub.notes.append(f"{rel}: skipped ({e.strerror})")
            continue
        try:
            after = os.fstat(fd)
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(after.st_mode) \
                    or after.st_uid != sub.uid:
                sub.notes.append(f"{rel}: skipped (replaced while collected)")
                continue
            chunks, n = [], 0
            while n <= budget[0]:
                b = os.read(fd, min(1 << 20, budget[0] + 1 - n))
                if not b:
                    break
                chunks.append(b)
                n += len(b)
            if n > budget[0]:
                raise Skip(f"larger than {MAX_SUBMISSION_BYTES >> 20} MiB")
            budget[0] -= n
            sub.files[rel] = b"".join(chunks)
            sub.time = max(sub.time, min(os.fstat(fd).st_ctime, now))
        finally:
            os.close(fd)


def read_submission(inbound: Path, folder: str, student: str, uid: int, now: float) -> Submission:
    """The regular files of one submission folder, read safely (raises Skip)."""
    sub = Submission(student=student, folder=folder, uid=uid)
    inb = os.open(inbound, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            before = os.lstat(folder, dir_fd=inb)
        except FileNotFoundError:
            raise Skip("removed while collected") from None
        if not stat.S_ISDIR(before.st_mode):
            raise Skip("not a folder (a link or a file)")
        if before.st_uid != uid:
            owner = _user(before.st_uid)
            raise Skip(f"the folder belongs to {owner}, not to {student}")
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=inb)
    finally:
        os.close(inb)
    try:
        after = os.fstat(dfd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or after.st_uid != uid:
            raise Skip("replaced while collected")
        _read_tree(sub, dfd, "", [MAX_SUBMISSION_BYTES], now)
    finally:
        os.close(dfd)
    return sub


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def scan(inbounds: list[tuple[Path, str | None]], assignment: str, users: dict,
         now: float | None = None) -> tuple[dict, list[str]]:
    """The latest readable submission of each student (by trusted time) and the skips.
    ``inbounds``: (folder, the only student it may hold, or None for the shared one)."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    latest: dict[str, Submission] = {}
    skipped: list[str] = []
    for inbound, only, entry in [(d, o, e) for d, o in inbounds if d.is_dir() for e in sorted(os.listdir(d))]:
        parts = entry.split("+")
        if len(parts) < 2 or parts[1] != assignment:
            continue
        student = parts[0]
        try:
            if only is not None and student != only:
                raise Skip(f"in the submission folder of {only}")
            if len(parts) != 4:
                raise Skip("not a submission name (student+assignment+time+random)")
            if not roster.valid_name(student) or student not in users:
                raise Skip("not a student on the roster")
            try:
                uid = pwd.getpwnam(student).pw_uid
            except KeyError:
                raise Skip("no such account") from None
            sub = read_submission(inbound, entry, student, uid, now)
            if not any(f.endswith(".ipynb") for f in sub.files):
                raise Skip("no notebook in it")
        except (Skip, OSError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            skipped.append(f"{student or '?'}: {entry}: skipped ({msg})")
            continue
        for note in sub.notes:
            skipped.append(f"{student}: {entry}/{note}")
        if student not in latest or sub.time > latest[student].time:
            latest[student] = sub
    return latest, skipped


def store(sub: Submission, dest: Path) -> bool:
    """Write ``sub`` as ``dest`` (replacing an older one); False when ``dest`` is as new."""
    old = parse_time((dest / "timestamp.txt").read_text()) if (dest / "timestamp.txt").is_file() else None
    if old is not None and old >= parse_time(format_time(sub.time)):  # compared as recorded (microseconds)
        return False
    tmp = dest.with_name(dest.name + ".collecting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel, data in sub.files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (tmp / "timestamp.txt").write_text(format_time(sub.time))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return True


def collect(inbounds: list[tuple[Path, str | None]], submitted: Path, assignment: str, users: dict) -> dict:
    """Collect ``assignment``; returns {"collected": [...], "unchanged": [...], "skipped": [lines]}."""
    latest, skipped = scan(inbounds, assignment, users)
    out: dict = {"collected": [], "unchanged": [], "skipped": skipped}
    for student, sub in sorted(latest.items()):
        changed = store(sub, submitted / student / assignment)
        out["collected" if changed else "unchanged"].append(student)
    return out
