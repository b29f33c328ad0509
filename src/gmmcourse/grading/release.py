"""The student release: the notebooks' generated "how this notebook is graded" cell, and
``exercises/`` regenerated from ``solutions/`` with nbgrader (``make release``)."""

from __future__ import annotations

from pathlib import Path

from gmmcourse.grading.sandbox import REPO_ROOT
from gmmcourse.grading.spec import Assignment

__all__ = ["GRADING_ENVIRONMENT_TAG", "grading_environment", "sync_grading_environment", "generate_release"]

GRADING_ENVIRONMENT_TAG = "grading-environment"


def grading_environment(a: Assignment, limits=None) -> str:
    """The notebook's "how this notebook is graded" cell: the sandbox's packages and limits,
    generated from `Limits`, and the assignment's precision note (a test keeps the notebooks
    in sync with it)."""
    from gmmcourse.grading.sandbox import Limits

    lim = limits or Limits()
    return (
        "**How this notebook is graded.** The autograder runs your notebook from top to bottom in a "
        f"sandbox without network access. It offers {a.packages}. Limits: "
        f"**{lim.cell_timeout:.0f} s of CPU time per cell** and **{lim.notebook_timeout:.0f} s for the whole notebook**, "
        f"{lim.memory_bytes >> 30} GiB of memory, {lim.cpus:g} CPU core, {lim.scratch_bytes >> 20} MiB of disk "
        "in the working directory. Time is CPU time, so a grading machine busy with other work does not "
        "use up yours (on one core it equals the time your cell takes on a quiet computer); a cell that "
        f"waits without computing is stopped after {lim.wait_factor * lim.cell_timeout:.0f} s. "
        "A cell that runs past its limit is interrupted: what it had not "
        "finished is missing, and every part that needs it says so in your feedback. Run "
        "*Restart & Run All* before you submit, and keep an eye on the time the slow cells take. "
        + a.precision
    )


def sync_grading_environment(source_root: Path | None = None, assignments=None) -> list[Path]:
    """Insert or update the grading-environment cell (after the first cell) of every source
    notebook; returns the notebooks that changed. Run `generate_release` afterwards."""
    import nbformat

    from gmmcourse.grading.assignments import ASSIGNMENTS

    changed = []
    for a in (assignments or ASSIGNMENTS).values():
        path = Path(source_root or REPO_ROOT / "solutions") / a.id / a.notebook
        nb = nbformat.read(path, 4)
        text = grading_environment(a)
        cells = [c for c in nb.cells if GRADING_ENVIRONMENT_TAG in c.get("metadata", {}).get("tags", [])]
        if cells and cells[0].source == text:
            continue
        if cells:
            cells[0].source = text
        else:
            cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [GRADING_ENVIRONMENT_TAG]})
            cell.pop("id", None)
            nb.cells.insert(1, cell)
        nbformat.write(nb, path)
        changed.append(path)
    return changed


def generate_release(assignment_ids=None, course_root: Path | None = None, *, quiet: bool = True) -> None:
    """Regenerate ``exercises/<id>/`` from ``solutions/<id>/`` with ``nbgrader generate_assignment``.

    Args:
        assignment_ids: ids to generate (default: every assignment module).
        course_root: an nbgrader course root whose config reads ``../solutions`` and writes
            ``../exercises`` (default: ``<repo>/grading``).
    """
    import os
    import subprocess
    import sys

    from gmmcourse.grading.assignments import ASSIGNMENTS

    root = Path(course_root or REPO_ROOT / "grading")
    nbgrader = [sys.executable, "-m", "nbgrader"]
    for aid in assignment_ids or list(ASSIGNMENTS):
        cmd = nbgrader + ["generate_assignment", aid, "--force", "--create"]
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {aid} failed:\n{res.stdout}\n{res.stderr}")
        if not quiet:
            print(res.stderr or res.stdout)
