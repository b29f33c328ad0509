"""Who is who: the instructor's roster CSV (or the gradebook's students) mapping nbgrader
student ids to LMS user ids and full names; saving a roster's names into the gradebook."""

from __future__ import annotations

import csv
import io
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..intake import student_id
from .report import ImportReport, LMSImportError, show

MAX_ROSTER_BYTES = 16 << 20


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
            return None, f"the name {show(name)!r} belongs to several students in the {self.source}"
        sid = self.by_name.get(key)
        return (sid, None) if sid else (None, f"the name {show(name)!r} is not in the {self.source}")

    def lookup_id(self, raw: str) -> tuple[str | None, str | None]:
        """An id from a file name that is either an nbgrader student id or an LMS user id."""
        sid, bad = student_id(raw)
        if sid is not None and sid in self.students:
            return sid, None
        if raw in self.by_lms:
            return self.lookup_lms(raw)
        return None, f"student {show(raw)!r} is not in the {self.source}"


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
                    report.add("roster", where, f"student id {show(raw)!r} is not valid ({bad}); row skipped")
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


def gradebook_roster(course: Path) -> Roster:
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


def save_roster(course: Path, ros: Roster, report: ImportReport) -> None:
    """Names, e-mail and LMS user id of the roster's students into the gradebook (for
    ``grades-canvas.csv`` / ``grades-moodle.csv``); empty roster cells change nothing."""
    try:
        from ..gradebook import open_gradebook

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
