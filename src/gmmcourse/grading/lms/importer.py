"""The import: one assignment's notebooks from an LMS zip into nbgrader's
``<course>/submitted/<student>/<assignment>/<notebook>.ipynb`` (+ ``timestamp.txt``),
under the grader's course lock; nothing written outside the course folder, no link
followed, nothing overwritten without a copy kept under ``<course>/lms-imports/<stamp>/``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..files import CourseLocked, atomic_write, lock_course, read_small, stage, staged
from . import zipread
from .names import (FORMATS, TITLES, ZIPCOLLECT_REGEXP, clean_name, decide_lms, parse_name, parse_ts, readings,
                    resolve, who)
from .report import ImportReport, LMSImportError, show
from .roster import Roster, gradebook_roster, load_roster
from .roster import save_roster as save_roster_to_gradebook


@dataclass
class Candidate:
    info: zipfile.ZipInfo
    student: str
    filename: str            # the notebook's own name (after the LMS prefix)
    timestamp: _dt.datetime | None
    order: tuple             # newest last
    late: bool = False


def entry_time(info: zipfile.ZipInfo) -> _dt.datetime | None:
    try:
        t = _dt.datetime(*info.date_time)
    except (TypeError, ValueError):
        return None
    return None if t.year <= 1980 else t


def _lstat(p: Path) -> os.stat_result | None:
    try:
        return p.lstat()
    except FileNotFoundError:
        return None


def _safe_dir(root: Path, parts: Iterable[str]) -> Path:
    """``root/parts...`` as real folders (created when missing), never through a link."""
    d = root
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\x00" in part:
            raise OSError(f"unsafe path component {part!r}")
        d = d / part
        st = _lstat(d)
        if st is None:
            try:
                d.mkdir(mode=0o755)
            except FileExistsError:
                pass
            st = _lstat(d)
        if st is None or stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise OSError(f"{d} is a symbolic link or not a folder")
    return d


def _fmt_ts(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


class _Archive:
    """``<course>/lms-imports/<stamp>/``: the report, and the submissions replaced."""

    def __init__(self, course: Path, zip_sha: str) -> None:
        self.course = course
        base = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + zip_sha[:8]
        root = _safe_dir(course, ["lms-imports"])
        name, n = base, 1
        while _lstat(root / name) is not None:
            n += 1
            name = f"{base}-{n}"
        self.folder = _safe_dir(root, [name])

    def keep(self, src: Path, student: str, assignment: str) -> None:
        dest = _safe_dir(self.folder, ["replaced", student, assignment]) / src.name
        try:
            os.link(src, dest, follow_symlinks=False)
        except OSError:
            data = read_small(src, zipread.MAX_ENTRY_BYTES + 1)
            if data is None:
                raise
            atomic_write(dest, data)


def _install(course: Path, student: str, assignment: str, notebook: str, data: bytes,
             ts: _dt.datetime | None, archive_for) -> tuple[str, str | None]:
    """Place one notebook; returns (action, message): new | replaced | unchanged | kept."""
    folder = _safe_dir(course, ["submitted", student, assignment])
    target = folder / notebook
    ts_path = folder / "timestamp.txt"
    st = _lstat(target)
    old_ts = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{target.relative_to(course)} exists and is not a regular file; remove it first")
        old = read_small(target, zipread.MAX_ENTRY_BYTES + 1)
        if old is not None and hashlib.sha256(old).digest() == hashlib.sha256(data).digest():
            return "unchanged", None
        raw = read_small(ts_path, 64)
        old_ts = parse_ts(raw.decode("utf-8", "replace").replace("UTC", "")) if raw else None
        if old_ts is not None and ts is not None and ts < old_ts:
            return "kept", (f"the course holds a newer submission ({_fmt_ts(old_ts)}) than the zip's "
                            f"({_fmt_ts(ts)}); nothing changed")
    with staged() as batch:  # both files staged before the old ones are archived, renamed after
        batch.append((stage(target, data), target))
        if ts is not None:
            batch.append((stage(ts_path, _fmt_ts(ts) + "\n"), ts_path))
        action = "new"
        if st is not None:
            arch = archive_for()
            arch.keep(target, student, assignment)
            if _lstat(ts_path) is not None:
                arch.keep(ts_path, student, assignment)
            action = "replaced"
    if ts is None and st is not None and _lstat(ts_path) is not None:
        ts_path.unlink()  # kept in the archive; it dated the old notebook
    msg = None
    if action == "replaced":
        msg = "the previous notebook is kept in " + str(archive_for().folder.relative_to(course) / "replaced")
    return action, msg


def _lock(course: Path):
    """The grader's own lock (`files.lock_course`): no import while grading."""
    try:
        return lock_course(course)
    except CourseLocked as busy:
        raise LMSImportError(f"an autograde is running on {course} (pid {busy.args[0]}); import after it finishes") from None
    except OSError as e:
        raise LMSImportError(f"cannot write to the course folder {course}: {e.strerror}") from None


