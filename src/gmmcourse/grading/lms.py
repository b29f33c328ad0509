"""Submissions from an LMS: read a zip of submissions downloaded from Canvas or Moodle (or
named for nbgrader's ``zip_collect``), safely, into nbgrader's layout
``<course>/submitted/<student>/<assignment>/<notebook>.ipynb`` (+ ``timestamp.txt``), so
that the normal grader grades it. See docs/grading.md, "Submissions from an LMS".

One job only: nothing here runs or grades a notebook. The zip is hostile input:

* it is never extracted (no ``extractall``): each entry is checked, then read as a stream
  with a byte cap; the path written is built from the roster's student id and the
  assignment, never from the entry's name, so an entry name cannot choose where it lands;
* absolute paths, ``..``, symbolic links and other special files (Unix mode in the zip's
  external attributes), encrypted entries, entries declared over `MAX_ENTRY_BYTES`, entries
  that expand past the cap, past their declared size or past `MAX_RATIO` times their
  compressed size (zip bombs: detected while streaming, the header is not trusted), more
  than `MAX_TOTAL_BYTES` read in all, more than `MAX_ENTRIES` entries: rejected and reported;
* a student is named only by the LMS's own part of an entry's name (the rest is a file name
  the student chose, and can imitate another LMS's naming): ``--lms auto`` decides the naming
  once for the whole zip (`decide_lms`), and a name that reads as two students is reported,
  never given to either;
* files that are not notebooks are reported and skipped;
* an existing submission is never overwritten silently: the same bytes are left alone
  (re-importing a zip changes nothing), a different notebook replaces the old one by a
  rename in the same folder after the old one was kept under
  ``<course>/lms-imports/<stamp>/replaced/``, and an older notebook than the one already
  there is not imported;
* nothing is written outside the course folder (no symbolic link is followed under it);
* every problem goes into one report (printed, and written to
  ``<course>/lms-imports/<stamp>/report.txt`` and ``report.json``), never a traceback.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
import secrets
import stat
import struct
import sys
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .intake import CourseLocked, lock_course, read_small, student_id
from .sandbox import Limits
from .spec import GradingError

__all__ = ["LMSImportError", "ImportReport", "Roster", "load_roster", "import_zip", "parse_name", "readings",
           "decide_lms", "FORMATS"]

MAX_ZIP_BYTES = 4 << 30          # the zip file itself
MAX_ENTRIES = 10_000             # entries in the zip (read from its end record before anything else)
MAX_ENTRY_BYTES = getattr(Limits(), "submission_bytes", 20 << 20)  # one notebook: the grader's own limit
MAX_TOTAL_BYTES = 2 << 30        # uncompressed bytes read from the whole zip
MAX_RATIO = 200                  # expanded / compressed size, checked past RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20
MAX_ROSTER_BYTES = 16 << 20
CHUNK = 1 << 16

FORMATS = ("auto", "canvas", "moodle", "zipcollect", "submitted")

# nbgrader's documented example for zip_collect (FileNameCollectorPlugin.named_regexp)
ZIPCOLLECT_REGEXP = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)"

# Canvas "Download Submissions": lastfirst_[LATE_]<canvas user id>_<submission/attachment id>_<file name>,
# a resubmitted file gets "-N" before its extension (toy-1.ipynb).
_CANVAS = re.compile(r"^(?P<name>.*?)_(?:(?P<late>LATE)_)?(?P<uid>\d+)_(?P<sid>\d+)_(?P<file>.+)$", re.S)
# Moodle "Download all submissions": "Full Name_<participant id>_assignsubmission_file/<path>" (3.1+,
# "..._file_/" before 4.x) or, without folders, "Full Name_<participant id>_assignsubmission_file_<file>".
_MOODLE = re.compile(
    r"^(?P<name>[^/]*?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)(?:_?/(?P<path>.+)|_(?P<flat>[^/]+))$", re.S)
_COPY_SUFFIX = re.compile(r"^(?P<stem>.*?)(?:-\d+| ?\(\d+\))$")  # toy-1, "toy (1)": LMS/browser copies


class LMSImportError(GradingError):
    """The zip or the roster cannot be used at all (printed as one line; exit status 2)."""


# --------------------------------------------------------------------------- report


@dataclass
class Problem:
    kind: str       # unmapped | rejected | missing | failed | kept | duplicate | renamed | ignored | roster | note
    entry: str      # zip entry name (or roster line), already escaped for printing
    message: str
    student: str | None = None

    @property
    def severe(self) -> bool:
        """Something a student handed in that is not graded (exit status 1)."""
        return self.kind in ("unmapped", "rejected", "failed", "missing")


@dataclass
class ImportReport:
    zip: str
    assignment: str
    lms: str
    imported: list[tuple[str, str, str]] = field(default_factory=list)  # student, action, entry
    problems: list[Problem] = field(default_factory=list)
    folder: Path | None = None

    def add(self, kind: str, entry: str, message: str, student: str | None = None) -> None:
        self.problems.append(Problem(kind, _show(entry), message, student))

    @property
    def exit_code(self) -> int:
        return 1 if any(p.severe for p in self.problems) else 0

    def students(self) -> list[str]:
        return sorted({s for s, _, _ in self.imported})

    def text(self) -> str:
        counts: dict[str, int] = {}
        for _, action, _ in self.imported:
            counts[action] = counts.get(action, 0) + 1
        head = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing imported"
        lines = [f"LMS import of {self.zip} for assignment {self.assignment!r} ({self.lms}): {head}"]
        for s, action, entry in sorted(self.imported):
            lines.append(f"  {action:9} {_show(s)}  <- {entry}")
        titles = {
            "unmapped": "Not imported: names that map to no student (add them to the roster, then re-import)",
            "rejected": "Rejected entries (unsafe or unreadable; nothing was extracted from them)",
            "missing": "Not imported: no notebook to grade (none, or several with other names)",
            "failed": "Not imported: could not be written",
            "kept": "Kept the submission already in the course (it is newer than the zip's)",
            "duplicate": "Older or extra copies (the newest notebook was imported)",
            "renamed": "Imported under the assignment's notebook name",
            "ignored": "Ignored (not notebooks, or another assignment's)",
            "roster": "Roster problems",
            "note": "Notes",
        }
        for kind, title in titles.items():
            items = [p for p in self.problems if p.kind == kind]
            if not items:
                continue
            lines.append(f"{title}: {len(items)}")
            for p in items:
                who = f" [{_show(p.student)}]" if p.student else ""
                lines.append(f"  - {p.entry}{who}: {p.message}")
        if self.folder is not None:
            lines.append(f"report: {self.folder / 'report.txt'}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "zip": self.zip, "assignment": self.assignment, "lms": self.lms,
            "imported": [{"student": s, "action": a, "entry": e} for s, a, e in self.imported],
            "problems": [{"kind": p.kind, "entry": p.entry, "message": p.message, "student": p.student}
                         for p in self.problems],
            "exit_code": self.exit_code,
        }


def _show(name: str | None) -> str:
    """An untrusted name, printable and short (control characters, bidi marks escaped)."""
    text = "" if name is None else str(name)
    out = ascii(text)[1:-1] if any(not ch.isprintable() or unicodedata.category(ch) == "Cf" for ch in text) else text
    return out if len(out) <= 200 else out[:197] + "..."


# --------------------------------------------------------------------------- roster


def _name_key(name: str) -> str:
    """How a full name is compared: NFC, Moodle's file-name cleaning (``_`` -> space, no
    ``/ \\ : * ? " < > |``), case-folded, whitespace collapsed."""
    name = unicodedata.normalize("NFC", name).replace("_", " ")
    name = re.sub(r'[/\\:*?"<>|\x00-\x1f\x7f]', "", name)
    return " ".join(name.casefold().split())


