"""Submissions from an LMS (issue 12, part 2): gmmcourse.grading.lms and ``autograde --zip``.

The zip is hostile input: traversal names, symbolic links, zip bombs (declared and hidden),
oversized entries, unmappable names, duplicates. One end-to-end test grades a zip with the
CLI on the toy assignment (benchmarks/hostile/toy.py, needs bubblewrap); the rest test the import
directly (fast).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks" / "hostile"))

import toy  # noqa: E402

from gmmcourse.grading import lms  # noqa: E402
from gmmcourse.grading.lms import LMSImportError, import_zip, load_roster  # noqa: E402

TOY = toy.ASSIGNMENTS["toy"]
SOLUTION = nbformat.writes(toy.notebook()).encode()
HALF = nbformat.writes(toy.notebook(toy.MEAN_SOL, toy.COUNTS_BLANK)).encode()
BLANK = nbformat.writes(toy.notebook(toy.MEAN_BLANK, toy.COUNTS_BLANK)).encode()

ROSTER = (
    "student_id,lms_user_id,first_name,last_name,email\n"
    "ada,101,Ada,Lovelace,ada@example.org\n"
    "grace,102,Grace,Hopper,grace@example.org\n"
    "alan,103,Alan,Turing,alan@example.org\n"
    "emmy,104,Emmy,Noether,emmy@example.org\n"
    "marie,105,Marie,Curie,marie@example.org\n"
)
T0 = (2026, 11, 20, 14, 3, 0)
T1 = (2026, 11, 21, 9, 30, 0)


def _course(tmp_path: Path) -> Path:
    course = tmp_path / "grading"
    course.mkdir()
    return course


def _roster(tmp_path: Path, text: str = ROSTER) -> Path:
    p = tmp_path / "roster.csv"
    p.write_text(text, encoding="utf-8")
    return p


def _entry(name: str, data: bytes = b"", *, when=T0, mode: int | None = None, method=zipfile.ZIP_DEFLATED):
    zi = zipfile.ZipInfo(name, date_time=when)
    zi.compress_type = method
    if mode is not None:
        zi.create_system = 3
        zi.external_attr = mode << 16
    return zi, data


def make_zip(path: Path, entries) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for zi, data in entries:
            zf.writestr(zi, data)
    return path


def hide_size(path: Path, name: str, declared: int) -> None:
    """Make `name`'s headers understate its size (and match the CRC of the first bytes):
    the zip bomb that a reader trusting the header would not see."""
    with zipfile.ZipFile(path) as zf:
        zi = zf.getinfo(name)
        with zf.open(zi) as f:
            crc = __import__("zlib").crc32(f.read(declared)) & 0xFFFFFFFF
        infos = zf.infolist()
        cd_offset = zf.start_dir
    raw = bytearray(path.read_bytes())
    off = zi.header_offset  # local header: crc at 14, uncompressed size at 22
    struct.pack_into("<I", raw, off + 14, crc)
    struct.pack_into("<I", raw, off + 22, declared)
    pos = cd_offset  # central directory: crc at 16, uncompressed size at 24
    for info in infos:
        n, m, k = struct.unpack_from("<HHH", raw, pos + 28)
        if info.filename == name:
            struct.pack_into("<I", raw, pos + 16, crc)
            struct.pack_into("<I", raw, pos + 24, declared)
        pos += 46 + n + m + k
    path.write_bytes(bytes(raw))


def zeros_entry(zf: zipfile.ZipFile, name: str, size: int) -> None:
    zi = zipfile.ZipInfo(name, date_time=T0)
    zi.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(zi, "w", force_zip64=True) as f:
        block = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            f.write(block)


def tree(root: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


def submitted(course: Path) -> dict[str, bytes]:
    root = course / "submitted"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def kinds(rep) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in rep.problems:
        out.setdefault(p.kind, []).append(p.entry)
    return out


def run(zp, course, **kw):
    kw.setdefault("echo", lambda s: None)
    kw.setdefault("save_roster", False)  # writing the gradebook is tested once (it is slow)
    return import_zip(zp, course, TOY, **kw)


# --------------------------------------------------------------------------- the issue's test


def _issue_zip(tmp_path: Path) -> Path:
    zp = make_zip(tmp_path / "submissions.zip", [
        _entry("lovelaceada_101_9001_toy.ipynb", SOLUTION),
        _entry("hoppergrace_102_9002_toy-1.ipynb", HALF),          # Canvas's name for a resubmitted file
        _entry("turingalan_LATE_103_9003_toy.ipynb", BLANK),
        _entry("noetheremmy_777_9004_toy.ipynb", SOLUTION),        # unmappable: user 777 is not in the roster
        _entry("../../../pwned.ipynb", SOLUTION),                  # traversal
    ])
    with zipfile.ZipFile(zp, "a") as zf:  # the bomb: 64 MiB of zeros whose headers claim 5,000 bytes
        zeros_entry(zf, "curiemarie_105_9005_toy.ipynb", 64 << 20)
    hide_size(zp, "curiemarie_105_9005_toy.ipynb", 5000)
    return zp


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")
def test_issue_lms_zip_graded_bad_ones_reported_nothing_outside(tmp_path):
    """5 students, one unmappable name, one traversal entry, one zip bomb: the good ones
    are graded, the bad ones reported, nothing written outside the course folder."""
    toy.write_course(tmp_path, [])  # solutions/toy/toy.ipynb, no submissions
    course = tmp_path / "grading"
    course.mkdir(exist_ok=True)
    zp = _issue_zip(tmp_path)
    roster = _roster(tmp_path)
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("untouched")
    outside_before = {k: v for k, v in tree(tmp_path).items() if not k.startswith("grading")}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "benchmarks" / "hostile"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--zip", str(zp), "--roster", str(roster), "--registry", "toy:ASSIGNMENTS", "--serial",
           "--no-progress", "--no-warm"]  # the default limits: no offender here, honest cells take milliseconds
    # a hang guard only: this test took 21 s at load 11 on its own and up to 176 s in make test
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 1, r.stderr  # some files were not imported
    assert "Traceback" not in r.stderr
    # the good ones are graded
    import sqlite3

    con = sqlite3.connect(course / "gradebook.db")
    got = dict(con.execute("select student, score from gmm_autograde where status = 'ok'").fetchall())
    con.close()
    assert got == pytest.approx({"ada": 5.0, "grace": 2.0, "alan": 0.0})
    # the bad ones are reported, by name, with the reason
    err = r.stderr
    assert "noetheremmy_777_9004_toy.ipynb" in err and "777 is not in the roster" in err
    assert "../../../pwned.ipynb" in err and "zip-slip" in err
    assert "curiemarie_105_9005_toy.ipynb" in err and "zip bomb" in err
    report = json.loads(next((course / "lms-imports").glob("*/report.json")).read_text())
    assert {p["kind"] for p in report["problems"]} >= {"unmapped", "rejected"}
    assert sorted(i["student"] for i in report["imported"]) == ["ada", "alan", "grace"]
    # only the mapped, good notebooks are in submitted/ (no bomb bytes, nothing for emmy/marie)
    subs = submitted(course)
    assert set(subs) == {"ada/toy/toy.ipynb", "ada/toy/timestamp.txt", "grace/toy/toy.ipynb",
                         "grace/toy/timestamp.txt", "alan/toy/toy.ipynb", "alan/toy/timestamp.txt"}
    assert subs["grace/toy/toy.ipynb"] == HALF
    assert subs["ada/toy/timestamp.txt"].startswith(b"2026-11-20 14:03:00")
    # nothing written outside the course folder
    assert sentinel.read_text() == "untouched"
    outside_after = {k: v for k, v in tree(tmp_path).items() if not k.startswith("grading")}
    assert outside_after == outside_before
    assert not list(tmp_path.parent.rglob("pwned.ipynb"))
    # grades for the LMS: Canvas and Moodle import layouts
    rows = list(csv.reader(io.StringIO((course / "grades-canvas.csv").read_text())))
    assert rows[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] and rows[0][5] == "toy"
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) == 6.0  # 5 auto + 1 manual
    by_id = {r[2]: r for r in rows[2:]}
    assert by_id["ada"][:2] == ["Lovelace, Ada", "101"] and float(by_id["ada"][5]) == 5.0
    assert float(by_id["grace"][5]) == 2.0 and by_id["emmy"][5] == "" and by_id["marie"][5] == ""
    moodle = list(csv.reader(io.StringIO((course / "grades-moodle.csv").read_text())))
    assert moodle[0][:5] == ["Student ID", "LMS user ID", "Email address", "First name", "Last name"]
    assert ["alan", "103", "alan@example.org", "Alan", "Turing", "0"] in moodle
    # the roster was saved into the gradebook: a later zip needs no --roster
    zp2 = make_zip(tmp_path / "late.zip", [_entry("curiemarie_105_9107_toy.ipynb", HALF)])
    rep = run(zp2, course)
    assert rep.imported == [("marie", "new", "curiemarie_105_9107_toy.ipynb")]


# --------------------------------------------------------------------------- naming conventions


def test_canvas_names_roster_and_timestamps(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "c.zip", [
        _entry("lovelaceada_101_9001_toy.ipynb", SOLUTION, when=T1),
        _entry("hoppergrace_LATE_102_9002_toy (1).ipynb", HALF),
        _entry("turingalan_103_9003_notes.pdf", b"%PDF-1.4"),
        _entry("turingalan_103_9004_my_work.ipynb", BLANK),
    ])
    rep = run(zp, course, roster=_roster(tmp_path), lms="canvas")
    assert sorted(rep.imported) == [("ada", "new", "lovelaceada_101_9001_toy.ipynb"),
                                    ("alan", "new", "turingalan_103_9004_my_work.ipynb"),
                                    ("grace", "new", "hoppergrace_LATE_102_9002_toy (1).ipynb")]
    subs = submitted(course)
    assert subs["ada/toy/toy.ipynb"] == SOLUTION and subs["alan/toy/toy.ipynb"] == BLANK
    assert subs["ada/toy/timestamp.txt"] == b"2026-11-21 09:30:00.000000 UTC\n"
    k = kinds(rep)
    assert k["renamed"] == ["turingalan_103_9004_my_work.ipynb"]  # its only notebook, under the expected name
    assert k["ignored"] == ["turingalan_103_9003_notes.pdf"]
    assert any("LATE" in p.message for p in rep.problems if p.student == "grace")
    assert rep.exit_code == 0
    text = (rep.folder / "report.txt").read_text()
    assert "notes.pdf" in text and "Ignored (not notebooks" in text


def test_moodle_names_folders_flat_and_blind(tmp_path):
    course = _course(tmp_path)
    roster = _roster(tmp_path, "student_id,name\nada,Ada Lovelace\ngrace,Grace Hopper\nalan,Alan Turing\n"
                               "twin1,Sam Smith\ntwin2,Sam Smith\n")
    zp = make_zip(tmp_path / "m.zip", [
        _entry("Ada Lovelace_5512_assignsubmission_file/toy.ipynb", SOLUTION),          # Moodle 4.x
        _entry("Grace Hopper_5513_assignsubmission_file_/sub/toy.ipynb", HALF),         # Moodle 3.x folders
        _entry("alan turing_5514_assignsubmission_file_toy.ipynb", BLANK),              # flat, other case
        _entry("Alan Turing_5514_assignsubmission_onlinetext_/onlinetext.html", b"<p>hi</p>"),
        _entry("Participant_5515_assignsubmission_file/toy.ipynb", SOLUTION),           # blind marking
        _entry("Sam Smith_5516_assignsubmission_file/toy.ipynb", SOLUTION),             # ambiguous name
    ])
    rep = run(zp, course, roster=roster)
    assert sorted(s for s, _, _ in rep.imported) == ["ada", "alan", "grace"]
    assert submitted(course)["grace/toy/toy.ipynb"] == HALF
    msgs = {p.entry: p.message for p in rep.problems if p.kind == "unmapped"}
    assert "blind marking" in msgs["Participant_5515_assignsubmission_file/toy.ipynb"]
    assert "several students" in msgs["Sam Smith_5516_assignsubmission_file/toy.ipynb"]
    assert rep.exit_code == 1


def test_zipcollect_names_regexp_and_newest_attempt(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "z.zip", [
        _entry("ps1_ada_attempt_2026-11-20-10-00-00_toy.ipynb", BLANK),
        _entry("ps1_ada_attempt_2026-11-21-10-00-00_toy.ipynb", SOLUTION),   # newest wins
        _entry("ps1_ada_attempt_2026-11-19-10-00-00_toy.ipynb", HALF),
        _entry("ps1_bad,id_attempt_2026-11-19-10-00-00_toy.ipynb", HALF),    # not a valid id: \w+ fails
        _entry("random.ipynb", HALF),
    ])
    rep = run(zp, course, lms="zipcollect")  # nbgrader's documented named_regexp, no roster
    assert [(s, a) for s, a, _ in rep.imported] == [("ada", "new")]
    subs = submitted(course)
    assert subs["ada/toy/toy.ipynb"] == SOLUTION
    assert subs["ada/toy/timestamp.txt"].startswith(b"2026-11-21 10:00:00")
    k = kinds(rep)
    assert sorted(k["duplicate"]) == ["ps1_ada_attempt_2026-11-19-10-00-00_toy.ipynb",
                                      "ps1_ada_attempt_2026-11-20-10-00-00_toy.ipynb"]
    assert "random.ipynb" in k["unmapped"]
    # a custom regexp, and a bad one is a usage error
    zp2 = make_zip(tmp_path / "z2.zip", [_entry("grace--toy.ipynb", HALF)])
    rep2 = run(zp2, course, lms="zipcollect", regexp=r"(?P<student_id>\w+)--(?P<file_id>.+)")
    assert [s for s, _, _ in rep2.imported] == ["grace"]
    with pytest.raises(LMSImportError, match="named groups"):
        run(zp2, course, lms="zipcollect", regexp=r"(?P<who>\w+)")
    with pytest.raises(LMSImportError, match="not a valid regular expression"):
        run(zp2, course, lms="zipcollect", regexp=r"(")


def test_submitted_tree_zip(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "s.zip", [
        _entry("submitted/ada/toy/toy.ipynb", SOLUTION),
        _entry("grace/toy/toy.ipynb", HALF),
        _entry("grace/other/other.ipynb", HALF),
    ])
    rep = run(zp, course)
    assert sorted(s for s, _, _ in rep.imported) == ["ada", "grace"]
    assert "grace/other/other.ipynb" in kinds(rep)["ignored"]


# --------------------------------------------------------------------------- hostile zips


def test_traversal_absolute_and_symlink_entries_are_rejected(tmp_path):
    course = _course(tmp_path)
    (tmp_path / "victim.txt").write_text("secret")
    zp = make_zip(tmp_path / "h.zip", [
        _entry("../../escape.ipynb", SOLUTION),
        _entry("/etc/cron.d/x.ipynb", SOLUTION),
        _entry("C:\\Windows\\x.ipynb", SOLUTION),
        _entry("lovelaceada_101_9001_..\\..\\x.ipynb", SOLUTION),
        _entry("lovelaceada_101_9002_toy.ipynb", str(tmp_path / "victim.txt").encode(), mode=stat.S_IFLNK | 0o777),
        _entry("hoppergrace_102_9003_toy.ipynb", b"", mode=stat.S_IFIFO | 0o644),
        _entry("turingalan_103_9004_toy.ipynb", SOLUTION, mode=stat.S_IFREG | 0o644),
    ])
    roster = _roster(tmp_path)
    before = tree(tmp_path)
    rep = run(zp, course, roster=roster)
    msgs = {p.entry: p.message for p in rep.problems if p.kind == "rejected"}
    assert "zip-slip" in msgs["../../escape.ipynb"]
    assert "absolute" in msgs["/etc/cron.d/x.ipynb"] and "absolute" in msgs["C:\\Windows\\x.ipynb"]
    assert "zip-slip" in msgs["lovelaceada_101_9001_..\\..\\x.ipynb"]
    assert msgs["lovelaceada_101_9002_toy.ipynb"] == "symbolic link"
    assert "not a regular file" in msgs["hoppergrace_102_9003_toy.ipynb"]
    assert [s for s, _, _ in rep.imported] == ["alan"]
    assert not (course / "submitted" / "ada").exists()
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("grading")} == \
           {k: v for k, v in before.items() if not k.startswith("grading")}
    assert rep.exit_code == 1


def test_oversized_bombs_ratio_and_total_caps(tmp_path, monkeypatch):
    course = _course(tmp_path)
    zp = tmp_path / "b.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zeros_entry(zf, "lovelaceada_101_9001_toy.ipynb", 24 << 20)   # declared over the 20 MiB cap
        zeros_entry(zf, "hoppergrace_102_9002_toy.ipynb", 8 << 20)    # honest header, ratio ~1000:1
        zeros_entry(zf, "turingalan_103_9003_toy.ipynb", 32 << 20)    # header will claim 4 KiB
        zf.writestr(_entry("noetheremmy_104_9004_toy.ipynb")[0], SOLUTION)
    hide_size(zp, "turingalan_103_9003_toy.ipynb", 4096)
    rep = run(zp, course, roster=_roster(tmp_path))
    msgs = {p.entry: p.message for p in rep.problems if p.kind == "rejected"}
    assert "too large" in msgs["lovelaceada_101_9001_toy.ipynb"]
    assert "ratio" in msgs["hoppergrace_102_9002_toy.ipynb"]
    assert "declared size" in msgs["turingalan_103_9003_toy.ipynb"] and "zip bomb" in msgs["turingalan_103_9003_toy.ipynb"]
    assert [s for s, _, _ in rep.imported] == ["emmy"]
    assert set(submitted(course)) == {"emmy/toy/toy.ipynb", "emmy/toy/timestamp.txt"}
    # the total uncompressed budget, and the entry count (read before the directory is parsed)
    monkeypatch.setattr(lms.zipread, "MAX_TOTAL_BYTES", len(SOLUTION) + 10)
    zp2 = make_zip(tmp_path / "t.zip", [_entry("lovelaceada_101_1_toy.ipynb", SOLUTION),
                                        _entry("hoppergrace_102_2_toy.ipynb", HALF)])
    rep2 = run(zp2, course, roster=_roster(tmp_path))
    assert [s for s, _, _ in rep2.imported] == ["ada"]
    assert "in all" in {p.entry: p.message for p in rep2.problems}["hoppergrace_102_2_toy.ipynb"]
    monkeypatch.setattr(lms.zipread, "MAX_ENTRIES", 1)
    with pytest.raises(LMSImportError, match="2 entries"):
        run(zp2, course, roster=_roster(tmp_path))


def test_corrupt_encrypted_and_not_a_zip(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "c.zip", [_entry("lovelaceada_101_9001_toy.ipynb", SOLUTION),
                                       _entry("hoppergrace_102_9002_toy.ipynb", HALF)])
    raw = bytearray(zp.read_bytes())
    with zipfile.ZipFile(zp) as zf:
        ada = zf.getinfo("lovelaceada_101_9001_toy.ipynb")
        cd = zf.start_dir
    start = ada.header_offset + 30 + len(ada.filename)
    raw[start + 20:start + 40] = b"\xff" * 20                 # damage ada's compressed data
    pos = cd + 46 + len(ada.filename)                         # grace's central directory record
    assert raw[pos:pos + 4] == b"PK\x01\x02"
    struct.pack_into("<H", raw, pos + 8, 1)                    # flag bit 0: encrypted
    zp.write_bytes(bytes(raw))
    rep = run(zp, course, roster=_roster(tmp_path))
    msgs = {p.entry: p.message for p in rep.problems if p.kind == "rejected"}
    assert "corrupt" in msgs["lovelaceada_101_9001_toy.ipynb"]
    assert msgs["hoppergrace_102_9002_toy.ipynb"] == "encrypted entry"
    assert rep.imported == [] and not (course / "submitted" / "ada").exists()
    bad = tmp_path / "notazip.zip"
    bad.write_bytes(b"PK this is not a zip")
    with pytest.raises(LMSImportError, match="not a readable zip"):
        run(bad, course)
    with pytest.raises(LMSImportError, match="does not exist"):
        run(tmp_path / "missing.zip", course)


# --------------------------------------------------------------------------- re-imports


def test_duplicates_idempotent_reimport_and_replacement_kept(tmp_path):
    course = _course(tmp_path)
    roster = _roster(tmp_path)
    zp = make_zip(tmp_path / "a.zip", [
        _entry("lovelaceada_101_9001_toy.ipynb", HALF, when=T0),
        _entry("lovelaceada_101_9002_toy-1.ipynb", SOLUTION, when=T1),   # newer copy of the same file
        _entry("hoppergrace_102_9003_toy.ipynb", HALF, when=T0),
    ])
    rep = run(zp, course, roster=roster)
    assert submitted(course)["ada/toy/toy.ipynb"] == SOLUTION
    assert kinds(rep)["duplicate"] == ["lovelaceada_101_9001_toy.ipynb"]
    first = tree(course / "submitted")
    # the same zip again: nothing changes
    rep2 = run(zp, course, roster=roster)
    assert {a for _, a, _ in rep2.imported} == {"unchanged"}
    assert tree(course / "submitted") == first
    assert not any((d / "replaced").exists() for d in (course / "lms-imports").iterdir())
    # a resubmission replaces the old notebook; the old one is kept
    zp3 = make_zip(tmp_path / "b.zip", [_entry("hoppergrace_102_9100_toy.ipynb", SOLUTION, when=T1)])
    rep3 = run(zp3, course, roster=roster)
    assert rep3.imported == [("grace", "replaced", "hoppergrace_102_9100_toy.ipynb")]
    assert submitted(course)["grace/toy/toy.ipynb"] == SOLUTION
    kept = rep3.folder / "replaced" / "grace" / "toy"
    assert (kept / "toy.ipynb").read_bytes() == HALF
    assert (kept / "timestamp.txt").read_bytes().startswith(b"2026-11-20 14:03:00")
    assert not list((course / "submitted").rglob("*.tmp"))
    # an older download does not replace a newer submission
    zp4 = make_zip(tmp_path / "c.zip", [_entry("hoppergrace_102_9003_toy.ipynb", HALF, when=T0)])
    rep4 = run(zp4, course, roster=roster)
    assert [a for _, a, _ in rep4.imported] == ["kept"]
    assert submitted(course)["grace/toy/toy.ipynb"] == SOLUTION


def test_symlinked_student_folder_is_not_followed(tmp_path):
    course = _course(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (course / "submitted").mkdir()
    (course / "submitted" / "ada").symlink_to(outside, target_is_directory=True)
    zp = make_zip(tmp_path / "a.zip", [_entry("lovelaceada_101_9001_toy.ipynb", SOLUTION),
                                       _entry("hoppergrace_102_9002_toy.ipynb", HALF)])
    rep = run(zp, course, roster=_roster(tmp_path))
    assert list(outside.iterdir()) == []
    assert "symbolic link" in {p.entry: p.message for p in rep.problems if p.kind == "failed"}["lovelaceada_101_9001_toy.ipynb"]
    assert [s for s, _, _ in rep.imported] == ["grace"] and rep.exit_code == 1
    # the course's own folders as links: the import stops, nothing is written through them
    shutil.rmtree(course / "lms-imports")
    (course / "lms-imports").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LMSImportError, match="cannot write to the course folder"):
        run(zp, course, roster=_roster(tmp_path))
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- rosters


def test_roster_problems_are_reported(tmp_path):
    course = _course(tmp_path)
    roster = _roster(tmp_path, "\ufeffStudent ID;Canvas User ID;Name\n"   # Excel: BOM, semicolons, other headers
                               "ada;101;Ada Lovelace\n"
                               "ada;109;Ada Again\n"                        # duplicate student id
                               "bad,id;110;Bad\n"                           # invalid id (comma)
                               "grace;102;Grace Hopper\n"
                               "alan;102;Alan Turing\n")                    # LMS id given twice
    zp = make_zip(tmp_path / "a.zip", [_entry("lovelaceada_101_1_toy.ipynb", SOLUTION),
                                       _entry("hoppergrace_102_2_toy.ipynb", HALF)])
    rep = run(zp, course, roster=roster)
    roster_msgs = " | ".join(p.message for p in rep.problems if p.kind == "roster")
    assert "appears twice" in roster_msgs and "not valid" in roster_msgs and "several students" in roster_msgs
    assert [s for s, _, _ in rep.imported] == ["ada"]
    assert "several students" in {p.entry: p.message for p in rep.problems}["hoppergrace_102_2_toy.ipynb"]
    for text, match in [("lms_user_id\n1\n", "no student_id column"), ("", "empty")]:
        with pytest.raises(LMSImportError, match=match):
            load_roster(_roster(tmp_path, text))
    (tmp_path / "latin1.csv").write_bytes("student_id,name\nzoe,Zoë\n".encode("latin-1"))
    with pytest.raises(LMSImportError, match="not UTF-8"):
        load_roster(tmp_path / "latin1.csv")
    with pytest.raises(LMSImportError, match="does not exist"):
        run(zp, course, roster=tmp_path / "nope.csv")


def test_no_roster_and_no_gradebook(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "a.zip", [_entry("ps1_ada_attempt_2026-11-21-10-00-00_toy.ipynb", SOLUTION),
                                       _entry("ps1_grace_attempt_2026-11-21-10-00-00_toy.ipynb", HALF)])
    rep = run(zp, course, lms="auto")  # zip_collect ids are ids
    assert sorted((s, a) for s, a, _ in rep.imported) == [("ada", "new"), ("grace", "new")]
    assert rep.lms == "auto: zip_collect"
    zp2 = make_zip(tmp_path / "c.zip", [_entry("lovelaceada_101_1_toy.ipynb", SOLUTION)])
    rep2 = run(zp2, course, lms="auto")  # Canvas names cannot be mapped without a roster
    assert "no roster" in {p.entry: p.message for p in rep2.problems}["lovelaceada_101_1_toy.ipynb"]
    assert rep2.exit_code == 1


# --------------------------------------------------------------------------- spoofed names (issue 22, item 7)
# A student is named only by the LMS's own part of an entry name; the rest is the file name
# the student chose, and it can imitate another LMS's naming.

SPOOF = "hoppergrace_102_9002_x_ada_attempt_2099-12-31-23-59-59_toy.ipynb"  # grace's file, named like ada's


def test_canvas_file_named_like_zipcollect_goes_to_its_canvas_user(tmp_path):
    """The issue's name: in a Canvas zip it is grace's (Canvas user 102), not ada's."""
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "c.zip", [_entry("lovelaceada_101_9001_toy.ipynb", SOLUTION),
                                       _entry("turingalan_103_9003_toy.ipynb", BLANK),
                                       _entry(SPOOF, HALF, when=T1)])
    rep = run(zp, course, roster=_roster(tmp_path))  # --lms auto, the default
    subs = submitted(course)
    assert subs["ada/toy/toy.ipynb"] == SOLUTION and subs["grace/toy/toy.ipynb"] == HALF
    assert sorted((s, a) for s, a, _ in rep.imported) == [("ada", "new"), ("alan", "new"), ("grace", "new")]
    assert rep.lms == "auto: Canvas"
    assert subs["ada/toy/timestamp.txt"].startswith(b"2026-11-20 14:03:00")   # not the name's 2099
    assert subs["grace/toy/timestamp.txt"].startswith(b"2026-11-21 09:30:00")
    notes = {p.entry: p.message for p in rep.problems if p.kind == "note"}
    assert "zip_collect name of 'ada'" in notes[SPOOF] and "Canvas part" in notes[SPOOF]  # reported


