"""``server/course collect`` and ``backup`` against hostile submission folders (fast, no hub):
real unix accounts made for the test, files owned by them, the command run as root.

The same attacks from a real student server are in tests/test_course_server.py
(``test_hostile_student``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import cli, settings  # noqa: E402
from gmm_server import collect as collecting  # noqa: E402

A = "categorization"


def _need_root():
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.fail("collect runs as root and these tests make unix accounts: run as root on Linux with useradd")


@pytest.fixture
def course(tmp_path, monkeypatch):
    _need_root()
    tag = secrets.token_hex(3)
    names = {"a": f"gmc{tag}a", "b": f"gmc{tag}b"}
    group = f"gmc{tag}-inst"
    made = []
    try:
        for n in names.values():
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", n], check=True)
            made.append(n)
        monkeypatch.setenv("GMM_SERVER_ROOT", str(tmp_path / "state"))
        monkeypatch.setenv("GMM_INSTRUCTORS_GROUP", group)
        st = settings.load()
        cli.init(st)
        from gmm_server import roster

        roster.save(st.roster, {n: {"role": "student", "hash": "x"} for n in names.values()})
        yield st, names
    finally:
        for n in made:
            subprocess.run(["userdel", "--force", n], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def _submission(st, student: str, time_text: str = "2026-01-01 10:00:00.000000 UTC", suffix: str = "r1",
                notebook: bytes = b'{"cells": []}') -> Path:
    """A submission folder as nbgrader's submit makes it, owned by the student."""
    pw = pwd.getpwnam(student)
    d = st.exchange / st.course_id / "inbound" / f"{student}+{A}+{time_text}+{suffix}"
    d.mkdir()
    (d / f"{A}.ipynb").write_bytes(notebook)
    (d / "timestamp.txt").write_text(time_text)
    (d / "submission_secret.txt").write_text(secrets.token_hex(8))
    for p in (d, *d.iterdir()):
        os.lchown(p, pw.pw_uid, pw.pw_gid)
    return d


def _collect(st) -> tuple[int, str, str]:
    out, err = [], []
    with contextlib.redirect_stdout(_W(out)), contextlib.redirect_stderr(_W(err)):
        rc = cli.main(["collect", A])
    return rc, "".join(out), "".join(err)


class _W:
    def __init__(self, buf):
        self.buf = buf

    def write(self, s):
        self.buf.append(s)

    def flush(self):
        pass


def test_collect_never_follows_links(course, monkeypatch):
    """A student's links (to another student's notebook, the hub's secrets, /dev/zero), a
    hard link to a root file, a FIFO and an oversized file are not copied; the student's own
    notebook is, and the rest of the class too."""
    st, names = course
    a, b = names["a"], names["b"]
    _submission(st, a, notebook=b'{"A": "correct"}')
    secret = st.hub_dir / "jupyterhub_cookie_secret"
    secret.write_text("COOKIE-SECRET")
    os.chmod(secret, 0o600)
    d = _submission(st, b, notebook=b'{"B": "own"}')
    (d / f"{A}.ipynb").unlink()
    inbound = st.exchange / st.course_id / "inbound"
    (other,) = [p for p in inbound.iterdir() if p.name.startswith(a)]
    os.symlink(other / f"{A}.ipynb", d / f"{A}.ipynb")  # A's notebook as B's
    os.symlink(secret, d / "secret")
    os.symlink("/dev/zero", d / "zero")
    os.symlink(st.hub_dir, d / "hubdir")
    os.mkfifo(d / "fifo")
    os.link(secret, d / "hardlink")  # root's file under B's folder (protected_hardlinks stops students)
    (d / "real.ipynb").write_bytes(b'{"B": "own"}')
    (d / "big.bin").write_bytes(b"x" * 4096)
    for p in d.iterdir():
        if p.name != "hardlink":
            os.lchown(p, pwd.getpwnam(b).pw_uid, -1)
    monkeypatch.setattr(collecting, "MAX_SUBMISSION_BYTES", 1024)
    rc, out, err = _collect(st)
    assert rc == 0, err
    got_a = st.course / "submitted" / a / A
    assert (got_a / f"{A}.ipynb").read_bytes() == b'{"A": "correct"}'
    # B's submission holds more than the cap: skipped as a whole, nothing of it copied
    assert f"{b}: " in err and "larger than" in err, err
    assert not (st.course / "submitted" / b).exists()
    # under the cap: the links, the FIFO and root's hard link are skipped, B's own file copied
    (d / "big.bin").unlink()
    rc, out, err = _collect(st)
    assert rc == 0, err
    got_b = st.course / "submitted" / b / A
    assert sorted(p.name for p in got_b.iterdir()) == ["real.ipynb", "submission_secret.txt", "timestamp.txt"], err
    for name in (f"{A}.ipynb", "secret", "zero", "hubdir", "fifo", "hardlink"):
        assert f"/{name}: skipped" in err, (name, err)
    assert not any(b"COOKIE-SECRET" in p.read_bytes() for p in got_b.rglob("*") if p.is_file())


