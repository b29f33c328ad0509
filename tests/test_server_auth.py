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

from gmm_server import auth, cli, netns, roster, settings  # noqa: E402
from tornado.httputil import HTTPHeaders  # noqa: E402


def _request(peer="127.0.0.1", headers=()):
    """What the hub's login handler gets: the connection's peer and the headers, as tornado
    parses them (a repeated header joined by commas); ``remote_ip`` is what tornado's
    xheaders made of them, as JupyterHub runs it."""
    h = HTTPHeaders()
    for k, v in headers:
        h.add(k, v)
    believed = h.get("X-Real-Ip", h.get("X-Forwarded-For", peer).split(",")[-1].strip())
    return SimpleNamespace(request=SimpleNamespace(connection=SimpleNamespace(context=SimpleNamespace(address=(peer, 40000))),
                                                   headers=h, remote_ip=believed))


def _login(a, name, password, ip="10.0.0.1", handler=None):
    """A login through the course's proxy from ``ip``: the proxy appended it to X-Forwarded-For."""
    handler = handler or _request(headers=[("X-Forwarded-For", ip)])
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


def test_a_guesser_cannot_choose_its_address(tmp_path):
    """The per-address count uses the address the proxy saw: a guesser who writes a new
    X-Real-Ip or X-Forwarded-For for every try is still counted as one address, and locked
    out; a login sent from a user's server straight to the hub (through the relay, from
    netns.RELAYED_FROM) is refused, right password or not; with a trusted reverse proxy in
    front (``forwarded_hops=1``) the address is the one that proxy saw."""
    path = tmp_path / "roster.json"
    users = {f"u{i}": {"role": "student", "hash": roster.hash_password(f"pw{i}", iterations=1000)} for i in range(8)}
    roster.save(path, users)
    a = auth.RosterAuthenticator(roster_file=str(path), max_failures=5, max_failures_per_address=4, lockout_seconds=600)

    def spoofed(i, real="10.9.9.9", hops_before=()):
        # what the guesser wrote, then what each proxy appended (the course's proxy last)
        return _request(headers=[("X-Real-Ip", f"192.0.2.{i}"), ("X-Forwarded-For", f"198.51.100.{i}"),
                                 ("X-Forwarded-For", ", ".join([*hops_before, real]))])

    for i in range(4):  # one wrong password for each of four names, each try claiming a new address
        h = spoofed(i)
        assert h.request.remote_ip == f"192.0.2.{i}"  # what tornado alone would have believed
        assert _login(a, f"u{i}", "wrong", handler=h) is None
    assert _login(a, "u5", "pw5", handler=spoofed(99)) is None  # the address 10.9.9.9 is locked out
    assert _login(a, "u5", "pw5", ip="10.1.1.1") == {"name": "u5", "admin": False}  # another address is not
    relayed = _request(peer=netns.RELAYED_FROM, headers=[("X-Forwarded-For", "10.1.1.1")])
    assert _login(a, "u6", "pw6", handler=relayed) is None  # from a user's server: refused, right password or not
    assert "ip:127.0.0.2" not in a._failures and not a._failures["name:u6"]  # and counted for nobody

    behind_nginx = auth.RosterAuthenticator(roster_file=str(path), max_failures_per_address=2, lockout_seconds=600,
                                            forwarded_hops=1)
    for i in range(2):  # nginx appended the client's address, the course's proxy appended nginx's
        assert _login(behind_nginx, "u7", "wrong", handler=spoofed(i, real="127.0.0.1", hops_before=["10.8.8.8"])) is None
    assert _login(behind_nginx, "u7", "pw7", handler=spoofed(5, real="127.0.0.1", hops_before=["10.8.8.8"])) is None
    assert _login(behind_nginx, "u7", "pw7", handler=spoofed(5, real="127.0.0.1", hops_before=["10.7.7.7"])) == \
        {"name": "u7", "admin": False}


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