def test_a_name_of_two_namings_and_two_students_is_refused(tmp_path):
    """Alone in a zip, the issue's name fits Canvas (grace) and zip_collect (ada): --lms auto
    refuses with one line and writes nothing; --lms canvas says which, and it is grace's."""
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "one.zip", [_entry(SPOOF, HALF)])
    with pytest.raises(LMSImportError, match=r"Canvas name of 'grace' and as a zip_collect name of 'ada'.*--lms"):
        run(zp, course, roster=_roster(tmp_path))
    assert list(course.iterdir()) == []
    rep = run(zp, course, roster=_roster(tmp_path), lms="canvas")
    assert [s for s, _, _ in rep.imported] == ["grace"]


def test_zip_of_mixed_namings_is_refused(tmp_path):
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "a.zip", [_entry("lovelaceada_101_1_toy.ipynb", SOLUTION),
                                       _entry("ps1_grace_attempt_2026-11-21-10-00-00_toy.ipynb", SOLUTION)])
    with pytest.raises(LMSImportError, match=r"different LMS namings .*'lovelaceada_101_1_toy.ipynb' reads as Canvas"
                                             r".*reads as zip_collect.*--lms"):
        run(zp, course, roster=_roster(tmp_path))
    assert list(course.iterdir()) == []
    rep = run(zp, course, roster=_roster(tmp_path), lms="zipcollect")  # told: the other entry is reported
    assert [s for s, _, _ in rep.imported] == ["grace"]
    assert "not a zip_collect name" in {p.entry: p.message for p in rep.problems}["lovelaceada_101_1_toy.ipynb"]


