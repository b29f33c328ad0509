"""A Colab-like runtime: the published chapter's set-up cell, then the chapter.

Colab's runtime image, as googlecolab/backend-info lists it (pip-freeze.txt, pip-freeze.gpu.txt
and os-info*.txt of 2026-08-19, "Upgrade to Python 3.13"), preinstalls Python 3.13 with

    numpy 2.1.3, jax 0.7.2, jaxlib 0.7.2, matplotlib 3.10.0, pip 24.1.2
    and on a GPU runtime jax-cuda12-plugin 0.7.2 and jax-cuda12-pjrt 0.7.2 (JAX's CUDA build).

A virtual environment with those versions (Python 3.13) stands in for the runtime, a local
HTTP server for the course site (its `student/` folder), and the chapter notebook is the one the
site publishes (`build_site.published_chapter`), run in an empty folder as Colab runs a notebook
opened on its own. The tests show that

* on a GPU runtime (JAX's CUDA plugin stands in as a metadata-only marker: nothing of CUDA is
  downloaded), with or without an answering `nvidia-smi`, the cell installs the course's GPU
  JAX: JAX is replaced only together with its CUDA plugin, never by a CPU build (checked with
  uv's resolver on the exact requirements the cell's dry run prints);
* on a CPU runtime the cell really installs (pip, over HTTP from the stand-in site) and says
  what it did; Colab's numpy and matplotlib are compatible and kept, its JAX is not the version
  the course's numbers need and is replaced; then the whole chapter runs in that kernel;
* where the runtime's JAX is already the course's (a GPU build), an update of the course
  package changes no JAX package (pip's own dry run, offline);

Nothing is skipped from one run to the next (no pass cache): the venv is new, the cell
installs and the chapter executes every time. What is cached is downloads: the Colab versions
come from uv's cache when it holds them, and the packages the cell installs from PyPI from a
wheelhouse, `_build/.colab-wheels` (filled with `pip download` when it lacks any, and used as
the cell's only index otherwise; GMM_COLAB_REFRESH=1 fills it afresh). Slow (minutes): marked
like the fresh-venv test of tests/test_site.py, and it reads the built book's executed chapter.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_site as bs  # noqa: E402

# like the fresh-venv test of tests/test_site.py: reads _build/jupyter_execute, and takes minutes
pytestmark = [pytest.mark.book, pytest.mark.slow]

# Colab's preinstalled versions (googlecolab/backend-info, 2026-08-19)
COLAB_PYTHON = "3.13"
COLAB = {"numpy": "2.1.3", "jax": "0.7.2", "jaxlib": "0.7.2", "matplotlib": "3.10.0", "pip": "24.1.2"}
COLAB_GPU_JAX = {"jax-cuda12-plugin": "0.7.2", "jax-cuda12-pjrt": "0.7.2"}
PY313 = Path.home() / ".pyenv" / "versions" / "3.13.0" / "bin" / "python"
CHAPTER = "chapters/categorization"   # a chapter that imports gmmcourse, JAX and matplotlib
WHEELHOUSE = ROOT / "_build" / ".colab-wheels"
UV = ROOT / ".venv" / "bin" / "uv"


def _lock(name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    assert m, f"requirements.lock has no {name}"
    return m.group(1)


def _pip_env(**extra) -> dict:
    """The environment of every pip here: no GMMCOURSE_ setting, no pip configuration of this
    machine (Colab has none), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GMMCOURSE_", "PIP_")) or k == "PIP_CERT"}  # the CA bundle: still this machine's
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel holding only the metadata of `name` `version`: what pip and uv see of an installed
    package (here, Colab's JAX CUDA plugin), without its gigabytes."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gmm-course tests\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n"}
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t)}" for n, t in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, t in files.items():
            zf.writestr(n, t)
    return path


