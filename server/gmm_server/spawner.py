"""SandboxSpawner: each user's Jupyter server runs as that user's unix account inside a
bubblewrap sandbox, in its own network namespace, under per-user caps (limits.py).

The hub runs as root. Instead of switching to the user before ``exec`` (what JupyterHub's
``LocalProcessSpawner`` does), the spawner starts ``bwrap`` as root, which builds private
mount, PID, IPC, UTS and network namespaces, and inside it ``setpriv`` drops to the user's
uid, gid and groups with no capabilities and ``no_new_privs`` before starting
``jupyterhub-singleuser``. Before bwrap runs anything of the user's, the spawner has put it in
the user's cgroup (memory, processes, CPU) and made the two relays of netns.py (hub <-> server;
no other network).

What a user's server sees is an allow-list (nothing of the host unless listed):

* read-only: ``/usr`` (and the ``/bin``, ``/lib``... links), a few files of ``/etc`` (accounts,
  name service, time zone, certificates, dynamic linker, fonts, shells' profiles), a fresh
  ``/proc`` (own processes only), a minimal ``/dev``; no ``/sys``, ``/var``, ``/run``, ``/root``,
  other homes or other work folders;
* size-capped private tmpfs: ``/tmp``, ``/var/tmp``, ``/dev/shm``;
* its home (writable), from the user's disk image (userfs.py);
* of the repository: the Python install the venv is based on, ``.venv/``, ``src/`` (without
  ``src/gmmcourse/grading``) and ``server/``;
* of the server's state: ``config/<role>/``; students: ``exchange/`` read-only with their own
  ``inbound/`` (on their image) writable; instructors: ``exchange/`` writable, the course root
  (``~/<course id>``, writable: Formgrader wants it inside the server's root folder),
  ``solutions/`` and ``exercises/``. The hub's database, cookie secret and roster never.

This also means other uids can run the venv's Python even when it lives in root's 0700 home
(pyenv under ``/root``): the sandbox shows them only that install, read-only.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from . import limits, netns, roster, settings, userfs


# files of /etc a user's server needs (accounts for setpriv and whoami, name service, time,
# certificates, the dynamic linker, fonts for matplotlib, the shell's profile for terminals)
ETC = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "gai.conf", "localtime", "timezone",
       "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates", "ca-certificates.conf",
       "alternatives", "fonts", "mime.types", "os-release", "profile", "profile.d", "bash.bashrc", "inputrc",
       "terminfo", "protocols", "services", "shells")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def sandbox_argv(st: settings.Settings, user: str, role: str, home: str, *, home_src: str | None = None,
                 inbound_src: str | None = None, caps: limits.Caps = limits.CAPS) -> list[str]:
    """bwrap + setpriv prefix running a command as ``user`` in the course sandbox.
    ``home_src``: what is shown as the home (default: ``home`` itself); ``inbound_src``: a
    student's own inbound folder, shown as the exchange's (default: the exchange's)."""
    pw = pwd.getpwnam(user)
    repo = st.repo
    ops: list[tuple[str, str, str]] = []  # (bwrap option, source, destination), parents first
    ro = [sys.base_prefix, str(settings.VENV), str(repo / "src"), str(settings.SERVER_DIR), str(st.config / role)]
    ops += [("--ro-bind", p, p) for p in ro if os.path.exists(p)]
    ops += [("--tmpfs", "", str(repo / "src" / "gmmcourse" / "grading"))]  # the grader's checks
    ops += [("--bind", home_src or home, home)]
    if role == "instructor":
        ops += [("--bind", str(st.exchange), str(st.exchange))]
        # Formgrader wants the course root inside the server's root folder (the home)
        ops += [("--bind", str(st.course), instructor_course_dir(st, home))]
        ops += [("--ro-bind", str(p), str(p)) for p in (st.solutions, st.exercises) if p.exists()]
    else:
        ops += [("--ro-bind", str(st.exchange), str(st.exchange))]
        if inbound_src:
            ops += [("--bind", inbound_src, str(st.exchange / st.course_id / "inbound"))]
    argv = [
        shutil.which("bwrap") or "/usr/bin/bwrap",
        "--die-with-parent", "--new-session",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
        "--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/var",
    ]
    for path, size in (("/tmp", caps.tmp_bytes), ("/var/tmp", caps.tmp_bytes), ("/dev/shm", caps.shm_bytes)):
        argv += ["--perms", "1777", "--size", str(size), "--tmpfs", path]
    for path in SYSTEM:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for name in ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # folders leading to what is shown, traversable (bwrap would make them 0700 root)
    for d in _parents([dest for _, _, dest in ops]):
        argv += ["--perms", "0755", "--dir", d]
    for opt, src, dest in ops:
        argv += [opt, dest] if opt == "--tmpfs" else [opt, src, dest]
    argv += [
        "--chdir", home,
        "--setenv", "HOME", home, "--setenv", "USER", user, "--setenv", "LOGNAME", user,
        "--setenv", "SHELL", "/bin/bash",
        shutil.which("setpriv") or "/usr/bin/setpriv",
        f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]
    return argv


def _parents(dests: list[str]) -> list[str]:
    """Folders above the destinations that no destination contains, shortest first."""
    out = set()
    for d in dests:
        for a in Path(d).parents:
            if a != Path("/") and not any(a.is_relative_to(b) for b in dests):
                out.add(a)
    return [str(a) for a in sorted(out, key=lambda p: len(p.parts))]


def instructor_course_dir(st: settings.Settings, home: str) -> str:
    """Where an instructor's server sees the course root: ``~/<course id>``."""
    return os.path.join(home, st.course_id)


class SandboxSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose process is ``bwrap ... setpriv ... jupyterhub-singleuser``,
    in the user's cgroup, with its own network namespace reached through netns.Relays."""

    roster_file = Unicode(help="path of roster.json (for each user's role)").tag(config=True)

    _cgroup: limits.UserCGroup | None = None
    _relays: netns.Relays | None = None

    def _role(self) -> str:
        entry = roster.load(self.roster_file).get(self.user.name, {})
        return "instructor" if entry.get("role") == "instructor" else "student"

    def make_preexec_fn(self, name):
        cgroup = self._cgroup

        def preexec():  # in the child, before bwrap: everything it starts is capped
            cgroup.join()

        return preexec  # and stay root: bwrap builds the sandbox, setpriv then drops to the user

    def get_env(self):
        env = super().get_env()
        st = settings.load()
        role = self._role()
        env["JUPYTER_CONFIG_PATH"] = str(st.config / role)
        env["PYTHONPATH"] = str(settings.SERVER_DIR)
        env["PATH"] = f"{settings.VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        if role == "instructor":
            env["GMM_COURSE_ROOT"] = instructor_course_dir(st, pwd.getpwnam(self.user.name).pw_dir)
        env.pop("JUPYTER_CONFIG_DIR", None)
        env.pop("JUPYTER_DATA_DIR", None)
        return env

    async def start(self):
        st = settings.load()
        name = self.user.name
        role = self._role()
        pw = pwd.getpwnam(name)
        try:
            gid = grp.getgrnam(st.group).gr_gid
            self._cgroup = limits.UserCGroup(name)
            mnt = await asyncio.get_running_loop().run_in_executor(None, userfs.ensure, st, name, gid)
        except limits.LimitError as e:
            self._release()
            self.log.error("%s: %s", name, e)
            raise RuntimeError(str(e)) from None
        home = pw.pw_dir
        if role == "instructor":
            course_mnt = mnt / "home" / st.course_id
            if not course_mnt.is_dir():
                course_mnt.mkdir()
                os.chown(course_mnt, pw.pw_uid, pw.pw_gid)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        prefix = sandbox_argv(st, name, role, home, home_src=str(mnt / "home"), inbound_src=str(mnt / "inbound"))
        prefix[1:1] = ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        self.cmd = prefix + [str(settings.VENV / "bin" / "jupyterhub-singleuser")]
        self.popen_kwargs = {"cwd": "/", "pass_fds": (info_w, block_r)}
        try:
            ip_port = await super().start()
        finally:
            os.close(info_w)
            os.close(block_r)
        try:
            loop = asyncio.get_running_loop()
            info = await asyncio.wait_for(loop.run_in_executor(None, _read_info, info_r), 60)
            child = info["child-pid"]
            self._relays = netns.Relays()
            await self._relays.start(f"/proc/{child}/ns/net", self.port, settings.load().hub_api_port)
            os.write(block_w, b"1")  # bwrap may now run the user's server
        except Exception as e:
            self._release()
            self.log.error("%s: could not connect the server's network namespace: %s", name, e)
            raise
        finally:
            os.close(info_r)
            os.close(block_w)
        return ip_port

    def _release(self):
        """The relays closed, the cgroup removed (what is left in it killed)."""
        if self._relays is not None:
            self._relays.close()
            self._relays = None
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            self._release()

    async def poll(self):
        status = await super().poll()
        if status is not None:
            self._release()
        return status


def _read_info(fd: int) -> dict:
    """bwrap's ``--info-fd`` JSON (read until it parses: the fd may stay open)."""
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
        try:
            return json.loads(out)
        except ValueError:
            continue
    return json.loads(out)