@dataclass
class Roster:
    """Who is who: nbgrader student id <-> LMS user id / full name."""

    students: dict[str, dict] = field(default_factory=dict)  # student_id -> row
    by_lms: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    ambiguous_lms: set[str] = field(default_factory=set)
    ambiguous_names: set[str] = field(default_factory=set)
    source: str = "none"

    def add(self, sid: str, row: dict) -> None:
        self.students[sid] = row
        lms = (row.get("lms_user_id") or "").strip()
        if lms:
            if lms in self.by_lms and self.by_lms[lms] != sid:
                self.ambiguous_lms.add(lms)
            self.by_lms[lms] = sid
        names = set()
        if row.get("name"):
            names.add(_name_key(row["name"]))
        first, last = (row.get("first_name") or "").strip(), (row.get("last_name") or "").strip()
        if first or last:
            names.add(_name_key(f"{first} {last}"))
            names.add(_name_key(f"{last} {first}"))
        for key in names - {""}:
            if key in self.by_name and self.by_name[key] != sid:
                self.ambiguous_names.add(key)
            self.by_name[key] = sid

    def lookup_lms(self, lms_id: str) -> tuple[str | None, str | None]:
        if lms_id in self.ambiguous_lms:
            return None, f"LMS user id {lms_id} belongs to several students in the {self.source}"
        sid = self.by_lms.get(lms_id)
        return (sid, None) if sid else (None, f"LMS user id {lms_id} is not in the {self.source}")

    def lookup_name(self, name: str) -> tuple[str | None, str | None]:
        key = _name_key(name)
        if key in self.ambiguous_names:
            return None, f"the name {_show(name)!r} belongs to several students in the {self.source}"
        sid = self.by_name.get(key)
        return (sid, None) if sid else (None, f"the name {_show(name)!r} is not in the {self.source}")

    def lookup_id(self, raw: str) -> tuple[str | None, str | None]:
        """An id from a file name that is either an nbgrader student id or an LMS user id."""
        sid, bad = student_id(raw)
        if sid is not None and sid in self.students:
            return sid, None
        if raw in self.by_lms:
            return self.lookup_lms(raw)
        return None, f"student {_show(raw)!r} is not in the {self.source}"


