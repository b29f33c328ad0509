"""What an entry's name says: the namings of Canvas, Moodle, nbgrader's ``zip_collect`` and
``submitted/``; which student a name belongs to; and, for ``--lms auto``, the one naming of
a whole zip (`decide_lms`). A student is named only by the LMS's own part of a name: the
rest is a file name the student chose, and can imitate another naming."""

from __future__ import annotations

import datetime as _dt
import re

from ..intake import student_id
from .report import LMSImportError, show
from .roster import Roster

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

NAMINGS = ("moodle", "canvas", "submitted", "zipcollect")  # a tie between namings goes to the first
TITLES = {"moodle": "Moodle", "canvas": "Canvas", "submitted": "submitted/", "zipcollect": "zip_collect"}


def parse_ts(text: str) -> _dt.datetime | None:
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
    """What `name` says when read as an entry of the LMS naming `fmt` (one of `NAMINGS`),
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
    for fmt in NAMINGS if lms == "auto" else (lms,):
        fields = parse_name(name, fmt, regexp)
        if fields is not None:
            out[fmt] = fields
    return out


def who(fmt: str, fields: dict, roster: Roster) -> str:
    sid, _ = resolve(fmt, fields, roster)
    return f"{TITLES[fmt]} name of {show(sid)!r}" if sid else f"{TITLES[fmt]} name of no known student"


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
    common = [fmt for fmt in NAMINGS if all(fmt in r for r in fits.values())]
    if not common:
        groups: dict[tuple, str] = {}
        for n, r in fits.items():
            groups.setdefault(tuple(r), n)
        shown = "; ".join(f"{show(n)!r} reads as {' or '.join(TITLES[f] for f in g)}"
                          for g, n in list(groups.items())[:3])
        raise LMSImportError(f"the zip's entries follow different LMS namings ({shown}); nothing was imported: "
                             "pass --lms canvas, moodle, zipcollect or submitted")
    for n, r in fits.items():
        outcomes = {fmt: resolve(fmt, r[fmt], roster)[0] for fmt in common}
        if len(set(outcomes.values())) > 1:
            shown = " and as a ".join(who(fmt, r[fmt], roster) for fmt in common)
            raise LMSImportError(f"{show(n)!r} reads as a {shown}: the zip's LMS cannot be told from its names; "
                                 "nothing was imported: pass --lms canvas, moodle, zipcollect or submitted")
    return common[0]


def resolve(fmt: str, fields: dict, roster: Roster) -> tuple[str | None, str | None]:
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
                      ", ".join(repr(show(i)) for i in fields["ids"]) + "), and a part of it is the file name a "
                      "student chose: not imported; check it, then import it with a --regexp that reads only the "
                      "LMS's own part")
    raw = fields["id"]
    if roster.students:
        sid, why = roster.lookup_id(raw)
        if sid is not None or roster.source != "gradebook":
            return sid, why  # an explicit roster is the class list
    sid, bad = student_id(raw)
    return (sid, None) if sid else (None, f"{show(raw)!r} is not a valid student id ({bad})")


def clean_name(filename: str) -> str:
    """toy-1.ipynb, "toy (2).ipynb" -> toy.ipynb (copies made by the LMS or a browser)."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        return filename
    m = _COPY_SUFFIX.match(stem)
    return (m.group("stem") if m and m.group("stem") else stem) + "." + ext