def test_zipcollect_file_named_like_another_attempt_is_not_imported(tmp_path):
    """nbgrader's regexp (``.*_<id>_attempt_...``) takes the last ``_<id>_attempt_`` of a name,
    which may be in the file name ada chose: the name reads as ada's and grace's, and is
    reported, not given to either."""
    course = _course(tmp_path)
    spoof = "ps1_ada_attempt_2026-11-21-10-00-00_x_grace_attempt_2099-12-31-23-59-59_toy.ipynb"
    zp = make_zip(tmp_path / "z.zip", [_entry("ps1_grace_attempt_2026-11-20-10-00-00_toy.ipynb", SOLUTION),
                                       _entry(spoof, BLANK)])
    for lms_ in ("auto", "zipcollect"):
        rep = run(zp, course, lms=lms_)
        assert [s for s, _, _ in rep.imported] == ["grace"] and submitted(course)["grace/toy/toy.ipynb"] == SOLUTION
        why = {p.entry: p.message for p in rep.problems if p.kind == "unmapped"}[spoof]
        assert "several students ('grace', 'ada')" in why and "not imported" in why
        assert rep.exit_code == 1


def test_submitted_tree_and_moodle_files_named_like_other_namings(tmp_path):
    """A zipped submitted/ tree and a Moodle zip whose students' file names imitate
    zip_collect and Canvas names: each file goes to the folder's or the Moodle name's student."""
    course = _course(tmp_path)
    imitation = "x_grace_attempt_2099-12-31-23-59-59_toy.ipynb"
    zp = make_zip(tmp_path / "s.zip", [_entry("submitted/ada/toy/" + imitation, SOLUTION),
                                       _entry("submitted/alan/toy/toy.ipynb", BLANK)])
    rep = run(zp, course)
    assert sorted(s for s, _, _ in rep.imported) == ["ada", "alan"] and not (course / "submitted" / "grace").exists()
    roster = _roster(tmp_path, ROSTER.replace("email\n", "email,name\n").replace(".org\n", ".org,\n")
                     .replace("ada@example.org,", "ada@example.org,Ada Lovelace")
                     .replace("grace@example.org,", "grace@example.org,Grace Hopper"))
    (tmp_path / "m").mkdir()
    course2 = _course(tmp_path / "m")
    zp2 = make_zip(tmp_path / "m.zip", [
        _entry("Ada Lovelace_5512_assignsubmission_file/" + imitation, SOLUTION),
        _entry("Grace Hopper_5513_assignsubmission_file_lovelaceada_101_9_toy.ipynb", HALF),  # flat, like Canvas
    ])
    rep2 = run(zp2, course2, roster=roster)
    assert rep2.lms == "auto: Moodle"
    assert sorted(s for s, _, _ in rep2.imported) == ["ada", "grace"]
    assert submitted(course2)["grace/toy/toy.ipynb"] == HALF and submitted(course2)["ada/toy/toy.ipynb"] == SOLUTION