_ALIASES = {
    "student_id": ("student_id", "nbgrader_id", "student"),
    "lms_user_id": ("lms_user_id", "canvas_user_id", "moodle_user_id", "lms_id", "user_id"),
    "name": ("name", "full_name", "fullname"),
    "first_name": ("first_name", "firstname", "first"),
    "last_name": ("last_name", "lastname", "surname", "last"),
    "email": ("email", "email_address"),
}


def load_roster(path: str | Path, report: ImportReport | None = None) -> Roster:
    """Read the instructor's roster CSV (UTF-8, a header row; columns ``student_id``
    (required: the nbgrader id, the folder name under ``submitted/``), ``lms_user_id``
    (Canvas user id, Moodle user id), ``name`` (full name as the LMS writes it), or
    ``first_name`` and ``last_name``, and ``email``; other columns are ignored). Bad rows
    are reported and skipped; an unreadable file or no ``student_id`` column is an
    `LMSImportError`."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise LMSImportError(f"roster {p} is not a file")
        if st.st_size > MAX_ROSTER_BYTES:
            raise LMSImportError(f"roster {p} is too large ({st.st_size >> 20} MiB; limit {MAX_ROSTER_BYTES >> 20} MiB)")
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise LMSImportError(f"roster {p} does not exist") from None
    except UnicodeDecodeError:
        raise LMSImportError(f"roster {p} is not UTF-8 text (save it as CSV UTF-8)") from None
    except OSError as e:
        raise LMSImportError(f"cannot read the roster {p}: {e.strerror}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(rows)
    except (StopIteration, csv.Error):
        raise LMSImportError(f"roster {p} is empty") from None
    norm = [re.sub(r"[^a-z0-9]+", "_", h.strip().casefold()).strip("_") for h in header]
    cols: dict[str, int] = {}
    for key, names in _ALIASES.items():
        for n in names:
            if n in norm:
                cols[key] = norm.index(n)
                break
    if "student_id" not in cols:
        raise LMSImportError(f"roster {p}: no student_id column (the header has {', '.join(map(repr, header[:8]))})")
    roster = Roster(source=f"roster {p.name}")
    seen: set[str] = set()
    try:
        for line, row in enumerate(rows, start=2):
            if not any(c.strip() for c in row):
                continue
            rec = {k: (row[i].strip() if i < len(row) else "") for k, i in cols.items()}
            raw = rec["student_id"]
            sid, bad = student_id(raw)
            where = f"{p.name} line {line}"
            if sid is None:
                if report:
                    report.add("roster", where, f"student id {_show(raw)!r} is not valid ({bad}); row skipped")
                continue
            if sid in seen:
                if report:
                    report.add("roster", where, f"student id {sid!r} appears twice; the later row is skipped")
                continue
            seen.add(sid)
            roster.add(sid, rec)
    except csv.Error as e:
        raise LMSImportError(f"roster {p} is not valid CSV: {e}") from None
    if report:
        for lms in sorted(roster.ambiguous_lms):
            who = sorted(s for s, r in roster.students.items() if (r.get("lms_user_id") or "").strip() == lms)
            report.add("roster", roster.source, f"LMS user id {lms} is given to several students ({', '.join(who)}); "
                       "their files cannot be mapped")
    return roster


def _gradebook_roster(course: Path) -> Roster:
    """The students already in the gradebook (read only, without nbgrader)."""
    import sqlite3

    roster = Roster(source="gradebook")
    db = course / "gradebook.db"
    try:
        st = db.lstat()
    except OSError:
        return roster
    if not stat.S_ISREG(st.st_mode):
        return roster
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("select id, first_name, last_name, email, lms_user_id from student").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return roster
    for sid, first, last, email, lms in rows:
        roster.add(sid, {"first_name": first or "", "last_name": last or "", "email": email or "",
                         "lms_user_id": "" if lms is None else str(lms)})
    return roster


# --------------------------------------------------------------------------- names


@dataclass
class Candidate:
    info: zipfile.ZipInfo
    student: str
    filename: str            # the notebook's own name (after the LMS prefix)
    timestamp: _dt.datetime | None
    order: tuple             # newest last
    late: bool = False


def _parse_ts(text: str) -> _dt.datetime | None:
    text = text.strip()
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        m = re.fullmatch(r"(\d{4})\D?(\d\d)\D?(\d\d)\D*(\d\d)\D?(\d\d)\D?(\d\d)(?:\D(\d{1,6}))?", text)
        if not m:
            return None
        try:
            t = _dt.datetime(*(int(g) for g in m.groups()[:6]), int((m.group(7) or "0").ljust(6, "0")))
        except ValueError:
            return None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


def _entry_time(info: zipfile.ZipInfo) -> _dt.datetime | None:
    try:
        t = _dt.datetime(*info.date_time)
    except (TypeError, ValueError):
        return None
    return None if t.year <= 1980 else t


_NAMINGS = ("moodle", "canvas", "submitted", "zipcollect")  # a tie between namings goes to the first
_TITLES = {"moodle": "Moodle", "canvas": "Canvas", "submitted": "submitted/", "zipcollect": "zip_collect"}


def _zipcollect_ids(name: str, regexp: re.Pattern) -> list[str]:
    """Every student id `name` reads as under `regexp`, the regexp's own match first. A
    greedy pattern such as nbgrader's ``.*_(?P<student_id>...)_attempt_...`` takes the last
    ``_<id>_attempt_<time>_`` of the name, which may sit in the file-name part the student
    chose: each shorter reading of what comes before the matched id is found too."""
    ids: list[str] = []
    text = name
    while text:
        m = regexp.match(text)
        if not m or not m.groupdict().get("student_id") or not m.groupdict().get("file_id"):
            break
        if m.group("student_id") not in ids:
            ids.append(m.group("student_id"))
        text = text[:m.start("student_id")]
    return ids


def parse_name(name: str, fmt: str, regexp: re.Pattern | None) -> dict | None:
    """What `name` says when read as an entry of the LMS naming `fmt` (one of `_NAMINGS`),
    or None when it is not such a name."""
    if fmt == "moodle":
        m = _MOODLE.match(name)
        if m:
            inner = m.group("path") or m.group("flat") or ""
            return {"name": m.group("name"), "lms_id": m.group("pid"), "plugin": m.group("plugin"),
                    "file": inner.rsplit("/", 1)[-1]}
    elif fmt == "zipcollect" and regexp is not None:
        m = regexp.match(name)
        if m and m.groupdict().get("student_id") and m.groupdict().get("file_id"):
            d = m.groupdict()
            return {"id": d["student_id"], "ids": _zipcollect_ids(name, regexp),
                    "file": d["file_id"].rsplit("/", 1)[-1], "timestamp": d.get("timestamp")}
    elif fmt == "canvas":
        m = _CANVAS.match(name.rsplit("/", 1)[-1])
        if m:
            return {"name": m.group("name"), "lms_id": m.group("uid"), "sub_id": int(m.group("sid")),
                    "late": bool(m.group("late")), "file": m.group("file")}
    elif fmt == "submitted":
        parts = [p for p in name.split("/") if p]
        if parts and parts[0] == "submitted":
            parts = parts[1:]
        if len(parts) == 3:
            return {"id": parts[0], "assignment": parts[1], "file": parts[2]}
    return None


def readings(name: str, lms: str, regexp: re.Pattern | None) -> dict[str, dict]:
    """{naming: fields} for every naming of `lms` ("auto": all of them) that `name` fits."""
    out = {}
    for fmt in _NAMINGS if lms == "auto" else (lms,):
        fields = parse_name(name, fmt, regexp)
        if fields is not None:
            out[fmt] = fields
    return out


def _who(fmt: str, fields: dict, roster: Roster) -> str:
    sid, _ = _resolve(fmt, fields, roster)
    return f"{_TITLES[fmt]} name of {_show(sid)!r}" if sid else f"{_TITLES[fmt]} name of no known student"


def decide_lms(names: list[str], regexp: re.Pattern | None, roster: Roster) -> str | None:
    """``--lms auto``: the one naming of the whole zip, from all its entries' names (None
    when no entry follows any). A student is named only by the LMS's own part of a name,
    and the rest (the file name a student chose) can imitate another naming: so the naming
    is the one that every entry fits, never decided entry by entry. Entries of different
    namings, or names that read as different students under two namings that all entries
    fit, are an `LMSImportError` (one line): nothing is guessed."""
    fits = {n: readings(n, "auto", regexp) for n in names}
    fits = {n: r for n, r in fits.items() if r}
    if not fits:
        return None
    common = [fmt for fmt in _NAMINGS if all(fmt in r for r in fits.values())]
    if not common:
        groups: dict[tuple, str] = {}
        for n, r in fits.items():
            groups.setdefault(tuple(r), n)
        shown = "; ".join(f"{_show(n)!r} reads as {' or '.join(_TITLES[f] for f in g)}"
                          for g, n in list(groups.items())[:3])
        raise LMSImportError(f"the zip's entries follow different LMS namings ({shown}); nothing was imported: "
                             "pass --lms canvas, moodle, zipcollect or submitted")
    for n, r in fits.items():
        outcomes = {fmt: _resolve(fmt, r[fmt], roster)[0] for fmt in common}
        if len(set(outcomes.values())) > 1:
            shown = " and as a ".join(_who(fmt, r[fmt], roster) for fmt in common)
            raise LMSImportError(f"{_show(n)!r} reads as a {shown}: the zip's LMS cannot be told from its names; "
                                 "nothing was imported: pass --lms canvas, moodle, zipcollect or submitted")
    return common[0]


def _resolve(fmt: str, fields: dict, roster: Roster) -> tuple[str | None, str | None]:
    """(student id, None) or (None, why not)."""
    if fmt == "canvas":
        if not roster.students:
            return None, "no roster: pass --roster with each student's Canvas user id (lms_user_id)"
        return roster.lookup_lms(fields["lms_id"])
    if fmt == "moodle":
        if fields["name"].strip().casefold() == "participant":
            return None, ("blind marking hides who this is (Participant " + fields["lms_id"] +
                          "); reveal student identities in Moodle before downloading")
        if not roster.students:
            return None, "no roster: pass --roster with each student's full name (name, or first_name and last_name)"
        return roster.lookup_name(fields["name"])
    if len(fields.get("ids", ())) > 1:
        return None, ("the name reads as zip_collect names of several students (" +
                      ", ".join(repr(_show(i)) for i in fields["ids"]) + "), and a part of it is the file name a "
                      "student chose: not imported; check it, then import it with a --regexp that reads only the "
                      "LMS's own part")
    raw = fields["id"]
    if roster.students:
        sid, why = roster.lookup_id(raw)
        if sid is not None or roster.source != "gradebook":
            return sid, why  # an explicit roster is the class list
    sid, bad = student_id(raw)
    return (sid, None) if sid else (None, f"{_show(raw)!r} is not a valid student id ({bad})")


# --------------------------------------------------------------------------- zip checks


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be read at all (path, type, encryption, declared size)."""
    name = info.filename
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return "the name contains control characters"
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path (zip-slip)"
    if any(p == ".." for p in parts):
        return "path with '..' (zip-slip)"
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFLNK:
            return "symbolic link"
        if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
            return "not a regular file (device, pipe or socket)"
    if info.flag_bits & 0x1:
        return "encrypted entry"
    if info.file_size > MAX_ENTRY_BYTES:
        return f"too large ({info.file_size >> 20} MiB declared; limit {MAX_ENTRY_BYTES >> 20} MiB)"
    return None