def import_zip(
    zip_path: str | Path,
    course: str | Path,
    assignment,
    *,
    roster: str | Path | None = None,
    lms: str = "auto",
    regexp: str | None = None,
    save_roster: bool = True,
    echo=lambda s: print(s, file=sys.stderr),
) -> ImportReport:
    """Import one assignment's submissions from an LMS zip into ``<course>/submitted/``.

    `assignment` is a `spec.Assignment` (its ``id`` and ``notebook``). Raises
    `LMSImportError` when the zip, the roster or the course cannot be used at all; every
    other problem is in the returned report (``exit_code`` 1 when a student's file was not
    imported).
    """
    if lms not in FORMATS:
        raise LMSImportError(f"unknown LMS naming {lms!r}; one of {', '.join(FORMATS)}")
    course = Path(course).resolve()
    if not course.is_dir():
        raise LMSImportError(f"course directory {course} does not exist")
    rx = None
    if regexp is not None or lms in ("auto", "zipcollect"):
        try:
            rx = re.compile(regexp or ZIPCOLLECT_REGEXP, re.S)
        except re.error as e:
            raise LMSImportError(f"--regexp is not a valid regular expression: {e}") from None
        if not {"student_id", "file_id"} <= set(rx.groupindex):
            raise LMSImportError("--regexp must have the named groups (?P<student_id>...) and (?P<file_id>...)")
    zp = Path(zip_path)
    report = ImportReport(zip=str(zp), assignment=assignment.id, lms=lms)
    try:
        zst = zp.stat()
    except OSError:
        raise LMSImportError(f"zip file {zp} does not exist") from None
    if not stat.S_ISREG(zst.st_mode):
        raise LMSImportError(f"{zp} is not a file")
    if zst.st_size > zipread.MAX_ZIP_BYTES:
        raise LMSImportError(f"{zp} is too large ({zst.st_size >> 20} MiB; limit {zipread.MAX_ZIP_BYTES >> 20} MiB)")
    if roster is not None:
        ros = load_roster(roster, report)
    else:
        ros = gradebook_roster(course)
        if not ros.students:
            report.add("note", "roster", "no --roster and no students in the gradebook: Canvas and Moodle "
                       "names cannot be mapped (zip_collect and submitted/ names are used as student ids)")
    try:
        fh = open(zp, "rb")
    except OSError as e:
        raise LMSImportError(f"cannot read {zp}: {e.strerror}") from None
    lock = None
    with fh:
        with zipread.open_zip(fh, zp) as zf:
            infos = zf.infolist()
            zip_sha = hashlib.sha256()
            fh.seek(0)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                zip_sha.update(chunk)
            fmt = lms
            if lms == "auto":
                fmt = decide_lms([i.filename for i in zipread.submission_entries(infos)], rx, ros)
                report.lms = f"auto: {TITLES[fmt]}" if fmt else "auto: no known naming"
            lock = _lock(course)
            try:
                _import(fh, zst.st_size, infos, course, assignment, ros, fmt, rx, report, zip_sha.hexdigest())
                if save_roster and roster is not None and ros.students:
                    save_roster_to_gradebook(course, ros, report)
            finally:
                try:
                    lock.close()
                except OSError:
                    pass
    _write_report(report)
    echo(report.text())
    return report