def test_canvas_file_named_like_moodle_goes_to_its_canvas_user(tmp_path):
    """Moodle's pattern, tried first, read grace's Canvas file as a Moodle name: her work was
    not imported. The zip is a Canvas zip: it is hers."""
    course = _course(tmp_path)
    zp = make_zip(tmp_path / "c.zip", [_entry("lovelaceada_101_9001_toy.ipynb", SOLUTION),
                                       _entry("hoppergrace_102_9002_Ada Lovelace_1_assignsubmission_file_toy.ipynb", HALF)])
    rep = run(zp, course, roster=_roster(tmp_path))
    assert sorted(s for s, _, _ in rep.imported) == ["ada", "grace"] and rep.exit_code == 0
    assert submitted(course)["grace/toy/toy.ipynb"] == HALF


def test_cli_usage_errors_are_fast_one_line(tmp_path):
    course = _course(tmp_path)
    base = [sys.executable, "-m", "gmmcourse.grading", "autograde", "--course", str(course)]
    for extra, msg in [(["--zip", str(tmp_path / "none.zip"), "categorization"], "does not exist"),
                       (["--zip", str(tmp_path / "none.zip")], "exactly one ASSIGNMENT"),
                       (["--zip", str(tmp_path / "none.zip"), "nope"], "unknown assignment 'nope'"),
                       (["--zip", str(make_zip(tmp_path / "one.zip", [_entry(SPOOF, HALF)])), "categorization"],
                        "reads as a Canvas name")]:
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (course / "submitted").exists()