class _Budget:
    def __init__(self) -> None:
        self.total = 0


def _read_capped(fh, info: zipfile.ZipInfo, zip_size: int, budget: _Budget) -> tuple[bytes | None, str | None]:
    """The entry's bytes, or (None, why). The compressed data is read from the archive and
    inflated here, in chunks, with the output capped at the declared size (and
    `MAX_ENTRY_BYTES`): an entry whose header understates what it expands to -- a zip bomb --
    is stopped as soon as it passes its declared size; the size, the CRC-32 and the
    compression ratio are checked on the real data."""
    try:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            return None, "corrupt entry (no local header where the directory points)"
        method, = struct.unpack("<H", head[8:10])
        n, m = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + n + m
        if method != info.compress_type:
            return None, "corrupt entry (its local header and the zip directory disagree)"
        if start + info.compress_size > zip_size:
            return None, "corrupt entry (its data runs past the end of the zip)"
        if method == zipfile.ZIP_DEFLATED:
            dec = zlib.decompressobj(-15)
        elif method == zipfile.ZIP_STORED:
            dec = None
        else:
            return None, f"unsupported compression method {method} (LMS zips use deflate)"
        fh.seek(start)
        limit = min(MAX_ENTRY_BYTES, info.file_size)
        left = info.compress_size
        out = bytearray()
        bomb = (f"expands past its declared size ({info.file_size} bytes): rejected as a zip bomb, "
                "nothing of it was written")
        while left > 0:
            raw = fh.read(min(CHUNK, left))
            if not raw:
                return None, "corrupt entry (the zip is truncated)"
            left -= len(raw)
            if dec is None:
                data = raw
            else:
                data = dec.decompress(raw, limit + 1 - len(out))
                if dec.unconsumed_tail:  # more output than the cap allows
                    return None, bomb
            out += data
            budget.total += len(data)
            if len(out) > limit:
                return None, bomb
            if len(out) > RATIO_FLOOR and len(out) > MAX_RATIO * max(1, info.compress_size):
                return None, (f"compression ratio over {MAX_RATIO}:1 ({info.compress_size} bytes expand past "
                              f"{len(out)}): rejected as a zip bomb")
            if budget.total > MAX_TOTAL_BYTES:
                return None, f"the zip expands past {MAX_TOTAL_BYTES >> 20} MiB in all: the rest is not read"
        if dec is not None and not dec.eof:
            return None, "corrupt entry (the compressed data ends early)"
    except (zlib.error, OSError, struct.error, ValueError) as e:
        return None, f"corrupt entry ({type(e).__name__}: {str(e)[:80]})"
    if len(out) != info.file_size:
        return None, f"corrupt entry (declared {info.file_size} bytes, holds {len(out)})"
    if zlib.crc32(out) & 0xFFFFFFFF != info.CRC:
        return None, "corrupt entry (CRC-32 mismatch)"
    return bytes(out), None


