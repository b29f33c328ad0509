"""Intake: find each submission of an assignment in nbgrader's ``submitted/`` tree and read it
safely. Every problem with one submission (a bad student id, a symbolic link, a wrong name, a
file too large, not a notebook) becomes that submission's invalid `Job` with a reason; the
batch goes on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .files import read_small
from .sandbox import Limits
from .spec import Assignment, GradingError, sanitize

__all__ = ["Job", "student_id", "placeholder_id", "discover"]

log = logging.getLogger("gmmcourse.grading")


@dataclass
class Job:
    student: str
    assignment: str
    path: Path
    sha256: str
    nb_text: str | None = None
    reason: str | None = None
    timestamp: str | None = None


_ID_EXTRA = set("._-@+")


def student_id(name: str) -> tuple[str | None, str | None]:
    """(normalised id, None) for a valid student folder name, else (None, reason).

    Valid: NFKC-normalised (two spellings of one name, fullwidth ``ａｄａ`` and ``ada``, are one
    student), 1-64 characters, letters and digits of any script plus ``. _ - @ +``, not
    starting with ``.`` or ``-``, and not a look-alike of another id: letters of one script
    only (Cyrillic ``а`` in a Latin name could pose as another student), and not an id of
    another script whose every letter reads as a Latin one (Unicode's confusables, via
    `confusable_homoglyphs`). Anything else (control characters, commas, quotes, slashes,
    bytes that are not UTF-8) could forge CSV rows or break the gradebook.
    """
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in name):  # os.fsdecode of non-UTF-8 bytes
        return None, "the student folder name is not UTF-8 text"
    norm = unicodedata.normalize("NFKC", name)
    if not 1 <= len(norm) <= 64:
        return None, "the student folder name must have 1 to 64 characters"
    if norm[0] in ".-" or not all(ch.isalnum() or ch in _ID_EXTRA for ch in norm):
        return None, "the student folder name may contain only letters, digits and . _ - @ +"
    why = _look_alike(norm)
    if why:
        return None, why
    return norm, None


def _look_alike(norm: str) -> str | None:
    try:
        from confusable_homoglyphs import categories, confusables
    except ImportError:  # a venv not yet re-locked with it: refuse mixed scripts by the characters' names
        categories = confusables = None
    if categories is None:
        scripts = {unicodedata.name(ch, "?").split()[0] for ch in norm if ch.isalpha()}
    else:
        scripts = categories.unique_aliases(norm) - {"COMMON"}
    if len(scripts) > 1:
        return (f"the student folder name mixes scripts ({' and '.join(sorted(s.title() for s in scripts))}): "
                "a look-alike of another student's id; rename the folder to the student's real id")
    if scripts and scripts != {"LATIN"} and confusables is not None:
        letters = [ch for ch in norm if ch.isalpha()]
        found = confusables.is_confusable(norm, greedy=True, preferred_aliases=["latin"]) or []
        latin = {f["character"] for f in found if any(h["c"].isascii() and h["c"].isalpha() for h in f["homoglyphs"])}
        if letters and all(ch in latin for ch in letters):
            return ("the student folder name is written in another script but reads as a Latin id "
                    "(a look-alike of another student's id); rename the folder to the student's real id")
    return None


def placeholder_id(name: str) -> str:
    """A safe gradebook id for a folder whose name is not a valid student id."""
    raw = os.fsencode(name)
    return "invalid-id-" + hashlib.sha256(raw).hexdigest()[:12]


def discover(course: Path, a: Assignment, fp: str, students: Iterable[str] | None, limits: Limits,
             known: dict[str, str] | None = None) -> list[Job]:
    """Every submission of `a`; each problem with one becomes that submission's invalid Job.
    ``known``: student -> content hash already graded; such a notebook is hashed, not parsed
    (the plan skips it: its ``nb_text`` stays empty)."""
    sub_root = course / "submitted"
    jobs = []
    if students:
        dirs = []
        for s in students:
            if not s or "/" in s or s.startswith("."):
                raise GradingError(f"invalid student id {s!r}")
            d = sub_root / s
            if not d.is_dir():
                raise GradingError(f"no submissions for student {s!r}: {d} does not exist")
            dirs.append(d)
    else:
        dirs = sorted((p for p in sub_root.iterdir() if not p.name.startswith(".")), key=lambda p: os.fsencode(p.name))
    spellings: dict[str, list[str]] = {}
    for sdir in dirs:
        sid, _ = student_id(sdir.name)
        if sid is not None and (sdir / a.id).is_dir():
            spellings.setdefault(sid, []).append(sdir.name)
    reported: set[str] = set()
    for sdir in dirs:
        sid, bad_id = student_id(sdir.name)
        if sid is not None and len(spellings.get(sid, ())) > 1:
            if sid in reported:
                continue
            reported.add(sid)
            names = " and ".join(ascii(n) for n in spellings[sid])
            jobs.append(Job(sid, a.id, sdir / a.id / a.notebook,
                            hashlib.sha256((fp + "|dup|" + names).encode()).hexdigest(),
                            reason=f"two submission folders for the same student id {sid!r} ({names}); "
                                   "the instructor must keep one"))
            continue
        try:
            st = sdir.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and sdir.name.endswith(".ipynb"):
            log.warning("%s: a notebook directly under submitted/ is ignored: expected "
                        "submitted/<student>/<assignment>/<notebook>.ipynb", ascii(sdir.name))
            continue
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            continue
        adir = sdir / a.id
        if not adir.is_dir() and not adir.is_symlink():
            continue
        student = sid if bad_id is None else placeholder_id(sdir.name)
        path = adir / a.notebook
        if bad_id is not None:
            h = hashlib.sha256((fp + "|badid|" + bad_id).encode()).hexdigest()
            jobs.append(Job(student, a.id, path, h, reason=f"{bad_id} (folder {ascii(sdir.name)})"))
            continue
        if sdir.is_symlink() or adir.is_symlink() or path.is_symlink():
            h = hashlib.sha256((fp + "|symlink|" + path.relative_to(course).as_posix()).encode()).hexdigest()
            jobs.append(Job(student, a.id, path, h, reason="the submission contains a symbolic link; submit the notebook file itself"))
            continue
        ts = None
        raw_ts = read_small(adir / "timestamp.txt", 64)
        if raw_ts is not None:
            ts = sanitize(raw_ts.decode("utf-8", "replace").strip(), 64) or None
        try:
            nst = path.lstat()
        except FileNotFoundError:
            nst = None
        except OSError as e:
            nst = None
            log.debug("stat %s: %s", path, e)
        if nst is None:
            found = sorted(p.name for p in adir.glob("*.ipynb"))
            h = hashlib.sha256((fp + "|missing|" + "|".join(found)).encode()).hexdigest()
            if found:
                reason = f"wrong notebook name: expected {a.notebook!r}, found {', '.join(map(repr, found))}. Rename it and resubmit."
            else:
                reason = f"no notebook: expected {a.notebook!r} in the submission"
            jobs.append(Job(student, a.id, path, h, reason=reason, timestamp=ts))
            continue
        if not stat.S_ISREG(nst.st_mode):
            h = hashlib.sha256((fp + "|notfile|" + str(nst.st_mode)).encode()).hexdigest()
            jobs.append(Job(student, a.id, path, h, timestamp=ts,
                            reason=f"{a.notebook!r} is not a regular file (a folder, a pipe or a device); submit the notebook file"))
            continue
        if nst.st_size > limits.submission_bytes:  # before reading anything (a sparse 30 GiB file)
            h = hashlib.sha256((fp + "|large|" + str(nst.st_size) + "|" + str(nst.st_mtime_ns)).encode()).hexdigest()
            jobs.append(Job(student, a.id, path, h, timestamp=ts, reason=(
                f"the notebook is too large ({nst.st_size >> 20} MiB; limit {limits.submission_bytes >> 20} MiB)")))
            continue
        raw = read_small(path, limits.submission_bytes + 1)
        if raw is None:
            h = hashlib.sha256((fp + "|unreadable|" + str(nst.st_mtime_ns)).encode()).hexdigest()
            jobs.append(Job(student, a.id, path, h, timestamp=ts, reason="the notebook file could not be read"))
            continue
        h = hashlib.sha256(fp.encode() + b"|" + raw).hexdigest()
        job = Job(student, a.id, path, h, timestamp=ts)
        if known is not None and known.get(student) == h:
            jobs.append(job)
            continue
        if len(raw) > limits.submission_bytes:
            job.reason = f"the notebook is too large (limit {limits.submission_bytes >> 20} MiB)"
        else:
            try:
                text = raw.decode("utf-8")
                json.loads(text)
            except UnicodeDecodeError:
                job.reason = "the notebook is not UTF-8 text"
            except (json.JSONDecodeError, RecursionError) as e:
                where = f" (line {e.lineno}, column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
                job.reason = f"the notebook is not valid JSON{where}; was it saved correctly?"
            else:
                import nbformat

                try:
                    nb = nbformat.reads(text, as_version=4)
                    if not isinstance(nb.get("cells"), list):
                        raise ValueError("no cells")
                    for c in nb.cells:
                        if c.get("cell_type") not in ("code", "markdown", "raw") or not isinstance(c.get("source"), str):
                            raise ValueError("bad cell")
                    job.nb_text = nbformat.writes(nb)
                except Exception:
                    job.reason = "the file is JSON but not a valid Jupyter notebook"
        jobs.append(job)
    return jobs