def test_collect_skips_bad_folders_and_collects_the_rest(course):
    """A bad folder name, a link as the folder, a folder owned by another student: each a
    reported skip of that student; the others are collected, exit 0, no traceback."""
    st, names = course
    a, b = names["a"], names["b"]
    inbound = st.exchange / st.course_id / "inbound"
    _submission(st, b, time_text="not-a-time", suffix="x")
    for bad in (f"{b}+{A}+garbage", f"{b}+{A}+1+2+3"):
        (inbound / bad).mkdir()
        os.chown(inbound / bad, pwd.getpwnam(b).pw_uid, -1)
    os.symlink(st.hub_dir, inbound / f"{b}+{A}+2026-01-01 10:00:00.000000 UTC+link")
    forged = _submission(st, b, suffix="forged")
    forged.rename(inbound / forged.name.replace(b, a, 1))  # B's folder in A's name
    _submission(st, a, notebook=b'{"A": "real"}')
    rc, out, err = _collect(st)
    assert rc == 0 and "Traceback" not in err, err
    assert (st.course / "submitted" / a / A / f"{A}.ipynb").read_bytes() == b'{"A": "real"}'
    assert f"belongs to {b}, not to {a}" in err, err
    assert "not a submission name" in err and "not a folder" in err, err
    assert (st.course / "submitted" / b / A / f"{A}.ipynb").exists()  # the odd time in its name is not used


def test_collect_records_the_trusted_time(course):
    """A submission claiming 2030 (name and timestamp.txt) is recorded at the time it was made
    (its ctime, never later than now); a later real submission replaces it, a re-collect keeps it."""
    st, names = course
    a = names["a"]
    t0 = time.time()
    _submission(st, a, time_text="2030-01-01 00:00:00.000000 UTC")
    rc, out, err = _collect(st)
    assert rc == 0, err
    ts = (st.course / "submitted" / a / A / "timestamp.txt").read_text()
    got = dt.datetime.strptime(ts, collecting.TIME_FORMAT).replace(tzinfo=dt.timezone.utc).timestamp()
    assert t0 - 2 <= got <= time.time() + 1, ts
    assert "1 new" in out
    rc, out, _ = _collect(st)
    assert "0 new, 1 unchanged" in out


def test_backup_is_root_only(course, tmp_path):
    """The gradebook backup: 0600 files in a 0700 root folder (default <root>/backups); a
    folder others can enter is refused."""
    st, _ = course
    import sqlite3

    con = sqlite3.connect(st.course / "gradebook.db")
    con.execute("create table t (x)")
    con.commit()
    con.close()
    (st.course / "grades.csv").write_text("student_id,score\n")
    assert cli.main(["backup"]) == 0
    folder = st.root / "backups"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 0
    files = list(folder.iterdir())
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    assert cli.main(["backup", str(shared)]) == 1
    assert not list(shared.iterdir())