def _count_entries(fh) -> int | None:
    """The entry count from the zip's end record, before zipfile reads the directory."""
    try:
        end = zipfile._EndRecData(fh)  # stable since Python 2; guarded below
    except Exception:
        return None
    if not end:
        return None
    try:
        return int(end[zipfile._ECD_ENTRIES_TOTAL])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- writing


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


def _write_tmp(folder: Path, name: str, data: bytes) -> Path:
    tmp = folder / f".{name}.lms-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


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
            data = read_small(src, MAX_ENTRY_BYTES + 1)
            if data is None:
                raise
            os.replace(_write_tmp(dest.parent, dest.name, data), dest)


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
        old = read_small(target, MAX_ENTRY_BYTES + 1)
        if old is not None and hashlib.sha256(old).digest() == hashlib.sha256(data).digest():
            return "unchanged", None
        raw = read_small(ts_path, 64)
        old_ts = _parse_ts(raw.decode("utf-8", "replace").replace("UTC", "")) if raw else None
        if old_ts is not None and ts is not None and ts < old_ts:
            return "kept", (f"the course holds a newer submission ({_fmt_ts(old_ts)}) than the zip's "
                            f"({_fmt_ts(ts)}); nothing changed")
    tmp = _write_tmp(folder, notebook, data)
    tmp_ts = None
    try:
        if ts is not None:
            tmp_ts = _write_tmp(folder, "timestamp.txt", (_fmt_ts(ts) + "\n").encode())
        action = "new"
        if st is not None:
            arch = archive_for()
            arch.keep(target, student, assignment)
            if _lstat(ts_path) is not None:
                arch.keep(ts_path, student, assignment)
            action = "replaced"
        os.replace(tmp, target)
        if tmp_ts is not None:
            os.replace(tmp_ts, ts_path)
        elif st is not None and _lstat(ts_path) is not None:
            ts_path.unlink()  # kept in the archive; it dated the old notebook
    finally:
        for t in (tmp, tmp_ts):
            if t is not None:
                t.unlink(missing_ok=True)
    msg = None
    if action == "replaced":
        msg = "the previous notebook is kept in " + str(archive_for().folder.relative_to(course) / "replaced")
    return action, msg


