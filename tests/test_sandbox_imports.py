"""What a sandboxed kernel may import: exactly what its assignment offers (an allow-list
turned into the kernel's file system), never a hidden course module (not even its ``.pyc``),
another distribution (NumPyro), the grader, or the course's exported programs."""

from __future__ import annotations

import json
import os
import py_compile
import sys
from pathlib import Path

import pytest
from sandbox_helpers import run_in_sandbox

import gmmcourse
from gmmcourse.grading.assignments import ASSIGNMENTS
from gmmcourse.grading.sandbox import Limits, SandboxConfig
from gmmcourse.grading.view import course_modules, distributions

PACKAGE = Path(gmmcourse.__file__).resolve().parent
TAG = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
NOT_OFFERED = ["numpyro", "sklearn", "arviz", "pandas", "gmmcourse.grading", "gmmcourse.grading.checks"]
PROBE = r"""
import importlib, importlib.util, json, os, sys
res = {}
for name in NAMES:
    try:
        importlib.import_module(name)
        res[name] = "ok"
    except BaseException as e:
        res[name] = type(e).__name__
pyc = PYC
res["pyc_exists"] = os.path.exists(pyc)
try:  # the hidden module's compiled file, loaded by path as a student would
    spec = importlib.util.spec_from_file_location("stolen", pyc)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    res["pyc_import"] = "ok"
except BaseException as e:
    res["pyc_import"] = type(e).__name__
pkg = PACKAGE
res["package"] = sorted(os.listdir(pkg)) if os.path.isdir(pkg) else None
res["programs"] = sorted(os.listdir(PROGRAMS)) if os.path.isdir(PROGRAMS) else None
res["host_python"] = [p for p in HOST if os.path.isdir(p) and os.listdir(p)]
print("RESULT" + json.dumps(res))
"""


@pytest.fixture(scope="module")
def hidden_pyc():
    """A compiled `categorize` beside its source, as the grader's own first run leaves it on a
    host without PYTHONDONTWRITEBYTECODE."""
    pyc = PACKAGE / "__pycache__" / f"categorize.{TAG}.pyc"
    made = not pyc.exists()
    py_compile.compile(str(PACKAGE / "categorize.py"), cfile=str(pyc))
    yield pyc
    if made:
        pyc.unlink(missing_ok=True)


@pytest.mark.parametrize("aid", sorted(ASSIGNMENTS))
def test_the_sandbox_offers_exactly_what_the_assignment_names(aid, hidden_pyc, tmp_path):
    a = ASSIGNMENTS[aid]
    assert a.sandbox_offers is not None, f"{aid} must name what its sandbox offers (an allow-list)"
    offered_mods = course_modules(a.sandbox_offers) - {"__init__"}
    hidden_mods = sorted({p.stem for p in PACKAGE.glob("*.py")} - offered_mods - {"__init__"})
    assert "categorize" in hidden_mods
    offered = list(distributions(a.sandbox_offers)) + [f"gmmcourse.{m}" for m in sorted(offered_mods)]
    cache = tmp_path / "jax"
    (cache / "gmmcourse-programs").mkdir(parents=True)
    (cache / "gmmcourse-programs" / "gmmcourse.chains.run_chunk-x.jaxexport").write_bytes(b"reference program")
    host = [os.path.join(sys.base_prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"),
            "/usr/lib/python3/dist-packages"]
    code = (PROBE.replace("NAMES", repr(offered + NOT_OFFERED + [f"gmmcourse.{m}" for m in hidden_mods]))
            .replace("PYC", repr(str(hidden_pyc))).replace("PACKAGE", repr(str(PACKAGE)))
            .replace("PROGRAMS", repr(str(cache / "gmmcourse-programs"))).replace("HOST", repr(host)))
    r = run_in_sandbox(code, SandboxConfig(offers=a.sandbox_offers, jax_cache=str(cache)), Limits())
    assert "RESULT" in r.stdout, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    for name in offered:
        assert res[name] == "ok", (aid, name, res[name])
    for name in NOT_OFFERED + [f"gmmcourse.{m}" for m in hidden_mods]:
        assert res[name] == "ModuleNotFoundError", (aid, name, res[name])
    assert res["pyc_exists"] is False and res["pyc_import"] != "ok", (aid, res)
    if offered_mods:  # only the offered modules' files (and their own compiled files)
        names = set(res["package"]) - {"__pycache__"}
        assert names == {f"{m}.py" for m in offered_mods | {"__init__"}}, (aid, names)
        assert res["programs"] == ["gmmcourse.chains.run_chunk-x.jaxexport"]  # it runs the reference sampler
    else:
        assert res["package"] is None, (aid, res["package"])
        assert res["programs"] == [], (aid, res["programs"])  # the course's compiled programs are not there
    assert res["host_python"] == [], (aid, res["host_python"])


def test_a_cache_the_warm_up_wrote_is_read_by_other_kernels(tmp_path):
    """The warm-up's kernel (one uid) writes the exported programs; a submission's kernel,
    graded by another process (another uid), loads them instead of tracing again."""
    import subprocess

    code = ("import json, sys; sys.path.insert(0, 'tests');"
            "from sandbox_helpers import run_in_sandbox; from gmmcourse.grading.sandbox import SandboxConfig;"
            f"cfg = SandboxConfig(offers={ASSIGNMENTS['uncertainty'].sandbox_offers!r}, jax_cache={str(tmp_path)!r},"
            " jax_cache_writable=sys.argv[1] == 'w');"
            "r = run_in_sandbox(" + repr(WARM) + ", cfg); print(r.stdout[-2000:], r.stderr[-2000:])")
    for mode in ("w", "r"):  # two grader processes: two kernel uids
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=600,
                             cwd=Path(__file__).resolve().parent.parent)
        assert "DRAWN" in out.stdout, out.stdout + out.stderr
    assert "traced again" not in out.stdout, out.stdout


WARM = """
import jax.export, os, sys
if not os.access(os.environ['JAX_COMPILATION_CACHE_DIR'], os.W_OK):
    def _no_export(*a, **k):
        print('traced again'); raise RuntimeError('traced again')
    jax.export.export = _no_export
import numpy as np
from gmmcourse.gibbs import posterior
post = posterior(np.linspace(-2, 2, 21) ** 3, 2, num_chains=2, num_samples=30, num_warmup=10, seed=4)
print('DRAWN', float(post.means.mean()))
"""
