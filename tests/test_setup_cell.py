"""The set-up cell of the published notebooks (scripts/setup_cell.py, filled in by build_site).

It is run here as students run it: with Python 3.11 (a clear one-line refusal), against a
local HTTP server standing in for the course site (it asks the site for the newest version and
installs the wheel from there), with the GPU choice forced both ways on a fake `nvidia-smi`,
in the course's own environment (it only says all is ready), and in a fresh environment that
holds an older student package (it updates it).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_site as bs  # noqa: E402
from coursesite import wheel  # noqa: E402

PY311 = Path.home() / ".pyenv" / "versions" / "3.11.7" / "bin" / "python"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A course site's student/ folder (wheel, requirements, latest.json), served over HTTP."""
    root = tmp_path_factory.mktemp("site")
    bs.write_student_folder(root / "student", ROOT)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests, root
    server.shutdown()


def _cell(tmp_path, site_url="", version=None, needed=("gmmcourse",), bundle="student", extras=()) -> Path:
    cell = bs.setup_cell(site_url, bundle, version or bs.student_version(ROOT), list(needed), list(extras))
    path = tmp_path / "setup_cell_run.py"
    path.write_text(cell.source)
    return path


def _run(python, script, *flags, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GMMCOURSE_")}
    return subprocess.run([str(python), *flags, str(script)], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd or script.parent, timeout=600)


def test_the_cell_is_the_script_with_its_settings_filled_in(tmp_path):
    src = _cell(tmp_path, "https://course.example.org", "9.9.9", ["gmmcourse", "numpy"]).read_text()
    assert "COURSE_SITE = 'https://course.example.org'" in src and "COURSE_VERSION = '9.9.9'" in src
    assert "NEEDED = ['gmmcourse', 'numpy']" in src and "BUNDLE = 'student'" in src
    compile(src, "cell", "exec")


def test_python_311_is_refused_in_one_line(tmp_path):
    if not PY311.exists():
        pytest.fail(f"this test needs a Python 3.11 ({PY311}; pyenv install 3.11.7)")
    res = _run(PY311, _cell(tmp_path, "https://course.example.org"), "-S")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs Python 3.12 or newer" in lines[0] and "3.11.7" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_ready_in_the_courses_own_environment(tmp_path):
    res = _run(sys.executable, _cell(tmp_path, "https://course.example.org"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("[set-up] ready: gmmcourse") and "course's own environment" in res.stdout


def test_no_site_and_nothing_installed_says_what_to_do(tmp_path):
    res = _run(sys.executable, _cell(tmp_path, ""), "-S")
    assert res.returncode == 1 and "names no course site: set GMMCOURSE_SITE" in res.stderr


def test_asks_the_site_for_the_newest_version_and_installs_from_it(tmp_path, site):
    url, requests, _ = site
    res = _run(sys.executable, _cell(tmp_path, url, version="0.0.1"), "-S", env={"GMMCOURSE_SETUP_DRY_RUN": "1"})
    assert res.returncode == 0, res.stderr
    assert "/student/latest.json" in requests
    assert f"installing gmmcourse {bs.student_version(ROOT)} from {url}/student" in res.stdout
    assert f"-r {url}/student/requirements-core.txt" in res.stdout
    assert f" @ {url}/student/{bs.wheel_name(ROOT)}" in res.stdout


def test_the_student_can_point_it_at_another_site(tmp_path, site):
    url, _, _ = site
    res = _run(sys.executable, _cell(tmp_path, "https://moved.example.org"), "-S",
               env={"GMMCOURSE_SETUP_DRY_RUN": "1", "GMMCOURSE_SITE": url, "GMMCOURSE_PINS": "all"})
    assert res.returncode == 0, res.stderr
    assert f"from {url}/student" in res.stdout and f"-r {url}/student/requirements-student.txt" in res.stdout


@pytest.mark.parametrize("smi, cuda_jax, forced, gpu", [
    ("ok", False, None, True),        # Linux x86_64 with a driver: the GPU build
    ("ok", False, "cpu", False),      # forced to the CPU
    ("fails", False, None, False),    # nvidia-smi without a working driver (a laptop's leftover tools)
    (None, False, None, False),       # no nvidia-smi at all
    (None, False, "gpu", True),       # forced to the GPU
    (None, True, None, True),         # JAX is a GPU build already (Colab's GPU runtime): kept a GPU build
])
def test_gpu_choice(tmp_path, site, smi, cuda_jax, forced, gpu):
    url, _, _ = site
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if smi:
        (bindir / "nvidia-smi").write_text("#!/bin/sh\n" + ("echo 'GPU 0: Fake'\nexit 0\n" if smi == "ok" else "exit 9\n"))
        (bindir / "nvidia-smi").chmod(0o755)
    env = {"GMMCOURSE_SETUP_DRY_RUN": "1", "PATH": f"{bindir}:/usr/bin:/bin"}
    if cuda_jax:  # what pip would see of Colab's jax-cuda12-plugin: its metadata
        dist = tmp_path / "site-packages" / "jax_cuda12_plugin-0.7.2.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jax-cuda12-plugin\nVersion: 0.7.2\n")
        env["PYTHONPATH"] = str(dist.parent)
    if forced:
        env["GMMCOURSE_DEVICE"] = forced
    res = _run(sys.executable, _cell(tmp_path, url), "-S", env=env)
    assert res.returncode == 0, res.stderr
    assert ("gmmcourse[gpu] @" in res.stdout) is gpu, res.stdout
    assert ("JAX for the GPU" if gpu else "JAX for the CPU") in res.stdout
    if cuda_jax:
        assert "JAX is a GPU build (jax-cuda12-plugin 0.7.2)" in res.stdout, res.stdout


@pytest.mark.parametrize("device, target", [("cpu", "gmmcourse[compare] @"), ("gpu", "gmmcourse[compare,gpu] @")])
def test_a_notebooks_extras_are_installed_with_the_package(tmp_path, site, device, target):
    url, _, _ = site
    script = _cell(tmp_path, url, needed=["gmmcourse", "numpyro"], extras=["compare"])
    res = _run(sys.executable, script, "-S", env={"GMMCOURSE_SETUP_DRY_RUN": "1", "GMMCOURSE_DEVICE": device})
    assert res.returncode == 0 and target in res.stdout, res.stdout + res.stderr


def test_a_wrong_setting_is_refused(tmp_path):
    res = _run(sys.executable, _cell(tmp_path, "https://x.org"), "-S", env={"GMMCOURSE_DEVICE": "tpu"})
    assert res.returncode == 1 and "GMMCOURSE_DEVICE must be one of auto, cpu, gpu, not 'tpu'" in res.stderr


@pytest.fixture(scope="module")
def student_venv(tmp_path_factory):
    """A fresh venv holding the student requirements (from uv's cache) but no gmmcourse."""
    uv = ROOT / ".venv" / "bin" / "uv"
    if not uv.exists():
        pytest.fail("uv is missing from .venv: run make venv")
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    env = dict(os.environ, UV_LINK_MODE="copy")
    subprocess.run([str(uv), "venv", "-q", "--seed", "--python", sys.executable, str(venv)], check=True, env=env)
    reqs = tmp / "reqs.txt"
    reqs.write_text(bs.student_requirements(ROOT))
    cmd = [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", str(reqs)]
    if subprocess.run(cmd + ["--offline"], env=env, capture_output=True).returncode != 0:
        subprocess.run(cmd, check=True, env=env)
    return venv / "bin" / "python"


def _installed_version(python) -> str:
    return subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('gmmcourse'))"],
                          capture_output=True, text=True).stdout.strip()


def test_installs_over_http_then_updates_an_older_package(tmp_path, site, student_venv, monkeypatch):
    """For real, over HTTP: an older student package is replaced by the site's newest, and a
    second run only says all is ready."""
    url, _, root = site
    old = tmp_path / "old"
    # patched where the wheel's name and metadata read it (the facade `bs` only re-exports it)
    monkeypatch.setattr(wheel, "student_version", lambda root=ROOT: "0.0.1")
    assert bs.build_student_wheel(old, ROOT).name == "gmmcourse-0.0.1-py3-none-any.whl"
    monkeypatch.undo()
    subprocess.run([str(student_venv), "-m", "pip", "install", "-q", "--no-deps", str(next(old.glob("*.whl")))], check=True)
    assert _installed_version(student_venv) == "0.0.1"

    script = _cell(tmp_path, url, version="0.0.1")  # a notebook downloaded when 0.0.1 was current
    res = _run(student_venv, script, env={"GMMCOURSE_DEVICE": "cpu"})
    assert res.returncode == 0, res.stdout + res.stderr
    new = json.loads((root / "student" / "latest.json").read_text())["version"]  # the site's, as built
    assert f"updating gmmcourse 0.0.1 to {new}" in res.stdout and f"done: gmmcourse {new} installed" in res.stdout
    assert f"Successfully installed gmmcourse-{new}" in res.stdout  # pip's progress is shown
    assert _installed_version(student_venv) == new
    again = _run(student_venv, script)
    assert again.returncode == 0 and again.stdout.startswith(f"[set-up] ready: gmmcourse {new} is installed"), again.stdout


def test_a_failed_install_says_the_line_that_matters(tmp_path, site, student_venv):
    """A copy of the site (the notebook sits in it) whose newest wheel is missing: one line."""
    broken = tmp_path / "broken" / "student"
    shutil.copytree(site[2] / "student", broken)
    (broken / "latest.json").write_text(json.dumps({"version": "99.0", "wheel": "gmmcourse-99.0-py3-none-any.whl"}))
    res = _run(student_venv, _cell(tmp_path, "", bundle=str(broken)), env={"GMMCOURSE_DEVICE": "cpu"})
    assert res.returncode == 1
    assert res.stderr.strip().startswith("[set-up] the install failed: ERROR"), res.stderr
    assert "Traceback" not in res.stderr


def test_a_launch_setting_change_rebuilds_every_page(tmp_path):
    """chapters/_ext/course_launch.py empties the theme's launch_buttons before Sphinx compares
    the configuration: its own config value must make a changed hub address rebuild the pages."""
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "index.rst").write_text("Title\n=====\n\ntext\n")

    def build(hub: str) -> float:
        conf = (f"import sys; sys.path.insert(0, {str(ROOT / 'chapters' / '_ext')!r})\n"
                "extensions = ['course_launch']\n"
                "html_theme_options = {'repository_url': 'https://github.com/me/gmm', 'repository_branch': 'gh-pages',\n"
                f"    'launch_buttons': {{'jupyterhub_url': {hub!r}}}}}\n")
        (src / "conf.py").write_text(conf)
        out = tmp_path / "html"
        Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None, warning=None,
               freshenv=False).build()
        return (out / "index.html").stat().st_mtime_ns

    first = build("https://hub-a.example.org")
    assert build("https://hub-a.example.org") == first          # nothing changed: nothing rewritten
    assert build("https://hub-b.example.org") != first          # the hub moved: the page is rewritten


def test_a_missing_extra_is_installed_for_real(tmp_path, site, student_venv):
    """A student with gmmcourse current but without NumPyro opens the Stan and PyMC chapter:
    the cell installs gmmcourse[compare] over HTTP, and NumPyro imports afterwards."""
    url, _, _ = site
    subprocess.run([str(student_venv), "-m", "pip", "uninstall", "-q", "-y", "numpyro"], check=True)
    script = _cell(tmp_path, url, needed=["gmmcourse", "numpyro"], extras=["compare"])
    res = _run(student_venv, script, env={"GMMCOURSE_DEVICE": "cpu"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Successfully installed" in res.stdout and "numpyro" in res.stdout, res.stdout
    assert subprocess.run([str(student_venv), "-c", "import numpyro"]).returncode == 0
