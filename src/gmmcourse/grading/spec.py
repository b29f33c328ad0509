"""The contract between assignments, the sandboxed kernel and the trusted checker."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Verdict", "Part", "Assignment", "sanitize"]

_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;()\[\]{}<>=+\-*/'\"!?#%&|^~@$]")


def sanitize(text: str, limit: int = 160) -> str:
    """A short, printable-ASCII version of student-controlled text (exception messages)."""
    text = " ".join(str(text).split())
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Verdict:
    """The trusted checker's decision for one graded part.

    Attributes:
        fraction: share of the part's points earned, in [0, 1]. Only a positive,
            checked result may give more than 0.
        message: feedback for the student. Must not reveal the checks themselves.
    """

    fraction: float
    message: str


@dataclass(frozen=True)
class Part:
    """One autograded test cell of an assignment.

    Attributes:
        grade_id: the nbgrader ``grade_id`` of the test cell in the source notebook.
        points: the points of that cell (must equal the cell's nbgrader points).
        export: Python source run in the student's kernel (inside the sandbox) after the
            student's cells. It must assign a JSON-serialisable value (numbers, strings,
            lists, dicts) to the name ``answer``. It may read ``inputs`` (a dict of JSON
            data the trusted side prepared, e.g. reference choice maps). Nothing it
            produces is trusted: `check` validates types and shapes itself.
        check: trusted function ``(answer, context) -> Verdict`` run outside the sandbox;
            ``answer`` is the exported value (or raises before being called if the export
            failed), ``context`` the assignment's reference data (see
            `Assignment.reference`).
        description: one line shown in feedback (what the part is about).
    """

    grade_id: str
    points: float
    export: str
    check: Callable[[Any, Any], Verdict]
    description: str = ""


@dataclass(frozen=True)
class Assignment:
    """An autograded assignment.

    Attributes:
        id: nbgrader assignment id (folder name under ``solutions/``).
        notebook: the notebook file name students submit (e.g. ``"coffee_blends.ipynb"``).
        parts: the autograded parts.
        reference: trusted callable returning the reference context (computed once per
            grading run, outside the sandbox, from the `gmmcourse` reference package).
        inputs: callable returning JSON data passed into the sandbox as ``inputs``.
        sandbox_hide: paths under ``src/`` the student's kernel must not see, because the
            notebook asks the student to write what they contain (e.g. ``("gmmcourse",)``
            hides the whole course package; ``"gmmcourse/em.py"`` one module). The notebook
            must say which packages it offers (a test checks the release notebooks).
    """

    id: str
    notebook: str
    parts: tuple[Part, ...]
    reference: Callable[[], Any] = field(default=lambda: None)
    inputs: Callable[[], dict] = field(default=lambda: {})
    sandbox_hide: tuple[str, ...] = ()
    packages: str = "the Python standard library"
    """What the grading sandbox offers, in words for the notebook (see `grading_environment`)."""
