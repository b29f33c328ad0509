"""Which graded parts depend on a cell the executor stopped (time limit), read from the code.

A part depends on a stopped cell when the names its export reads from the student's namespace
(`part_reads`) meet the names that cell assigns, or that any later cell assigns from them (a
forward data flow over the executed notebook's code cells, function bodies included:
`tainted_names`). Only those parts get the time-limit note (`checks.time_limit_note`); a part
that lost points for another reason is not told that the clock was the cause.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap

__all__ = ["part_reads", "stopped_cells", "tainted_names", "events_for_part"]

_STOPPED = re.compile(r"^Cell (\d+) was stopped: .*time limit")
_NOT_RUN = re.compile(r"time limit .*; cells ([\d, ]+) were not run")


def _source_tree(export) -> tuple[ast.AST, dict]:
    if isinstance(export, str):
        return ast.parse(export), {}
    options = {}
    if isinstance(export, functools.partial):
        options = dict(export.keywords)
        export = export.func
    return ast.parse(textwrap.dedent(inspect.getsource(export))), options


def part_reads(part) -> frozenset:
    """The student names a part's export reads: ``var(student, "x")``, ``student.get("x")``,
    ``student["x"]`` (a name bound by the part's options counts as its value), or, for an export
    given as source, every name it loads."""
    tree, options = _source_tree(part.export)
    if isinstance(part.export, str):
        return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and isinstance(options.get(node.id), str):
            return options[node.id]
        return None

    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and len(n.args) >= 2 and isinstance(n.func, ast.Name) and n.func.id == "var":
            names.add(value(n.args[1]))
        elif (isinstance(n, ast.Call) and n.args and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
              and isinstance(n.func.value, ast.Name) and n.func.value.id == "student"):
            names.add(value(n.args[0]))
        elif isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "student":
            names.add(value(n.slice))
    return frozenset(names - {None})


def stopped_cells(events) -> list[tuple[int, str]]:
    """(cell index, event) for every cell stopped or not run because of a time limit (cells are
    numbered from 1 in the events, as the student sees them)."""
    out = []
    for e in events or []:
        e = str(e)
        m = _STOPPED.match(e)
        if m:
            out.append((int(m.group(1)) - 1, e))
            continue
        m = _NOT_RUN.search(e)
        if m:
            out += [(int(i) - 1, e) for i in m.group(1).replace(" ", "").split(",") if i]
    return out


def _names(source: str) -> tuple[set, set]:
    """(names loaded, names stored) anywhere in a cell, function bodies included; a cell that
    does not parse loads and stores nothing we can see."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    loads, stores = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stores.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            stores.update((a.asname or a.name).split(".")[0] for a in n.names)
    return loads, stores


def tainted_names(cells: list[str], stopped: set[int]) -> set[str]:
    """Names that a stopped cell assigns, or that a later cell assigns from one of them."""
    tainted: set[str] = set()
    for i, src in enumerate(cells):
        loads, stores = _names(src)
        if i in stopped or loads & tainted:
            tainted |= stores
    return tainted


@functools.lru_cache(maxsize=4)
def _code_cells(notebook_json: str) -> tuple[str, ...]:
    import nbformat

    nb = nbformat.reads(notebook_json, as_version=4)
    return tuple(c.source if c.cell_type == "code" else "" for c in nb.cells)


def events_for_part(part, events, notebook) -> list[str]:
    """The time-limit events that concern `part` in the executed `notebook` (nbformat JSON, an
    nbformat notebook, or None): those of stopped cells whose results the part reads."""
    stops = stopped_cells(events)
    if not stops or notebook is None:
        return []
    try:
        cells = (_code_cells(notebook) if isinstance(notebook, str)
                 else tuple(c.source if c.cell_type == "code" else "" for c in notebook.cells))
    except Exception:  # an unreadable notebook: every stop may concern every part
        return [e for _, e in stops]
    reads = part_reads(part)
    out = []
    for idx, event in stops:
        if event not in out and reads & tainted_names(cells, {idx}):
            out.append(event)
    return out
