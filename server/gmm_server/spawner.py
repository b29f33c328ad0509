"""SandboxSpawner: each user's Jupyter server runs as that user's unix account inside a
bubblewrap sandbox.

The hub runs as root. Instead of switching to the user before ``exec`` (what JupyterHub's
``LocalProcessSpawner`` does), the spawner starts ``bwrap`` as root, which builds a private
mount, PID, IPC and UTS namespace, and inside it ``setpriv`` drops to the user's uid, gid and
groups with no capabilities and ``no_new_privs`` before starting ``jupyterhub-singleuser``.

What a user's server sees (read-only unless marked):

* the system (``/usr``, ``/etc``, ...), fresh ``/proc`` (own processes only), ``/dev``;
* empty ``/tmp``, ``/var/tmp``, ``/dev/shm`` (private, writable), empty ``/root`` and
  ``/home`` except its own home (writable);
* of the repository: the Python install the venv is based on, ``.venv/``, ``src/``
  (without ``src/gmmcourse/grading``) and ``server/``; not ``solutions/``, ``grading/``,
  ``tests/``, ``.git`` or anything else;
* of the server's state: ``exchange/`` (nbgrader's permissions apply, see exchange.py) and
  ``config/<role>/``; instructors also get the course root (``course/``, writable, shown as
  ``~/<course id>`` because Formgrader wants it inside the server's root folder) and
  ``solutions/`` + ``exercises/``. The hub's database, cookie secret and
  roster are never visible.

This also means other uids can run the venv's Python even when it lives in root's
0700 home (pyenv under ``/root``): the sandbox shows them only that install, read-only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from . import roster, settings


def _depth(p: str) -> int:
    return len(Path(p).parts)


def sandbox_argv(st: settings.Settings, user: str, role: str, home: str) -> list[str]:
    """bwrap + setpriv prefix running a command as ``user`` in the course sandbox."""
    pw = pwd.getpwnam(user)
    repo = st.repo
    hide = ["/tmp", "/var/tmp", "/root", "/home", str(st.root), str(repo), str(repo / "src" / "gmmcourse" / "grading")]
    ro = [sys.base_prefix, str(settings.VENV), str(repo / "src"), str(settings.SERVER_DIR), str(st.config / role)]
    rw = [home, str(st.exchange)]
    mounts = {}  # destination -> source, where they differ
    if role == "instructor":
        # Formgrader wants the course root inside the server's root folder (the home)
        dest = instructor_course_dir(st, home)
        mounts[dest] = str(st.course)
        rw.append(dest)
        ro += [str(st.solutions), str(st.exercises)]
    ro = [p for p in ro if os.path.exists(p)]
    rw = [p for p in rw if os.path.exists(mounts.get(p, p))]
    ops = [(p, "hide") for p in hide] + [(p, "ro") for p in ro] + [(p, "rw") for p in rw]
    # folders leading to what is shown inside a hidden one, traversable (bwrap makes them 0700)
    dirs = set()
    for p in ro + rw + hide:
        under = [h for h in hide if Path(p).is_relative_to(h) and p != h]
        if under:
            top = max(under, key=_depth)
            a = Path(p).parent
            while a != Path(top) and a.is_relative_to(top):
                dirs.add(str(a))
                a = a.parent
    ops += [(d, "dir") for d in dirs]
    # parents before children; a hidden folder is mounted before what is shown inside it
    order = {"hide": 0, "dir": 1, "ro": 2, "rw": 2}
    ops.sort(key=lambda o: (_depth(o[0]), order[o[1]], o[0]))
    argv = [
        shutil.which("bwrap") or "/usr/bin/bwrap",
        "--die-with-parent", "--new-session",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--ro-bind", "/", "/",
        "--dev", "/dev", "--proc", "/proc",
        "--perms", "1777", "--tmpfs", "/dev/shm",
    ]
    for path, kind in ops:
        if kind == "hide":
            argv += (["--perms", "1777"] if path in ("/tmp", "/var/tmp") else []) + ["--tmpfs", path]
        elif kind == "dir":
            argv += ["--perms", "0755", "--dir", path]
        else:
            argv += ["--ro-bind" if kind == "ro" else "--bind", mounts.get(path, path), path]
    argv += [
        "--chdir", home,
        "--setenv", "HOME", home, "--setenv", "USER", user, "--setenv", "LOGNAME", user,
        shutil.which("setpriv") or "/usr/bin/setpriv",
        f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]
    return argv


def instructor_course_dir(st: settings.Settings, home: str) -> str:
    """Where an instructor's server sees the course root: ``~/<course id>``."""
    return os.path.join(home, st.course_id)


class SandboxSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose process is ``bwrap ... setpriv ... jupyterhub-singleuser``."""

    roster_file = Unicode(help="path of roster.json (for each user's role)").tag(config=True)

    def _role(self) -> str:
        entry = roster.load(self.roster_file).get(self.user.name, {})
        return "instructor" if entry.get("role") == "instructor" else "student"

    def make_preexec_fn(self, name):
        return None  # stay root: bwrap builds the sandbox, setpriv then drops to the user

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
        home = pwd.getpwnam(self.user.name).pw_dir
        if not os.path.isdir(home):
            raise RuntimeError(f"user {self.user.name} has no home folder {home}")
        prefix = sandbox_argv(st, self.user.name, self._role(), home)
        self.cmd = prefix + [str(settings.VENV / "bin" / "jupyterhub-singleuser")]
        self.popen_kwargs = {"cwd": home}
        return await super().start()