def _import(fh, zip_size: int, infos, course: Path, assignment, ros: Roster, fmt: str | None, rx,
            report: ImportReport, zip_sha: str) -> None:
    """Import the entries of the naming `fmt` (None: no entry follows a known naming)."""
    arch: list[_Archive] = []

    def archive_for() -> _Archive:
        if not arch:
            arch.append(_Archive(course, zip_sha))
            report.folder = arch[0].folder
        return arch[0]

    try:
        archive_for()  # the report always has a home
        _safe_dir(course, ["submitted"])
    except OSError as e:
        raise LMSImportError(f"cannot write to the course folder {course}: {e}; nothing was imported") from None
    by_student: dict[str, list[Candidate]] = {}
    others: dict[str, list[str]] = {}
    for info in infos:
        why = zipread.entry_problem(info)
        if why:
            report.add("rejected", info.filename, why)
    for info in zipread.submission_entries(infos):
        name = info.filename
        fields = parse_name(name, fmt, rx) if fmt else None
        if fields is None:
            report.add("unmapped", name, "the name follows no known LMS naming (Canvas, Moodle, zip_collect or "
                       "submitted/)" if fmt is None else f"not a {TITLES[fmt]} name (the zip's naming)")
            continue
        if fmt == "submitted" and fields["assignment"] != assignment.id:
            report.add("ignored", name, f"belongs to assignment {show(fields['assignment'])!r}, not {assignment.id!r}")
            continue
        sid, why = resolve(fmt, fields, ros)
        if sid is None:
            report.add("unmapped", name, why or "unknown student")
            continue
        for other, alt in readings(name, "auto", rx).items():
            if other != fmt and resolve(other, alt, ros)[0] not in (None, sid):
                report.add("note", name, f"also reads as a {who(other, alt, ros)}; attributed by the "
                           f"{TITLES[fmt]} part of the name only", sid)
        if not fields["file"].lower().endswith(".ipynb"):
            others.setdefault(sid, []).append(name)
            continue
        ts = None
        if fields.get("timestamp"):
            ts = parse_ts(fields["timestamp"])
            if ts is None:
                report.add("note", name, f"timestamp {show(fields['timestamp'])!r} not understood; the zip entry's date is used", sid)
        ts = ts or entry_time(info)
        order = (ts or _dt.datetime.min, fields.get("sub_id", -1), info.header_offset)
        by_student.setdefault(sid, []).append(
            Candidate(info, sid, fields["file"], ts, order, fields.get("late", False)))
    for sid, names in sorted(others.items()):
        for name in names:
            if sid in by_student:
                report.add("ignored", name, "not a notebook", sid)
            else:
                report.add("missing", name, f"not a notebook, and no notebook came with it: {show(sid)} is not graded", sid)
    budget = zipread.Budget()
    want = assignment.notebook
    for sid in sorted(by_student):
        cands = by_student[sid]
        named = [c for c in cands if clean_name(c.filename) == want or c.filename == want]
        if not named:
            distinct = sorted({c.filename for c in cands})
            if len(distinct) > 1:
                for c in cands:
                    report.add("missing", c.info.filename, f"several notebooks, none named {want!r} "
                               f"({', '.join(map(show, distinct))}); rename one and re-import", sid)
                continue
            named = cands
        named.sort(key=lambda c: c.order, reverse=True)
        for c in cands:
            if c not in named:
                report.add("duplicate", c.info.filename, f"another notebook than {want!r}; not imported", sid)
        chosen = None
        for c in named:
            if chosen is not None:
                report.add("duplicate", c.info.filename, "an older copy; the newest was imported "
                           f"({show(chosen.info.filename)})", sid)
                continue
            data, why = zipread.read_capped(fh, c.info, zip_size, budget)
            if data is None:
                report.add("rejected", c.info.filename, why, sid)
                continue
            chosen = c
            try:
                action, msg = _install(course, sid, assignment.id, want, data, c.timestamp, archive_for)
            except OSError as e:
                report.add("failed", c.info.filename, f"{type(e).__name__}: {e}", sid)
                continue
            report.imported.append((sid, action, show(c.info.filename)))
            if action == "kept":
                report.add("kept", c.info.filename, msg, sid)
            elif msg:
                report.add("note", c.info.filename, msg, sid)
            if clean_name(c.filename) != want:
                report.add("renamed", c.info.filename, f"{show(c.filename)!r} -> {want!r}", sid)
            if c.late:
                report.add("note", c.info.filename, "Canvas marks this submission LATE", sid)


def _write_report(report: ImportReport) -> None:
    if report.folder is None:
        return
    try:
        for name, text in (("report.txt", report.text() + "\n"),
                           ("report.json", json.dumps(report.as_json(), indent=1, ensure_ascii=True) + "\n")):
            atomic_write(report.folder / name, text)
    except OSError as e:
        report.add("note", "report", f"the report could not be written ({e.strerror})")
