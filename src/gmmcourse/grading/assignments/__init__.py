"""The course's autograded assignments: one module each, found here by discovery.

A module of this package that defines ``ASSIGNMENT`` (a `gmmcourse.grading.spec.Assignment`)
is an autograded assignment: its parts (grade ids and points of the test cells of
``solutions/<id>/<id>.ipynb``), the inputs sent into the sandbox, the export functions that
read the student's values there, the trusted checks, the reference answers, and the words the
notebook states about the sandbox and the tolerances. Adding an assignment is adding a module
(see docs/grading.md, "Adding an assignment"); `tests/test_exercises.py` keeps each module and
its notebook in step.
"""

from __future__ import annotations

import importlib
import pkgutil

from gmmcourse.grading.sandbox import REPO_ROOT
from gmmcourse.grading.spec import Assignment

__all__ = ["ASSIGNMENTS", "REPO_ROOT", "load"]


def load() -> dict[str, Assignment]:
    """Every assignment module's ``ASSIGNMENT``, by nbgrader assignment id (modules named with a
    leading underscore are helpers, not assignments)."""
    found: dict[str, Assignment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        a = getattr(importlib.import_module(f"{__name__}.{info.name}"), "ASSIGNMENT", None)
        if not isinstance(a, Assignment):
            continue
        if a.id in found:
            raise RuntimeError(f"two assignment modules define the id {a.id!r}")
        found[a.id] = a
    return found


ASSIGNMENTS: dict[str, Assignment] = load()
"""All autograded assignments, by nbgrader assignment id."""