# ----------------------------------------------------------------------------- the stand-ins


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The course site over HTTP: its student/ folder, and the chapter as it publishes it."""
    if not (ROOT / "_build" / "jupyter_execute" / f"{CHAPTER}.ipynb").exists():
        pytest.fail(f"_build/jupyter_execute/{CHAPTER}.ipynb is missing: build the book first (make book)")
    root = tmp_path_factory.mktemp("site")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                                 {"log_message": lambda *a: None}), directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    bs.write_student_folder(root / "student", ROOT)
    nb = bs.published_chapter(CHAPTER, url, ROOT)
    yield url, root, nb
    server.shutdown()


def _versions(py: Path) -> dict[str, str]:
    out = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                         env=_pip_env(), check=True).stdout
    return {bs._normalise(d["name"]): d["version"] for d in json.loads(out)}


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A venv with Colab's Python and preinstalled versions (CPU runtime), and ipykernel."""
    if not UV.exists():
        pytest.fail("uv is missing from .venv (it makes the Colab-like venv): run `make venv`")
    if not PY313.exists():
        pytest.fail(f"this test needs a Python {COLAB_PYTHON} (Colab's): {PY313} is missing "
                    "(pyenv install 3.13.0)")
    tmp = tmp_path_factory.mktemp("colab")
    venv, py = tmp / "venv", tmp / "venv" / "bin" / "python"
    env = dict(os.environ, UV_LINK_MODE="copy")
    subprocess.run([str(UV), "venv", "-q", "--seed", "--python", str(PY313), str(venv)], check=True, env=env)
    cmd = [str(UV), "pip", "install", "-q", "--python", str(py), *(f"{n}=={v}" for n, v in COLAB.items()),
           f"ipykernel=={_lock('ipykernel')}"]
    if subprocess.run(cmd + ["--offline"], env=env, capture_output=True).returncode != 0:  # uv's cache, else PyPI
        subprocess.run(cmd, check=True, env=env)
    have = _versions(py)
    assert {n: have.get(n) for n in COLAB} == COLAB, have
    assert "gmmcourse" not in have
    return py


def _cell_command(py: Path, site_nb, cwd: Path, **env) -> list[str]:
    """The pip command the published notebook's set-up cell would run here (its dry run)."""
    cell = site_nb.cells[1]
    assert bs.SETUP_TAG in cell.metadata["tags"]
    script = cwd / "setup_cell.py"
    script.write_text(cell.source)
    res = subprocess.run([str(py), str(script)], capture_output=True, text=True, cwd=cwd, timeout=300,
                         env=_pip_env(GMMCOURSE_SETUP_DRY_RUN="1", **env))
    assert res.returncode == 0, res.stdout + res.stderr
    line = next((ln for ln in res.stdout.splitlines() if "dry run, would run: " in ln), None)
    assert line, res.stdout
    return shlex.split(line.split("dry run, would run: ", 1)[1])


def _install_args(cmd: list[str]) -> list[str]:
    """The requirements of a `python -m pip install ...` command, without pip's display options."""
    args = cmd[cmd.index("install") + 1:]
    i = args.index("--progress-bar")
    return args[:i] + args[i + 2:]


def _path_with_smi(tmp: Path, answers: bool | None) -> str:
    """PATH with a fake nvidia-smi that finds a GPU (True), finds none (False), or no nvidia-smi."""
    bindir = tmp / f"bin-{answers}"
    bindir.mkdir(exist_ok=True)
    if answers is not None:
        (bindir / "nvidia-smi").write_text("#!/bin/sh\n" + ("echo 'GPU 0: Tesla T4'\nexit 0\n" if answers else "exit 9\n"))
        (bindir / "nvidia-smi").chmod(0o755)
    return f"{bindir}:/usr/bin:/bin"


