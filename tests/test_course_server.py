"""The course server (server/, docs/course-server.md) with real processes on loopback:
JupyterHub + configurable-http-proxy started by ``server/course start``, unix accounts made
for the test, each user's Jupyter server in its sandbox, nbgrader's exchange, the project's
sandboxed autograder.

* ``test_sandbox_view`` (fast, no hub): the sandbox alone, as ``nobody``.
* ``test_nbgrader_in_kernel_grading_is_refused`` (fast): Formgrader's autograde and
  generate-feedback buttons (nbgrader's in-kernel grading) are refused by the generated config.
* ``test_student_isolation`` (slow): code run in student B's own kernel (through the hub, the
  proxy and B's server) cannot read A's home or submission, list the exchange's inbound or
  feedback folders, or read solutions/, the course root, the gradebook or the hub's files;
  B's token does not open A's server; a submission B plants under A's name is not collected.
* ``test_assignment_cycle`` (slow): release, two students fetch/edit/submit through the
  REST API and, for B, JupyterLab's Assignments panel in headless Chromium (one correct, one
  wrong), collect, autograde (real ``categorization``), scores
  from the gradebook and grades.csv, a manual grade in Formgrader, feedback returned and
  fetched in the Assignments tab, each student only their own, without hidden checks.

Everything (hub, proxy, sandboxes, kernels, accounts, group) is removed at the end, also on
failure. Needs root, bubblewrap, setpriv and node_modules/ (``make test`` installs them).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
COURSE_CMD = REPO / "server" / "course"
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
COURSE_ID = "gmm-course"
ASSIGNMENT = "categorization"
# per-user caps of the test's servers (server/gmm_server/limits.py): honest work stays far
# below them, the hostile student's offenders far above
CAPS = {"GMM_USER_MEMORY_MIB": 1024, "GMM_USER_DISK_MIB": 256, "GMM_USER_TMP_MIB": 64, "GMM_USER_SHM_MIB": 32,
        "GMM_USER_PIDS": 256}

import requests  # noqa: E402 -- dev extra; missing is a collection error, never a skip
import websocket  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _needs():
    """A missing tool fails the tests with one line (never a quiet skip)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.fail("the course server's tests run as root on Linux (the server creates users and mounts disks)")
    missing = [t for t in ("bwrap", "setpriv", "useradd", "mkfs.ext4", "mount") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: make test installs bubblewrap; setpriv, useradd, mkfs.ext4 and "
                    f"mount come with util-linux, passwd and e2fsprogs")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- a user of the hub


class HubUser:
    """Logs in through the hub's login form, then uses a personal API token (hub REST API,
    the user's server through the proxy: contents, kernels, nbgrader's Assignments tab)."""

    def __init__(self, url: str, name: str, password: str):
        self.url, self.name = url, name
        s = requests.Session()
        s.get(f"{url}/hub/login", timeout=60).raise_for_status()
        r = s.post(f"{url}/hub/login?next=", data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")},
                   allow_redirects=False, timeout=60)
        if r.status_code != 302:
            raise PermissionError(f"login of {name} refused ({r.status_code})")
        r = s.post(f"{url}/hub/api/users/{name}/tokens", headers={"X-XSRFToken": s.cookies.get("_xsrf")},
                   json={"note": "test_course_server", "expires_in": 3600}, timeout=60)
        r.raise_for_status()
        self.token = r.json()["token"]

    def api(self, method: str, path: str, **kw):
        return requests.request(method, f"{self.url}{path}", headers={"Authorization": f"token {self.token}"},
                                timeout=kw.pop("timeout", 180), **kw)

    def user(self, method: str, path: str, **kw):
        return self.api(method, f"/user/{self.name}{path}", **kw)

    def request_server(self):
        r = self.api("POST", f"/hub/api/users/{self.name}/server")
        assert r.status_code in (201, 202, 400), (r.status_code, r.text)

    def wait_server(self, timeout: float = 240):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            srv = self.api("GET", f"/hub/api/users/{self.name}").json().get("servers", {}).get("", {})
            if srv.get("ready"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the server of {self.name} did not start in {timeout:.0f} s")

    def assignments(self, action: str | None = None):
        if action is None:
            r = self.user("GET", "/assignments", params={"course_id": COURSE_ID})
        else:
            r = self.user("POST", f"/assignments/{action}", data={"course_id": COURSE_ID, "assignment_id": ASSIGNMENT})
        r.raise_for_status()
        out = r.json()
        assert out["success"], out
        return out["value"]

    def run_python(self, code: str, timeout: float = 180) -> str:
        """Run code in a new kernel of this user's server (over the kernel websocket); stdout."""
        r = self.user("POST", "/api/kernels", json={"name": "python3"})
        r.raise_for_status()
        kid = r.json()["id"]
        try:
            ws_url = self.url.replace("http://", "ws://") + f"/user/{self.name}/api/kernels/{kid}/channels"
            ws = websocket.create_connection(ws_url, header=[f"Authorization: token {self.token}"], timeout=timeout)
            try:
                msg_id = uuid.uuid4().hex
                ws.send(json.dumps({
                    "header": {"msg_id": msg_id, "username": self.name, "session": uuid.uuid4().hex,
                               "msg_type": "execute_request", "version": "5.3"},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True},
                }))
                out, t0 = [], time.monotonic()
                while time.monotonic() - t0 < timeout:
                    m = json.loads(ws.recv())
                    if m.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    t = m["header"]["msg_type"]
                    if t == "stream":
                        out.append(m["content"]["text"])
                    elif t == "error":
                        raise AssertionError("kernel error: " + "\n".join(m["content"]["traceback"]))
                    elif t == "status" and m["content"]["execution_state"] == "idle":
                        return "".join(out)
                raise TimeoutError("kernel did not finish")
            finally:
                ws.close()
        finally:
            self.user("DELETE", f"/api/kernels/{kid}")


