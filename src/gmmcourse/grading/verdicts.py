"""Verdicts: turn a submission's exported answer into points and a message (trusted, in the
grader's own process), and fingerprint everything that decides them (the regrade key).

`check_part` reads one exported answer as strict JSON and runs the part's check against the
reference; only a positive, finite `Verdict` earns points. A check that raises is a defect of
the grader (`CheckCrashed`), never a score. `fingerprint` hashes what decides an assignment's
verdicts, and nothing else: a changed check, tolerance, input or reference regrades the class;
a typo fixed in the notebook's text does not.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

from .reference import inputs_key as _inputs_key
from .reference import source_of
from .spec import Assignment, Part, Verdict, sanitize

__all__ = ["ENGINE_VERSION", "VERDICT_MODULES", "CheckCrashed", "check_part", "strict_json", "module_source",
           "verdict_modules", "fingerprint"]

ENGINE_VERSION = "1"
"""Part of every fingerprint: bump it when the engine itself changes how verdicts are made."""

VERDICT_MODULES = ("gmmcourse.grading.spec", "gmmcourse.grading.checks", "gmmcourse.grading.kernel_side")
"""Modules every verdict rests on (validation, named tolerances, the kernel-side export helpers)."""


class CheckCrashed(Exception):
    """A trusted check raised: a defect of the grader, not of the answer (never a score)."""


def strict_json(text: str) -> Any:
    """``json.loads`` refusing ``NaN``, ``Infinity`` and ``-Infinity``."""

    def bad_const(c):
        raise ValueError(f"{c} is not allowed")

    return json.loads(text, parse_constant=bad_const)


def check_part(part: Part, answer: dict, reference: Any) -> tuple[float, str]:
    """Trusted verdict for one part: (points, message); points only for a positive, checked
    `Verdict`, at most the part's points. Raises `CheckCrashed` when the check raises."""
    if not answer or not answer.get("ok"):
        err = sanitize((answer or {}).get("error") or "no answer")
        return 0.0, f"Your answer could not be read from the notebook ({err})."
    try:
        value = strict_json(answer["json"])
    except (ValueError, RecursionError, TypeError):
        return 0.0, "Your answer could not be read from the notebook (not plain data)."
    try:
        v = part.check(value, reference)
    except Exception as e:  # noqa: BLE001 (checks reject malformed answers themselves: `checks.guarded`)
        raise CheckCrashed(f"the check of {part.grade_id} raised {type(e).__name__}: {sanitize(str(e), 200)}") from e
    if not isinstance(v, Verdict):
        return 0.0, "Your answer could not be checked."
    try:
        frac = float(v.fraction)
    except (TypeError, ValueError):
        frac = 0.0
    if not math.isfinite(frac) or frac <= 0:
        frac = 0.0
    frac = min(frac, 1.0)
    return round(float(part.points) * frac, 6), str(v.message)


def module_source(name: str) -> bytes:
    """The source of an imported module (its name if it has no file)."""
    f = getattr(sys.modules.get(name), "__file__", None)
    try:
        return Path(f).read_bytes() if f else name.encode()
    except OSError:
        return name.encode()


def verdict_modules(a: Assignment) -> list[str]:
    """The modules whose source decides ``a``'s verdicts: `VERDICT_MODULES`, the modules
    defining its checks, and every module of the same package those use (transitively)."""
    todo = []
    for p in a.parts:
        for f in (p.check, getattr(p.check, "__wrapped__", None), getattr(p.check, "func", None)):
            if getattr(f, "__module__", None) in sys.modules:
                todo.append(f.__module__)
    seen = set(VERDICT_MODULES)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        package = name.rpartition(".")[0]
        for v in list(vars(sys.modules[name]).values()):
            used = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
            if isinstance(used, str) and used in sys.modules and used.rpartition(".")[0] == package:
                todo.append(used)
    return sorted(seen)


def fingerprint(a: Assignment, source_nb, reference_key: str, inputs_key: str | None = None) -> str:
    """What decides the autograded verdicts, and nothing else: the parts (ids, points, export
    code, check code), the source of every module the checks rest on (`verdict_modules`:
    shared helpers and tolerance constants included), the inputs (``inputs_key``, default
    `reference.inputs_key`), the reference values (``reference_key``), the sandbox's hidden
    packages and the source notebook's grade cells (ids, points). Fixing a typo in the
    notebook's text does not regrade the class."""
    h = hashlib.sha256(ENGINE_VERSION.encode())
    for p in a.parts:
        h.update(f"{p.grade_id}\0{p.points}\0{p.code}\0{source_of(p.check)}\0".encode())
    for name in verdict_modules(a):
        h.update(name.encode() + b"\0" + hashlib.sha256(module_source(name)).digest())
    # the generator, not this run's draw, where inputs are drawn fresh
    h.update((_inputs_key(a) if inputs_key is None else inputs_key).encode())
    h.update(reference_key.encode())
    h.update(repr(a.sandbox_offers).encode())
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader") or {}
        if md.get("grade") or md.get("task"):
            h.update(f"{md.get('grade_id')}\0{md.get('points')}\0{c.cell_type}\0".encode())
    return h.hexdigest()