def _uv_changes(py: Path, args: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """``{package: (version removed, version installed)}`` if `args` were installed into `py`'s
    venv now (uv's resolver, dry run: metadata only, nothing installed)."""
    res = subprocess.run([str(UV), "pip", "install", "--dry-run", "--python", str(py), *args],
                         capture_output=True, text=True, env=dict(os.environ, UV_LINK_MODE="copy"), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    changes: dict[str, list] = {}
    for sign, name, version in re.findall(r"^ ([+-]) ([A-Za-z0-9_.\-]+)==(\S+)", res.stdout + res.stderr, re.M):
        changes.setdefault(bs._normalise(name), [None, None])[0 if sign == "-" else 1] = version
    return {n: tuple(v) for n, v in changes.items()}


# ----------------------------------------------------------------------------- the tests


def test_1_a_gpu_runtime_gets_the_courses_gpu_jax_never_a_cpu_one(colab, site, tmp_path):
    """Colab's GPU runtime (its JAX CUDA plugin installed): with an answering nvidia-smi or
    without one, the cell's install replaces JAX only together with its CUDA plugin."""
    url, _, nb = site
    assert _versions(colab)["jax"] == COLAB["jax"], "run this module's tests in order (the venv is Colab's still)"
    fakes = [fake_wheel(tmp_path / "fake", n, v) for n, v in COLAB_GPU_JAX.items()]
    subprocess.run([str(colab), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, fakes)],
                   check=True, env=_pip_env())
    try:
        jax = _lock("jax")
        for answers in (True, None):
            cmd = _cell_command(colab, nb, tmp_path, PATH=_path_with_smi(tmp_path, answers))
            assert any(a.startswith("gmmcourse[gpu] @ ") for a in cmd), (answers, cmd)
            changes = _uv_changes(colab, _install_args(cmd))
            assert changes.get("jax") == (COLAB["jax"], jax), changes
            assert changes.get("jax-cuda12-plugin") == (COLAB_GPU_JAX["jax-cuda12-plugin"], jax), \
                f"JAX replaced without its CUDA plugin (a CPU build on a GPU runtime): {changes}"
    finally:
        subprocess.run([str(colab), "-m", "pip", "uninstall", "-q", "-y", *COLAB_GPU_JAX], check=True, env=_pip_env())


def _wheelhouse_env(py: Path, args: list[str], tmp: Path) -> dict:
    """pip settings under which the cell installs from the wheelhouse alone. The wheelhouse gets
    exactly what pip would install here from PyPI (its dry run's report) when it lacks any."""
    offline = _pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE))
    report = tmp / "wheelhouse-report.json"

    def dry_run(env):
        return subprocess.run([str(py), "-m", "pip", "install", "--dry-run", "-q", "--report", str(report), *args],
                              capture_output=True, text=True, env=env, timeout=600)

    if os.environ.get("GMM_COLAB_REFRESH") and WHEELHOUSE.exists():
        shutil.rmtree(WHEELHOUSE)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if dry_run(offline).returncode != 0:
        online = dry_run(_pip_env())
        assert online.returncode == 0, "pip cannot resolve the cell's install from PyPI:\n" + online.stderr[-3000:]
        wanted = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in json.loads(report.read_text())["install"]
                  if bs._normalise(i["metadata"]["name"]) != "gmmcourse"]
        subprocess.run([str(py), "-m", "pip", "download", "-q", "--no-deps", "-d", str(WHEELHOUSE), *wanted],
                       check=True, env=_pip_env(), timeout=1200)
        again = dry_run(offline)
        assert again.returncode == 0, "the wheelhouse still lacks a package:\n" + again.stderr[-3000:]
    return offline


