"""The contract between assignments, the sandboxed kernel and the trusted checker."""

from __future__ import annotations

import builtins
import dis
import functools
import inspect
import re
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from .protocol import function_export

__all__ = ["Verdict", "Part", "Assignment", "Export", "export_code", "sanitize", "GradingError", "RecordingError"]

_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;()\[\]{}<>=+\-*/'\"!?#%&|^~@$]")


def sanitize(text: str, limit: int = 160) -> str:
    """A short, printable-ASCII version of student-controlled text (exception messages)."""
    text = " ".join(str(text).split())
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GradingError(Exception):
    """A user-facing error (printed without a traceback)."""


class RecordingError(GradingError):
    """The gradebook or the course folder cannot be written (disk full, read-only): the run
    stops at the first one; nothing half-written is left."""


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


Export = Union[str, Callable[..., Any]]
"""A part's export: a function ``(student, inputs, **options) -> value`` (or a
`functools.partial` of one fixing keyword options), or, for small assignments, Python source
that assigns ``answer`` in the student's namespace."""


def _globals_used(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _globals_used(c)
    return names


def _unpack(export) -> tuple[Callable, dict]:
    if isinstance(export, functools.partial):
        if export.args:
            raise TypeError("an export partial may fix keyword options only")
        return export.func, dict(export.keywords)
    return export, {}


@functools.lru_cache(maxsize=None)
def _kernel_side() -> tuple[str, frozenset]:
    from gmmcourse.grading import kernel_side

    return inspect.getsource(kernel_side), frozenset(vars(kernel_side)) | frozenset(vars(builtins))


def _function_source(fn) -> str:
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    while lines and lines[0].startswith("@"):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def check_export(export: Export) -> None:
    """Raise TypeError unless `export` can run in the kernel: a plain module-level function
    that reads only the kernel-side helpers (`gmmcourse.grading.kernel_side`), builtins, its
    arguments and what it imports itself, with JSON-literal options."""
    if isinstance(export, str):
        return
    fn, options = _unpack(export)
    if not isinstance(fn, types.FunctionType) or fn.__closure__ or "<locals>" in fn.__qualname__:
        raise TypeError(f"export {fn!r} must be a module-level function (no closure)")
    _, allowed = _kernel_side()
    missing = sorted(_globals_used(fn.__code__) - allowed)
    if missing:
        raise TypeError(f"export function {fn.__name__} uses {', '.join(missing)}, which the student's kernel "
                        "does not have: import it inside the function, or add it to grading.kernel_side")
    import json

    if json.loads(json.dumps(options)) != options:
        raise TypeError(f"export options of {fn.__name__} must be JSON literals")


def export_code(export: Export) -> str:
    """The code sent into the student's kernel for an export (`protocol.function_export`); it
    assigns ``answer`` (the function's value as plain data, or ``{"error": ...}`` if it raised)."""
    if isinstance(export, str):
        return export
    check_export(export)
    fn, options = _unpack(export)
    helpers, _ = _kernel_side()
    return function_export(fn.__name__, _function_source(fn), options, helpers)


@dataclass(frozen=True)
class Part:
    """One autograded test cell of an assignment.

    Attributes:
        grade_id: the nbgrader ``grade_id`` of the test cell in the source notebook.
        points: the points of that cell (must equal the cell's nbgrader points).
        export: what runs in the student's kernel (inside the sandbox) after the student's
            cells (see `Export`): a function ``(student, inputs, **options)`` of the
            student's namespace (a dict) and ``inputs`` (JSON data the trusted side
            prepared, e.g. reference choice maps), returning plain data; it may use the
            helpers of `gmmcourse.grading.kernel_side` (``raw``, ``draws``, ``floats``) and
            must import anything else itself. Nothing it produces is trusted: `check`
            validates types and shapes itself.
        check: trusted function ``(answer, context) -> Verdict`` run outside the sandbox;
            ``answer`` is the exported value (or raises before being called if the export
            failed), ``context`` the assignment's reference data (see
            `Assignment.reference`).
        description: one line shown in feedback (what the part is about).
    """

    grade_id: str
    points: float
    export: Export
    check: Callable[[Any, Any], Verdict]
    description: str = ""

    def __post_init__(self):
        check_export(self.export)

    @property
    def code(self) -> str:
        """The export as code for the kernel (`export_code`)."""
        return export_code(self.export)


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
        sandbox_offers: the allow-list of what the student's kernel may import: distributions
            (``"numpy"``, ``"genjax"``; their dependencies come with them) and course modules
            (``"gmmcourse.gibbs"``; only those named, each with its own ``__pycache__``).
            Anything else is absent from the sandbox (`gmmcourse.grading.view`). None offers
            the whole venv and every course module (for test courses). The notebook names what
            it offers (`packages`; a test checks the release notebooks).
    """

    id: str
    notebook: str
    parts: tuple[Part, ...]
    reference: Callable[[], Any] = field(default=lambda: None)
    inputs: Callable[[], dict] = field(default=lambda: {})
    sandbox_offers: tuple[str, ...] | None = None
    packages: str = "the Python standard library"
    """What the grading sandbox offers, in words for the notebook (see `release.grading_environment`)."""
    precision: str = ""
    """How answers are compared, in words for the notebook (generated from the named tolerances)."""

    @property
    def sandbox_hide(self) -> tuple[str, ...]:
        """The course modules the sandbox does not offer (``("gmmcourse",)``: none of them)."""
        if self.sandbox_offers is None:
            return ()
        mods = {o.split(".", 1)[1] for o in self.sandbox_offers if o.startswith("gmmcourse.")}
        if not mods:
            return ("gmmcourse",)
        from pathlib import Path

        package = Path(__file__).resolve().parent.parent
        return tuple(f"gmmcourse/{p.name}" for p in sorted(package.glob("*.py")) if p.stem not in mods | {"__init__"})