def test_entry_count_is_read_from_the_end_record_before_the_directory(tmp_path):
    """`zipread.count_entries` reads the declared count itself (no private zipfile API): a
    plain zip, one whose comment imitates the end record, a zip64 one (over 65,535 entries),
    and a forged end record declaring 50,000 entries, which is refused by its count before zipfile parses anything."""
    import io
    import struct
    import zipfile

    from gmmcourse.grading.lms import zipread

    def make(n, comment=b""):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for i in range(n):
                zf.writestr(f"f{i}", b"")
            zf.comment = comment
        return buf

    assert zipread.count_entries(make(3)) == 3
    assert zipread.count_entries(make(2, comment=b"PK\x05\x06 a comment that imitates the record")) == 2
    assert zipread.count_entries(make(70_000)) == 70_000  # zip64 end record
    assert zipread.count_entries(io.BytesIO(b"not a zip")) is None

    forged = tmp_path / "forged.zip"
    forged.write_bytes(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 50_000, 50_000, 0, 0, 0))
    with open(forged, "rb") as fh:
        assert zipread.count_entries(fh) == 50_000
    big = tmp_path / "big.zip"
    big.write_bytes(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0, 0, 0))
    with open(big, "rb") as fh, pytest.raises(LMSImportError, match=r"has 65535 entries"):
        zipread.open_zip(fh, big)  # 0xFFFF without a zip64 locator: the count is 65,535
    with open(forged, "rb") as fh, pytest.raises(LMSImportError, match=r"has 50000 entries \(limit 10000\)"):
        zipread.open_zip(fh, forged)