@pytest.fixture(scope="module")
def ran(colab, site, tmp_path_factory):
    """The published chapter run top to bottom in a kernel of the Colab-like venv, as Colab runs
    a notebook opened on its own (an empty working folder, no nvidia-smi that answers)."""
    from nbclient import NotebookClient

    url, _, published = site
    tmp = tmp_path_factory.mktemp("run")
    content = tmp / "colab" / "content"   # Colab's working folder: no copy of the site around the notebook
    content.mkdir(parents=True)
    path = _path_with_smi(tmp, False)
    args = _install_args(_cell_command(colab, published, content, PATH=path))
    assert not any(a.startswith("gmmcourse[gpu]") for a in args), args
    env = {**_wheelhouse_env(colab, args, tmp), "PATH": path}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as on Colab
    spec = tmp / "jupyter" / "kernels" / "colab-like"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(colab), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python", "env": env}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp / "jupyter")
    backend = os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, as on Colab
    nb = copy.deepcopy(published)
    try:
        NotebookClient(nb, timeout=900, kernel_name="colab-like", allow_errors=False,
                       resources={"metadata": {"path": str(content)}}).execute()
    finally:
        os.environ.pop("JUPYTER_PATH") if old is None else os.environ.__setitem__("JUPYTER_PATH", old)
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return nb, url


def test_2_the_cell_installs_over_http_keeps_what_fits_and_the_chapter_runs(colab, site, ran):
    nb, url = ran
    out = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
    version = json.loads((site[1] / "student" / "latest.json").read_text())["version"]  # the site's, as built
    assert f"[set-up] installing gmmcourse {version} from {url}/student" in out, out
    assert "JAX for the CPU" in out and "Successfully installed" in out, out
    assert f"[set-up] done: gmmcourse {version} installed" in out, out
    have = _versions(colab)
    assert have["gmmcourse"] == version
    for name in ("jax", "jaxlib", "genjax"):   # the versions the course's numbers depend on
        assert have[name] == _lock(name), (name, have[name])
    for name in ("numpy", "matplotlib"):       # Colab's own, compatible: kept
        assert have[name] == COLAB[name], f"Colab's {name} {COLAB[name]} was replaced by {have[name]}"
    # every cell of the chapter ran (NotebookClient raises on an error); its code cells have run counts
    code = [c for c in nb.cells[2:] if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)


def test_3_a_compatible_gpu_jax_is_not_replaced(colab, ran, site, tmp_path):
    """A runtime whose JAX is already the course's GPU JAX: updating the course package (the site
    has a newer one) changes no JAX package, whichever build the cell chooses (pip's own dry run,
    offline: the wheelhouse and the markers are all it could take a JAX from)."""
    url, root, _ = site
    jax = _lock("jax")
    fakes = [fake_wheel(tmp_path / "fake", n, jax) for n in COLAB_GPU_JAX]
    subprocess.run([str(colab), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, fakes)],
                   check=True, env=_pip_env())
    newer = tmp_path / "newer"     # the same site, announcing a newer course package
    shutil.copytree(root / "student", newer / "student")
    latest = json.loads((newer / "student" / "latest.json").read_text())
    (newer / "student" / "latest.json").write_text(json.dumps({**latest, "version": "999.0"}))
    nb = site[2]
    try:
        for answers, device in ((True, "auto"), (None, "auto"), (True, "cpu")):
            cmd = _cell_command(colab, nb, tmp_path, PATH=_path_with_smi(tmp_path, answers), GMMCOURSE_DEVICE=device,
                                GMMCOURSE_SITE=newer.as_uri())
            report = tmp_path / "report.json"
            res = subprocess.run([str(colab), "-m", "pip", "install", "--dry-run", "--no-index", "--report", str(report),
                                  *_install_args(cmd)], capture_output=True, text=True,
                                 env=_pip_env(PIP_FIND_LINKS=f"{WHEELHOUSE} {tmp_path / 'fake'}"))
            assert res.returncode == 0, res.stdout + res.stderr
            changed = {bs._normalise(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
            assert not {n for n in changed if n.startswith("jax")}, (answers, device, changed)
    finally:
        subprocess.run([str(colab), "-m", "pip", "uninstall", "-q", "-y", *COLAB_GPU_JAX], check=True, env=_pip_env())