class LabInBrowser:
    """A student in headless Chromium: the hub's login form, JupyterLab, Nbgrader > Assignment List."""

    def __init__(self, page, url: str, name: str, password: str):
        self.page, self.name = page, name
        page.goto(f"{url}/hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", password)
        page.click("#login_submit")
        page.wait_for_url(f"**/user/{name}/lab**", timeout=240_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
        page.locator(".lm-Menu-itemLabel", has_text="Assignment List").click()
        page.locator("#released_assignments_list, #fetched_assignments_list").first.wait_for(timeout=60_000)

    def click(self, listing: str, button: str):
        item = self.page.locator(f"#{listing}_assignments_list .list_item", has_text=ASSIGNMENT)
        item.locator("button", has_text=button).first.click(timeout=60_000)

    def screenshot(self, what: str):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"course-server-{what}.png"))


def _wait(cond, what: str, timeout: float = 90):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.5)
    raise TimeoutError(what)


# --------------------------------------------------------------------------- the server


@dataclass
class Course:
    root: Path
    env: dict
    url: str
    names: dict
    passwords: dict
    users: dict = field(default_factory=dict)

    @property
    def course(self) -> Path:
        return self.root / "course"

    @property
    def inbound(self) -> Path:  # the shared one (what a student's server shows is their own)
        return self.root / "exchange" / COURSE_ID / "inbound"

    def inbound_of(self, who: str) -> Path:
        """Where student ``who``'s Submit writes, on the host: their disk image (userfs.py)."""
        return self.root / "users" / self.names[who] / "inbound"

    def cli(self, *args, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(COURSE_CMD), *map(str, args)], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"server/course {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def login(self, who: str) -> HubUser:
        if who not in self.users:
            self.users[who] = HubUser(self.url, self.names[who], self.passwords[who])
        return self.users[who]

    def servers(self, *who: str) -> list[HubUser]:
        users = [self.login(w) for w in who]
        for u in users:
            u.request_server()
        for u in users:
            u.wait_server()
        return users


def _uids(names) -> set[int]:
    out = set()
    for n in names:
        try:
            out.add(pwd.getpwnam(n).pw_uid)
        except KeyError:
            pass
    return out


