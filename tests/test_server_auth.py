"""The course server's logins and accounts (fast, no hub): the roster authenticator refuses a
wrong password and locks a name (and an address) out after repeated failures, even for the
right password; ``add-student`` never hands over an account it did not make; a chosen
password is read from standard input, never from the command line. The login form of a
real hub is tried with a wrong password in tests/test_course_server.py."""

from __future__ import annotations

import asyncio
import io
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import auth, cli, roster, settings  # noqa: E402


def _login(a, name, password, ip="10.0.0.1"):
    handler = SimpleNamespace(request=SimpleNamespace(remote_ip=ip))
    return asyncio.run(a.authenticate(handler, {"username": name, "password": password}))


def test_wrong_password_and_lockout(tmp_path):
    """Wrong or empty passwords and unknown names are refused; after the failures allowed for
    a name (or an address), the right password is refused too until the window passes."""
    path = tmp_path / "roster.json"
    roster.save(path, {"ada": {"role": "student", "hash": roster.hash_password("right-password", iterations=1000)},
                       "bob": {"role": "instructor", "hash": roster.hash_password("bobs-password", iterations=1000)}})
    assert path.stat().st_mode & 0o777 == 0o600  # password hashes: readable by root only, whatever the umask
    a = auth.RosterAuthenticator(roster_file=str(path), max_failures=3, max_failures_per_address=3, lockout_seconds=600)
    assert _login(a, "ada", "wrong") is None
    assert _login(a, "ada", "") is None
    assert _login(a, "nobody-here", "right-password", ip="10.0.0.9") is None
    assert _login(a, "ada", "right-password") == {"name": "ada", "admin": False}
    assert _login(a, "ada", "wrong", ip="10.0.0.2") is None  # third failure for the name ada
    assert _login(a, "ada", "right-password", ip="10.0.0.3") is None  # locked, right password or not
    assert _login(a, "bob", "bobs-password", ip="10.0.0.3") == {"name": "bob", "admin": True}
    assert _login(a, "bob", "wrong", ip="10.0.0.1") is None  # third failure from 10.0.0.1
    assert _login(a, "bob", "bobs-password", ip="10.0.0.1") is None  # that address is locked out
    assert _login(a, "bob", "bobs-password", ip="10.0.0.4") == {"name": "bob", "admin": True}
    a._failures.clear()  # the window has passed
    assert _login(a, "ada", "right-password") == {"name": "ada", "admin": False}


@pytest.fixture
def state(tmp_path, monkeypatch):
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.fail("add-student makes unix accounts: run as root with useradd")
    tag = secrets.token_hex(3)
    group, made = f"gma{tag}-inst", []
    monkeypatch.setenv("GMM_SERVER_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("GMM_INSTRUCTORS_GROUP", group)
    try:
        yield settings.load(), tag, made
    finally:
        for n in made:
            subprocess.run(["userdel", "--remove", "--force", n], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_add_student_never_hands_over_an_existing_account(state, capsys):
    st, tag, made = state
    victim = f"gma{tag}v"
    subprocess.run(["useradd", "--no-create-home", victim], check=True)
    made.append(victim)
    assert cli.main(["add-student", victim]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1, err
    assert victim not in roster.load(st.roster)
    # an account the server made can get a new password
    mine = f"gma{tag}m"
    made.append(mine)
    assert cli.main(["add-student", mine]) == 0
    assert cli.main(["password", mine]) == 0
    assert pwd.getpwnam(mine).pw_shell.endswith("nologin")


def test_password_from_stdin_not_argv(state, capsys, monkeypatch):
    st, tag, made = state
    name = f"gma{tag}p"
    made.append(name)
    with pytest.raises(SystemExit):
        cli.main(["add-student", name, "--password", "in-argv-for-all-to-see"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-chosen-password\n"))
    assert cli.main(["add-student", name, "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert "a-chosen-password" not in out and out.strip() == name
    assert roster.check_password("a-chosen-password", roster.load(st.roster)[name]["hash"])