# --------------------------------------------------------------------------- the import


def _lock(course: Path):
    """The grader's own lock (`intake.lock_course`): no import while grading."""
    try:
        return lock_course(course)
    except CourseLocked as busy:
        raise LMSImportError(f"an autograde is running on {course} (pid {busy.args[0]}); import after it finishes") from None
    except OSError as e:
        raise LMSImportError(f"cannot write to the course folder {course}: {e.strerror}") from None


def _clean_name(filename: str) -> str:
    """toy-1.ipynb, "toy (2).ipynb" -> toy.ipynb (copies made by the LMS or a browser)."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        return filename
    m = _COPY_SUFFIX.match(stem)
    return (m.group("stem") if m and m.group("stem") else stem) + "." + ext


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
    if zst.st_size > MAX_ZIP_BYTES:
        raise LMSImportError(f"{zp} is too large ({zst.st_size >> 20} MiB; limit {MAX_ZIP_BYTES >> 20} MiB)")
    if roster is not None:
        ros = load_roster(roster, report)
    else:
        ros = _gradebook_roster(course)
        if not ros.students:
            report.add("note", "roster", "no --roster and no students in the gradebook: Canvas and Moodle "
                       "names cannot be mapped (zip_collect and submitted/ names are used as student ids)")
    try:
        fh = open(zp, "rb")
    except OSError as e:
        raise LMSImportError(f"cannot read {zp}: {e.strerror}") from None
    lock = None
    with fh:
        n = _count_entries(fh)
        if n is not None and n > MAX_ENTRIES:
            raise LMSImportError(f"{zp} has {n} entries (limit {MAX_ENTRIES}); nothing was imported")
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except Exception as e:  # hostile bytes: BadZipFile, struct/Unicode errors, NotImplementedError ...
            raise LMSImportError(f"{zp} is not a readable zip file ({type(e).__name__}: {str(e)[:120]})") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise LMSImportError(f"{zp} has {len(infos)} entries (limit {MAX_ENTRIES}); nothing was imported")
            zip_sha = hashlib.sha256()
            fh.seek(0)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                zip_sha.update(chunk)
            fmt = lms
            if lms == "auto":
                fmt = decide_lms([i.filename for i in _entries(infos)], rx, ros)
                report.lms = f"auto: {_TITLES[fmt]}" if fmt else "auto: no known naming"
            lock = _lock(course)
            try:
                _import(fh, zst.st_size, infos, course, assignment, ros, fmt, rx, report, zip_sha.hexdigest())
                if save_roster and roster is not None and ros.students:
                    _save_roster(course, ros, report)
            finally:
                try:
                    lock.close()
                except OSError:
                    pass
    _write_report(report)
    echo(report.text())
    return report


def _entries(infos) -> list[zipfile.ZipInfo]:
    """The entries that name submissions: not rejected (`_entry_problem`), not folders, not
    the files a Mac or Windows leaves (``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``)."""
    out = []
    for info in infos:
        name = info.filename
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if (_entry_problem(info) or info.is_dir() or name.startswith("__MACOSX/") or base.startswith("._")
                or base in (".DS_Store", "Thumbs.db")):
            continue
        out.append(info)
    return out


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
        why = _entry_problem(info)
        if why:
            report.add("rejected", info.filename, why)
    for info in _entries(infos):
        name = info.filename
        fields = parse_name(name, fmt, rx) if fmt else None
        if fields is None:
            report.add("unmapped", name, "the name follows no known LMS naming (Canvas, Moodle, zip_collect or "
                       "submitted/)" if fmt is None else f"not a {_TITLES[fmt]} name (the zip's naming)")
            continue
        if fmt == "submitted" and fields["assignment"] != assignment.id:
            report.add("ignored", name, f"belongs to assignment {_show(fields['assignment'])!r}, not {assignment.id!r}")
            continue
        sid, why = _resolve(fmt, fields, ros)
        if sid is None:
            report.add("unmapped", name, why or "unknown student")
            continue
        for other, alt in readings(name, "auto", rx).items():
            if other != fmt and _resolve(other, alt, ros)[0] not in (None, sid):
                report.add("note", name, f"also reads as a {_who(other, alt, ros)}; attributed by the "
                           f"{_TITLES[fmt]} part of the name only", sid)
        if not fields["file"].lower().endswith(".ipynb"):
            others.setdefault(sid, []).append(name)
            continue
        ts = None
        if fields.get("timestamp"):
            ts = _parse_ts(fields["timestamp"])
            if ts is None:
                report.add("note", name, f"timestamp {_show(fields['timestamp'])!r} not understood; the zip entry's date is used", sid)
        ts = ts or _entry_time(info)
        order = (ts or _dt.datetime.min, fields.get("sub_id", -1), info.header_offset)
        by_student.setdefault(sid, []).append(
            Candidate(info, sid, fields["file"], ts, order, fields.get("late", False)))
    for sid, names in sorted(others.items()):
        for name in names:
            if sid in by_student:
                report.add("ignored", name, "not a notebook", sid)
            else:
                report.add("missing", name, f"not a notebook, and no notebook came with it: {_show(sid)} is not graded", sid)
    budget = _Budget()
    want = assignment.notebook
    for sid in sorted(by_student):
        cands = by_student[sid]
        named = [c for c in cands if _clean_name(c.filename) == want or c.filename == want]
        if not named:
            distinct = sorted({c.filename for c in cands})
            if len(distinct) > 1:
                for c in cands:
                    report.add("missing", c.info.filename, f"several notebooks, none named {want!r} "
                               f"({', '.join(map(_show, distinct))}); rename one and re-import", sid)
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
                           f"({_show(chosen.info.filename)})", sid)
                continue
            data, why = _read_capped(fh, c.info, zip_size, budget)
            if data is None:
                report.add("rejected", c.info.filename, why, sid)
                continue
            chosen = c
            try:
                action, msg = _install(course, sid, assignment.id, want, data, c.timestamp, archive_for)
            except OSError as e:
                report.add("failed", c.info.filename, f"{type(e).__name__}: {e}", sid)
                continue
            report.imported.append((sid, action, _show(c.info.filename)))
            if action == "kept":
                report.add("kept", c.info.filename, msg, sid)
            elif msg:
                report.add("note", c.info.filename, msg, sid)
            if _clean_name(c.filename) != want:
                report.add("renamed", c.info.filename, f"{_show(c.filename)!r} -> {want!r}", sid)
            if c.late:
                report.add("note", c.info.filename, "Canvas marks this submission LATE", sid)


def _save_roster(course: Path, ros: Roster, report: ImportReport) -> None:
    """Names, e-mail and LMS user id of the roster's students into the gradebook (for
    ``grades-canvas.csv`` / ``grades-moodle.csv``); empty roster cells change nothing."""
    try:
        from .gradebook import open_gradebook

        gb = open_gradebook(course)
    except Exception as e:  # the import itself is done; grading reports its own errors
        report.add("note", "gradebook", f"the roster was not saved to the gradebook ({type(e).__name__}: {str(e)[:120]})")
        return
    try:
        for sid, row in ros.students.items():
            kw = {k: row[k] for k in ("first_name", "last_name", "email", "lms_user_id") if row.get(k)}
            if not kw.get("first_name") and not kw.get("last_name") and row.get("name"):
                first, _, last = row["name"].strip().rpartition(" ")
                kw.update({"first_name": first or last, "last_name": last if first else ""})
            gb.update_or_create_student(sid, **kw)
    except Exception as e:
        report.add("note", "gradebook", f"the roster was not saved to the gradebook ({type(e).__name__}: {str(e)[:120]})")
    finally:
        gb.close()


def _write_report(report: ImportReport) -> None:
    if report.folder is None:
        return
    try:
        for name, text in (("report.txt", report.text() + "\n"),
                           ("report.json", json.dumps(report.as_json(), indent=1, ensure_ascii=True) + "\n")):
            os.replace(_write_tmp(report.folder, name, text.encode()), report.folder / name)
    except OSError as e:
        report.add("note", "report", f"the report could not be written ({e.strerror})")