def _our_pids(root: Path, uids: set[int]) -> list[int]:
    """Processes this test started: run by its users, or naming its server root (bwrap)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if d.stat().st_uid in uids or str(root).encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def _is(pid: int, names) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(n in cmd for n in names)


def _user_cgroups(name: str) -> list[Path]:
    """The cgroups the spawner made for ``name`` (limits.UserCGroup) and left (a killed hub)."""
    proc = Path("/proc/self/cgroup").read_text()
    out = []
    for line in proc.splitlines():
        _, ctrls, path = line.split(":", 2)
        top = Path("/sys/fs/cgroup") / (ctrls if ctrls and "=" not in ctrls else "")
        out += [d for d in (top / path.lstrip("/")).glob(f"gmmgrade-*-server-{name}-*") if d.is_dir()]
    return out


def _pidfile(p: Path) -> int | None:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHP.exists():
        pytest.fail("node_modules/ is missing: run `make test` (or `npm ci`) to install configurable-http-proxy")
    tag = secrets.token_hex(3)
    names = {"a": f"gmt{tag}a", "b": f"gmt{tag}b", "i": f"gmt{tag}i"}
    group = f"gmt{tag}-inst"
    for n in names.values():
        with pytest.raises(KeyError):
            pwd.getpwnam(n)  # never touch an account the test did not make
    root = tmp_path_factory.mktemp("course-server") / "state"
    port, hub_port, proxy_port = _free_ports(3)
    env = dict(os.environ, GMM_SERVER_ROOT=str(root), GMM_INSTRUCTORS_GROUP=group, GMM_SERVER_IP="127.0.0.1",
               GMM_SERVER_PORT=str(port), GMM_HUB_API_PORT=str(hub_port), GMM_PROXY_API_PORT=str(proxy_port),
               **{k: str(v) for k, v in CAPS.items()})
    c = Course(root=root, env=env, url=f"http://127.0.0.1:{port}", names=names, passwords={})
    uids: set[int] = set()
    hub_pids: list = []
    try:
        for who, role in (("i", "instructor"), ("a", "student"), ("b", "student")):
            out = c.cli(f"add-{role}", names[who]).stdout.split()
            assert out[0] == names[who]
            c.passwords[who] = out[1]
        uids = _uids(names.values())
        c.cli("release", ASSIGNMENT)
        t0 = time.monotonic()
        c.cli("start", timeout=180)
        hub_pids = [_pidfile(root / "hub" / "jupyterhub.pid"), _pidfile(root / "hub" / "jupyterhub-proxy.pid")]
        t1 = time.monotonic()
        c.servers("a", "b", "i")  # spawned together
        print(f"hub started in {t1 - t0:.1f} s, three servers in {time.monotonic() - t1:.1f} s")
        yield c
    finally:
        uids |= _uids(names.values())
        try:
            c.cli("stop", timeout=90, check=False)
        except Exception as e:  # noqa: BLE001 -- cleanup goes on
            print("stop failed:", e)
        hub_dir = root / "hub"
        for p in hub_pids + [_pidfile(hub_dir / "jupyterhub.pid"), _pidfile(hub_dir / "jupyterhub-proxy.pid")]:
            if p and _is(p, (b"jupyterhub", b"configurable-http-proxy")):  # still ours, not a reused pid
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        for _ in range(3):
            pids = _our_pids(root, uids)
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            if not pids:
                break
            time.sleep(0.5)
        for n in names.values():
            subprocess.run(["umount", "-l", str(root / "users" / n)], capture_output=True)
            for d in _user_cgroups(n):
                with contextlib.suppress(OSError):
                    d.rmdir()
            subprocess.run(["userdel", "--remove", "--force", n], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
        left = _uids(names.values())
        assert not left, f"accounts left behind: {left}"


def _released_answers() -> dict[str, str]:
    """The instructor's solution of each answer cell (markers removed)."""
    sol = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"[ \t]*### (BEGIN|END) SOLUTION\n", "", c.source)
            for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution")}


def _work(user: HubUser, answers: dict[str, str]) -> None:
    """Edit the fetched notebook through the contents API (what the browser saves)."""
    path = f"/api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    nb = user.user("GET", path).json()["content"]
    n = 0
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
            n += 1
    assert n == len(answers)
    user.user("PUT", path, json={"type": "notebook", "format": "json", "content": nb}).raise_for_status()


def _submitted(listing) -> list:
    return [s for a in listing if a.get("status") == "submitted" for s in a["submissions"]]


# --------------------------------------------------------------------------- tests


