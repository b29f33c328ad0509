"""A re-run with nothing to grade (issue 24, "no-change re-run"): it plans from the gradebook's
own rows (``sqlite3``) and, where the gradebook, the CSVs, the source notebooks and the
grader's code are as the last complete run left them (`planning.settled_key`), it stops
there: no nbgrader/SQLAlchemy import, no Dask, no kernel. Anything that shortcut cannot see
sends the run the full way (the gradebook opened, synced, the CSVs exported). Mechanism tests
on the toy assignment (benchmarks/hostile/toy.py); no durations. Needs bubblewrap."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import nbformat
from grading_helpers import LIMITS, _env, _grade, needs_bwrap, toy

pytestmark = needs_bwrap

HEAVY = ("nbgrader", "sqlalchemy", "dask", "distributed", "nbclient", "zmq", "nbconvert", "jax", "tqdm")

# the CLI in a fresh interpreter; prints its exit status and the heavy modules it imported
PROBE = """
import json, sys
from gmmcourse.grading.cli import main
rc = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(%r)))
print(json.dumps({"rc": rc, "heavy": heavy}))
""" % json.dumps(HEAVY)


def _cli(course, *extra) -> dict:
    args = ["autograde", "toy", "--course", str(course), "--registry", "toy:ASSIGNMENTS", "--no-progress",
            "--no-warm", "--workers", "2", "--cell-timeout", str(LIMITS.cell_timeout)]
    p = subprocess.run([sys.executable, "-c", PROBE, *args, *extra], env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["stderr"] = p.stderr
    return out


def test_a_no_change_rerun_imports_nothing_heavy(tmp_path):
    """Graded once, then re-run unchanged with two Dask workers asked for: every submission is
    skipped, and the process never imported nbgrader, SQLAlchemy, Dask, nbclient, ZeroMQ,
    nbconvert or JAX (so it opened no gradebook, started no cluster and no kernel)."""
    course = toy.write_course(tmp_path, ["solution", "half", "invalid_json"])
    first = _grade(course)
    assert len(first.graded) == 3 and (course / ".cache" / "settled").is_file()
    csv = (course / "grades.csv").read_bytes()
    again = _cli(course)
    assert again["rc"] == 0 and "skipped 3 unchanged" in again["stderr"], again["stderr"]
    assert again["heavy"] == [], f"a no-change re-run imported {again['heavy']}"
    assert (course / "grades.csv").read_bytes() == csv


def _first_name(course, student: str, name: str) -> None:
    """What formgrader does when an instructor edits a student: a write to nbgrader's tables."""
    con = sqlite3.connect(course / "gradebook.db")
    con.execute("update student set first_name = ? where id = ?", (name, student))
    con.commit()
    con.close()


def test_what_the_shortcut_cannot_see_goes_the_full_way(tmp_path):
    """Nothing to grade, but (1) the gradebook was written since (formgrader), (2) grades.csv
    was deleted, (3) the source notebook's text changed where the regrade fingerprint does not
    look (a grade cell's wording): each re-run opens the gradebook and does what a full run
    does (the CSV shows the new name, is written again, nbgrader's copy of the cell is the new
    text), and still grades nothing."""
    course = toy.write_course(tmp_path, ["solution", "half"])
    assert len(_grade(course).graded) == 2

    _first_name(course, "half", "Renamed")
    r = _cli(course)
    assert "nbgrader" in r["heavy"] and "skipped 2 unchanged" in r["stderr"], r
    assert "Renamed" in (course / "grades.csv").read_text()
    assert _cli(course)["heavy"] == []  # settled again

    (course / "grades.csv").unlink()
    r = _cli(course)
    assert "nbgrader" in r["heavy"] and (course / "grades.csv").is_file(), r

    src = tmp_path / "solutions" / "toy" / "toy.ipynb"
    nb = nbformat.read(src, 4)
    cell = next(c for c in nb.cells if (c.metadata.get("nbgrader") or {}).get("grade"))
    cell.source += "\n# reworded"
    nbformat.write(nb, src)
    r = _cli(course)
    assert "nbgrader" in r["heavy"] and "skipped 2 unchanged" in r["stderr"], r
    con = sqlite3.connect(course / "gradebook.db")
    kept = [row[0] for row in con.execute("select source from source_cell where name = ?",
                                          (cell.metadata.nbgrader["grade_id"],))]
    con.close()
    assert kept and all("# reworded" in s for s in kept), kept
    assert _cli(course)["heavy"] == []


WARM_PROBE = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from gmmcourse.grading import engine
runs = []
engine.run_submission = lambda *a, **k: runs.append(1)  # the sandboxed run of the source notebook
a = SimpleNamespace(id="toy", parts=[], sandbox_offers=())
cache = Path(sys.argv[1])
engine.warm_jax_cache(a, "import jax", "{}", cache, None)  # cold: runs it, leaves its stamp
engine.warm_jax_cache(a, "import jax", "{}", cache, None)  # warm: nothing to run
print(json.dumps({"runs": len(runs), "stamps": len(list(cache.glob(".warm-toy-*"))), "jax": "jax" in sys.modules}))
"""


def test_a_warm_cache_is_recognised_without_importing_jax(tmp_path):
    """The grader checks whether its JAX cache is warm for this notebook and these kernels
    (`engine.warm_jax_cache`: a stamp named by the source and `codeversion.code_version`)
    without importing JAX: a resumed run does not pay for it (about a second) or carry its
    memory. The first call runs the source notebook, the second finds its stamp."""
    p = subprocess.run([sys.executable, "-c", WARM_PROBE, str(tmp_path / "cache")], env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"runs": 1, "stamps": 1, "jax": False}