def test_sandbox_view(tmp_path):
    """The sandbox of a user's server, without the hub (fast): as an unprivileged uid it runs
    the venv's Python (whose install may sit in root's 0700 home) and imports the course
    package, writes its home and /tmp; it sees only an allow-list of the host (nothing of
    solutions/, tests/, .git, the grader, the hub's files, other homes, /var, /sys, other work
    folders), no host socket (its own network namespace), and /tmp and /dev/shm are capped."""
    sys.path.insert(0, str(REPO / "server"))
    from gmm_server import limits, settings, spawner

    st = settings.load({"GMM_SERVER_ROOT": str(tmp_path / "state")})
    for d in (st.exchange, st.config / "student", st.hub_dir):
        d.mkdir(parents=True)
    (st.hub_dir / "roster.json").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    other_work = Path("/work") if Path("/work").is_dir() else REPO.parent
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    hidden = [REPO / "solutions", REPO / "tests", REPO / ".git", REPO / "src" / "gmmcourse" / "grading" / "checks.py",
              st.hub_dir / "roster.json", "/root/.bashrc", "/home", "/var/backups", "/var/log", "/sys/fs/cgroup",
              "/etc/shadow", "/etc/ssh", "/run", "/srv", "/opt", REPO / "README.md", other_work / "notes"]
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen(1)
    caps = limits.Caps(tmp_bytes=8 << 20, shm_bytes=4 << 20)
    probe = (
        "import os, json, socket, gmmcourse\n"
        "def seen(p):\n"
        "    try:\n"
        "        return bool(os.listdir(p)) if os.path.isdir(p) else bool(open(p, 'rb').read(1) or True)\n"
        "    except OSError:\n"
        "        return False\n"
        "def fill(p, n):\n"
        "    try:\n"
        "        with open(p, 'wb') as f:\n"
        "            for _ in range(n):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "def reach(port):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=5).close()\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        f"open({str(home / 'w')!r}, 'w').write('x'); open('/tmp/w', 'w').write('x')\n"
        f"out = {{'uid': os.getuid(), 'seen': {{p: seen(p) for p in {[str(h) for h in hidden]!r}}},\n"
        f"       'host socket': reach({host.getsockname()[1]}), 'net': sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else [],\n"
        "       'tmp 16 MiB': fill('/tmp/big', 16), 'shm 8 MiB': fill('/dev/shm/big', 8), 'passwd': seen('/etc/passwd')}\n"
        "print(json.dumps(out))\n"
    )
    argv = spawner.sandbox_argv(st, "nobody", "student", str(home), caps=caps)
    try:
        r = subprocess.run(argv + [str(REPO / ".venv" / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120)
    finally:
        host.close()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] == nobody.pw_uid and out["passwd"]
    assert not any(out["seen"].values()), out["seen"]
    assert not out["host socket"], "the sandbox reached a socket listening on the host's loopback"
    assert not out["tmp 16 MiB"] and not out["shm 8 MiB"], out
    assert (home / "w").read_text() == "x"


def test_nbgrader_in_kernel_grading_is_refused(tmp_path):
    """The instructor's generated config stops ``nbgrader autograde --force`` (Formgrader's
    button) and ``generate_feedback`` before they touch a file: they would run submissions
    unsandboxed, delete the grader's autograded notebooks and show hidden tests."""
    sys.path.insert(0, str(REPO / "server"))
    from gmm_server import cli, settings

    st = settings.load({"GMM_SERVER_ROOT": str(tmp_path / "state")})
    cli._nbgrader_configs(st)
    sub = st.course / "submitted" / "x" / ASSIGNMENT
    done = st.course / "autograded" / "x" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    sub.mkdir(parents=True)
    done.parent.mkdir(parents=True)
    shutil.copy(REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", sub)
    done.write_text("graded by the sandboxed grader")
    env = dict(os.environ, PYTHONPATH=str(REPO / "server"), JUPYTER_CONFIG_PATH=str(st.config / "instructor"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter"))
    for cmd in ("autograde", "generate_feedback"):
        r = subprocess.run([str(REPO / ".venv" / "bin" / "nbgrader"), cmd, ASSIGNMENT, "--force"], cwd=st.course,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "server/course autograde" in r.stderr, r.stderr[-2000:]
    assert done.read_text() == "graded by the sandboxed grader"
    assert sorted(p.name for p in st.course.iterdir()) == ["autograded", "submitted"]  # no gradebook, no feedback


@pytest.mark.slow
def test_student_isolation(server):
    with pytest.raises(PermissionError):  # the hub's login form refuses a wrong password
        HubUser(server.url, server.names["a"], server.passwords["a"] + "x")
    a, b = server.servers("a", "b")
    na, nb_ = server.names["a"], server.names["b"]
    # the Assignments tab lists the release; A fetches and submits it (unchanged)
    assert any(x["assignment_id"] == ASSIGNMENT and x["status"] == "released" for x in b.assignments())
    a.assignments("fetch")
    a.user("PUT", "/api/contents/private.txt", json={"type": "file", "format": "text", "content": "A's notes"}).raise_for_status()
    assert _submitted(a.assignments("submit"))
    (sub_a,) = glob.glob(str(server.inbound_of("a") / f"{glob.escape(na)}+{ASSIGNMENT}+*"))
    repo = REPO
    targets = {
        "A home": f"/home/{na}",
        "A notes": f"/home/{na}/private.txt",
        "A notebook": f"/home/{na}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        "inbound listing": str(server.inbound),
        "A submission": f"{sub_a}/{ASSIGNMENT}.ipynb",
        "A submission secret": f"{sub_a}/submission_secret.txt",
        "feedback listing": str(server.root / "exchange" / COURSE_ID / "feedback"),
        "solutions": str(repo / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
        "tests": str(repo / "tests" / "test_grading_engine.py"),
        "grader": str(repo / "src" / "gmmcourse" / "grading" / "checks.py"),
        "git": str(repo / ".git" / "HEAD"),
        "course root": str(server.course),
        "gradebook": str(server.course / "gradebook.db"),
        "roster": str(server.root / "hub" / "roster.json"),
        "hub database": str(server.root / "hub" / "jupyterhub.sqlite"),
        "cookie secret": str(server.root / "hub" / "jupyterhub_cookie_secret"),
        "shadow": "/etc/shadow",
    }
    controls = {  # must be readable, or the probe proves nothing
        "own home": f"/home/{nb_}",
        "release": str(server.root / "exchange" / COURSE_ID / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
        "course package": str(repo / "src" / "gmmcourse" / "__init__.py"),
    }
    forged_name = f"{na}+{ASSIGNMENT}+2099-01-01 00:00:00.000000 UTC+forged"
    forged = server.inbound / forged_name  # as B's server shows its inbound
    probe = f"""
import json, os, shutil
def can_read(p):
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            open(p, "rb").read(1)
        return True
    except OSError:
        return False
t, c = {json.dumps(targets)}, {json.dumps(controls)}
res = {{"uid": os.getuid(), "targets": {{k: can_read(v) for k, v in t.items()}}, "controls": {{k: can_read(v) for k, v in c.items()}}}}
try:  # plant a submission in A's name (a later timestamp than A's)
    os.makedirs({str(forged)!r})
    shutil.copy(c["release"], {str(forged / (ASSIGNMENT + '.ipynb'))!r})
    open({str(forged / 'timestamp.txt')!r}, "w").write("2099-01-01 00:00:00.000000 UTC")
    res["forged"] = True
except OSError as e:
    res["forged"] = repr(e)
print(json.dumps(res))
"""
    res = json.loads(b.run_python(probe).strip().splitlines()[-1])
    assert res["uid"] == pwd.getpwnam(nb_).pw_uid != 0
    assert all(res["controls"].values()), res["controls"]
    leaked = [k for k, ok in res["targets"].items() if ok]
    assert not leaked, f"student B could read: {leaked}"
    # the hub and the proxy keep B out of A's server; students have no Formgrader
    assert b.api("GET", f"/user/{na}/api/contents").status_code in (403, 404)
    assert b.api("GET", f"/hub/api/users/{na}").status_code in (403, 404)
    assert b.user("GET", "/formgrader/api/assignments").status_code == 404
    # the planted submission is ignored by collect; A's own is collected
    forged = server.inbound_of("b") / forged_name  # where it is on the host
    assert res["forged"] is True and forged.is_dir()
    server.cli("collect", ASSIGNMENT)
    ts = (server.course / "submitted" / na / ASSIGNMENT / "timestamp.txt").read_text()
    assert not ts.startswith("2099"), "a submission planted in A's name was collected"
    assert pwd.getpwuid(forged.stat().st_uid).pw_name == nb_


@pytest.mark.slow
def test_hostile_student(server):
    """Student B's own kernel, on B's real server, tries what a hostile student would:

    * the host's network: the hub's public port, the proxy's API, a socket of root's on the
      host's loopback, the host's socket table (its own network namespace: none of them); the
      hub's login form straight through the relay, with B's right password and a made-up
      client address (refused: logins come through the proxy);
    * the host's files beyond the allow-list (/var/backups, /sys/fs/cgroup, other work folders);
    * collect as root: a submission of links (A's submission, the hub's cookie secret and
      database, /dev/zero), a time of 2030, folders with bad names: none of it is copied, the
      time recorded is the real one, the class is collected and each problem is reported;
    * the caps: 1.5 GiB of memory, more than the caps of /tmp, /dev/shm and the disk (home and
      submissions), writing the exchange's root, 400 threads: each stopped.

    Also from B's server: a terminal runs a shell as B; the instructor's Formgrader may be
    framed by JupyterLab (same origin)."""
    a, b, ins = server.servers("a", "b", "i")
    na, nb_ = a.name, b.name
    if not list(server.inbound_of("a").glob(f"{na}+{ASSIGNMENT}+*")):
        a.assignments("fetch")
        assert _submitted(a.assignments("submit"))
    (sub_a,) = sorted(server.inbound_of("a").glob(f"{na}+{ASSIGNMENT}+*"))[-1:]
    root_sock = socket.socket()
    root_sock.bind(("127.0.0.1", 0))
    root_sock.listen(1)
    st_port = int(server.url.rsplit(":", 1)[1])
    ports = {"public": st_port, "proxy api": int(server.env["GMM_PROXY_API_PORT"]), "root": root_sock.getsockname()[1]}
    # beyond the allow-list: the host's state, other work folders beside the repository, root's files
    others = [str(p) for p in sorted(REPO.parent.iterdir()) if p != REPO][:4]
    others += [str(p) for p in sorted(Path("/root").iterdir()) if p.name != ".pyenv"][:4]
    hidden = ["/var/backups", "/var/log", "/sys/fs/cgroup", "/etc/shadow", "/srv", *others,
              str(server.root / "hub"), str(server.root / "users")]
    release = server.root / "exchange" / COURSE_ID / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    links = {"a.ipynb": f"{sub_a}/{ASSIGNMENT}.ipynb", "cookie": str(server.root / "hub" / "jupyterhub_cookie_secret"),
             "hubdb": str(server.root / "hub" / "jupyterhub.sqlite"), "zero": "/dev/zero"}
    probe = f"""
import json, os, shutil, socket, subprocess, sys, threading, time
res = {{}}
def reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False
res["reach"] = {{k: reach(v) for k, v in {ports!r}.items()}}
def hub_login(password):
    # the hub's login form, straight through the relay to the hub's API port (no proxy), with
    # the right password and a made-up client address: the hub must refuse it (auth.py)
    import http.cookiejar, urllib.error, urllib.parse, urllib.request
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a):
            return None
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    base = "http://127.0.0.1:{server.env["GMM_HUB_API_PORT"]}/hub/login"
    claim = {{"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": "203.0.113.8"}}  # the same on both (the hub's xsrf token hashes the address)
    op.open(urllib.request.Request(base, headers=claim), timeout=30).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = urllib.parse.urlencode({{"username": "{nb_}", "password": password, "_xsrf": xsrf}}).encode()
    req = urllib.request.Request(base + "?next=", data=body, headers=claim)
    try:
        return op.open(req, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
res["hub login from the server"] = hub_login({server.passwords["b"]!r})
res["tcp table"] = open("/proc/net/tcp").read()
def seen(p):
    try:
        return bool(os.listdir(p)) if os.path.isdir(p) else bool(open(p, "rb").read(1) or True)
    except OSError:
        return False
res["seen"] = {{p: seen(p) for p in {hidden!r}}}
inbound = {str(server.inbound)!r}
def sub(name):
    d = os.path.join(inbound, name)
    os.makedirs(d)
    return d
d = sub("{nb_}+{ASSIGNMENT}+2030-01-01 00:00:00.000000 UTC+links")
shutil.copy({str(release)!r}, os.path.join(d, "{ASSIGNMENT}.ipynb"))
open(os.path.join(d, "timestamp.txt"), "w").write("2030-01-01 00:00:00.000000 UTC")
for k, v in {links!r}.items():
    os.symlink(v, os.path.join(d, k))
sub("{nb_}+{ASSIGNMENT}+garbage")
os.symlink("/", os.path.join(inbound, "{nb_}+{ASSIGNMENT}+2030-01-01 00:00:00.000000 UTC+root"))
def fill(p, mib):
    try:
        with open(p, "wb") as f:
            for _ in range(mib):
                f.write(b"x" * (1 << 20))
                f.flush()
        return True
    except OSError:
        return False
    finally:
        try:
            os.remove(p)
        except OSError:
            pass
res["fill"] = {{"tmp": fill("/tmp/big", {2 * CAPS["GMM_USER_TMP_MIB"]}), "shm": fill("/dev/shm/big", {2 * CAPS["GMM_USER_SHM_MIB"]}),
               "home": fill(os.path.expanduser("~/big"), {2 * CAPS["GMM_USER_DISK_MIB"]}),
               "inbound": fill(os.path.join(d, "big"), {2 * CAPS["GMM_USER_DISK_MIB"]}),
               "exchange root": fill({str(server.root / "exchange" / "big")!r}, 1), "home 1 MiB": fill(os.path.expanduser("~/small"), 1)}}
mem = subprocess.run([sys.executable, "-c", "b = bytearray(1536 << 20); b[::4096] = b'x' * len(b[::4096]); print('alive')"],
                     capture_output=True, text=True)
res["memory 1.5 GiB"] = "alive" in mem.stdout
small = subprocess.run([sys.executable, "-c", "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); print('alive')"],
                       capture_output=True, text=True)
res["memory 64 MiB"] = "alive" in small.stdout
stop, n = threading.Event(), 0
threads = []
try:
    for _ in range(400):
        t = threading.Thread(target=stop.wait)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
res["threads"] = len(threads)
stop.set()
print(json.dumps(res))
"""
    try:
        res = json.loads(b.run_python(probe, timeout=300).strip().splitlines()[-1])
    finally:
        root_sock.close()
    assert not any(res["reach"].values()), res["reach"]
    assert res["hub login from the server"] == 403, res["hub login from the server"]  # a success would be 302
    listening = {int(line.split()[1].split(":")[1], 16) for line in res["tcp table"].splitlines()[1:]}
    assert not listening & set(ports.values()), "the host's sockets are listed in the student's /proc/net/tcp"
    assert not any(res["seen"].values()), res["seen"]
    fill = res["fill"]
    assert fill["home 1 MiB"] and not any(v for k, v in fill.items() if k != "home 1 MiB"), fill
    assert res["memory 64 MiB"] and not res["memory 1.5 GiB"], res
    assert 50 < res["threads"] < 400, res["threads"]
    # collect as root
    t0 = time.time()
    r = server.cli("collect", ASSIGNMENT)
    assert "Traceback" not in r.stderr, r.stderr
    for what in ("a.ipynb: skipped", "cookie: skipped", "hubdb: skipped", "zero: skipped", "not a submission name",
                 "not a folder"):
        assert what in r.stderr, (what, r.stderr)
    got_b = server.course / "submitted" / nb_ / ASSIGNMENT
    assert sorted(p.name for p in got_b.iterdir()) == [f"{ASSIGNMENT}.ipynb", "timestamp.txt"], r.stderr
    ts = (got_b / "timestamp.txt").read_text()
    assert not ts.startswith("2030") and ts < time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0 + 1)), ts
    secret = (server.root / "hub" / "jupyterhub_cookie_secret").read_bytes()
    assert all(secret not in p.read_bytes() for p in (server.course / "submitted").rglob("*") if p.is_file())
    assert (server.course / "submitted" / na / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    # a terminal runs a shell as B (the account's own shell is nologin)
    term = b.user("POST", "/api/terminals").json()["name"]
    ws = websocket.create_connection(server.url.replace("http://", "ws://") + f"/user/{nb_}/terminals/websocket/{term}",
                                     header=[f"Authorization: token {b.token}"], timeout=60)
    try:
        ws.send(json.dumps(["stdin", "id -u > term-uid.txt\r"]))
        got = _wait(lambda: b.user("GET", "/api/contents/term-uid.txt").ok, "the terminal's command", timeout=60)
        assert got
        text = b.user("GET", "/api/contents/term-uid.txt").json()["content"].strip()
        assert text == str(pwd.getpwnam(nb_).pw_uid), text
    finally:
        ws.close()
        b.user("DELETE", f"/api/terminals/{term}")
    # the instructor's Formgrader may be framed by JupyterLab (its own origin)
    csp = ins.user("GET", "/formgrader").headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'self'" in csp, csp


@pytest.mark.slow
def test_assignment_cycle(server):
    t0 = time.monotonic()
    a, b, ins = server.servers("a", "b", "i")
    correct = _released_answers()
    wrong = dict(correct, categorize_solution=correct["categorize_solution"].replace("np.log(weights)[None, :] + ", ""))
    assert wrong != correct
    # A through the REST API; B in a real browser (JupyterLab's Assignments panel) where Chromium is installed
    assert any(x["assignment_id"] == ASSIGNMENT for x in a.assignments())
    a.assignments("fetch")
    _work(a, correct)
    assert _submitted(a.assignments("submit"))
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser part of the cycle needs Chromium (make test installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: the browser part of the cycle needs it (the dev extra of pyproject.toml)")
    stack = contextlib.ExitStack()
    lab = None
    try:
        if True:
            p = stack.enter_context(sync_playwright())
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            stack.callback(browser.close)
            lab = LabInBrowser(browser.new_page(), server.url, b.name, server.passwords["b"])
            lab.click("released", "Fetch")
            _wait(lambda: any(x["status"] == "fetched" for x in b.assignments()), "fetch in the browser")
            _work(b, wrong)  # what the notebook editor saves
            lab.click("fetched", "Submit")
            _wait(lambda: _submitted(b.assignments()), "submit in the browser")
            lab.screenshot("submitted")
        t_submit = time.monotonic() - t0
        _grade_and_return(server, a, b, ins, lab, t0, t_submit)
    finally:
        stack.close()


def _grade_and_return(server, a, b, ins, lab, t0, t_submit):
    na, nb_ = a.name, b.name

    server.cli("collect", ASSIGNMENT)
    t1 = time.monotonic()
    # the default path: a local Dask cluster (mutual TLS on loopback), as an instructor runs it
    r = server.cli("autograde", ASSIGNMENT, "--no-progress", "--no-warm", timeout=600)
    t_grade = time.monotonic() - t1
    from gmmcourse.grading.assignments import ASSIGNMENTS

    points = {p.grade_id: p.points for p in ASSIGNMENTS[ASSIGNMENT].parts}
    auto = sum(points.values())  # 8 today; the written answer (2 points) is graded by hand
    # ignoring the weights loses categorize_basic and Q1 (P(tonkatsu | 425 g) comes from categorize)
    want_b = auto - points["categorize_basic"] - points["bento_425_equal"]
    with open(server.course / "grades.csv") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == ASSIGNMENT}
    assert float(rows[na]["score"]) == auto, (rows, r.stderr)
    assert float(rows[nb_]["score"]) == want_b, (rows, r.stderr)
    assert 0 < want_b < auto < float(rows[na]["max_score"])

    # manual grading in the instructor's Formgrader (writes the gradebook)
    subs = ins.user("GET", f"/formgrader/api/submitted_notebooks/{ASSIGNMENT}/{ASSIGNMENT}").json()
    sub_a = next(s for s in subs if s["student"] == na)
    grades = ins.user("GET", "/formgrader/api/grades", params={"submission_id": sub_a["id"]}).json()
    written = next(g for g in grades if g["name"] == "written_425")
    assert written["needs_manual_grade"]
    ins.user("PUT", f"/formgrader/api/grade/{written['id']}", json={"manual_score": 2}).raise_for_status()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{server.course / 'gradebook.db'}") as gb:
        assert gb.find_submission(ASSIGNMENT, na).score == auto + 2
        assert gb.find_submission(ASSIGNMENT, nb_).score == want_b

    # return feedback; each student fetches it in the Assignments tab
    server.cli("return", ASSIGNMENT)
    seen = {}
    if lab is not None:
        lab.page.locator("#refresh_assignments_list").first.click()
        lab.click("submitted", "Fetch Feedback")
        _wait(lambda: any(s["has_local_feedback"] for s in _submitted(b.assignments())), "feedback in the browser")
        lab.page.locator("#submitted_assignments_list a", has_text="view feedback").first.wait_for(timeout=60_000)
        lab.screenshot("feedback")
    for user, other in ((a, nb_), (b, na)):
        listing = user.assignments("fetch_feedback" if (user is a or lab is None) else None)
        sub = max(_submitted(listing), key=lambda s: s["timestamp"])  # A also submitted in the isolation test
        assert sub["has_exchange_feedback"] and sub["has_local_feedback"], sub
        folder = user.user("GET", f"/api/contents/{ASSIGNMENT}/feedback").json()["content"]
        assert [f["name"] for f in folder] == [sub["timestamp"]], folder  # the graded submission's feedback only
        html = user.user("GET", f"/api/contents/{folder[0]['path']}/{ASSIGNMENT}.html").json()["content"]
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
        assert f"Student: {user.name} " in text and other not in html, text
        for secret in ("HIDDEN TESTS", "run_check", "_gx_", "inputs["):
            assert secret not in html, secret
        seen[user.name] = text
    def shown(text):
        m = re.search(r"Autograded score: ([0-9.]+) / ([0-9.]+)", text)
        assert m, text
        return float(m[1]), float(m[2])

    assert shown(seen[na]) == (auto, auto), seen[na]
    assert shown(seen[nb_]) == (want_b, auto), seen[nb_]
    assert "weights" in seen[nb_], seen[nb_]  # the advice names the mistake
    print(f"submitted after {t_submit:.0f} s, grading 2 notebooks {t_grade:.0f} s, cycle {time.monotonic() - t0:.0f} s")


@pytest.mark.slow
def test_make_server_stop(server):
    """``make server-stop`` stops the hub, the proxy and every user's server (kernels, relays):
    no process of the test's users is left and the public port is closed. (Runs last.)"""
    hub_dir = server.root / "hub"
    pids = [_pidfile(hub_dir / "jupyterhub.pid"), _pidfile(hub_dir / "jupyterhub-proxy.pid")]
    assert all(pids), pids
    uids = _uids(server.names.values())
    assert _our_pids(server.root, uids)  # the users' servers run
    r = subprocess.run(["make", "-s", "server-stop"], cwd=REPO, env=server.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    _wait(lambda: not any(p and _is(p, (b"jupyterhub", b"configurable-http-proxy")) for p in pids)
          and not _our_pids(server.root, uids), "everything stopped", timeout=60)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5).close()
