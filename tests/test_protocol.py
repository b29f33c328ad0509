"""What crosses into the student's kernel as text (`gmmcourse.grading.protocol`), run in-process.

The export cell is executed here as the kernel would execute it (its globals standing for the
notebook's), with IPython's ``publish_display_data`` replaced by a list: no sandbox, no kernel.
The sandboxed runs are in tests/test_executor_hostile.py and tests/test_grading_engine.py."""

from __future__ import annotations

import ast
import builtins
import functools
import json

import IPython.display
import pytest

from gmmcourse.grading import protocol, spec
from gmmcourse.grading.kernel_side import floats, var
from gmmcourse.grading.sandbox import Limits

EXPORT_BYTES = Limits().export_bytes


def _export_scaled(student, inputs, scale):
    names = sorted(k for k in student if not k.startswith("__"))
    return {"names": names, "v": floats(var(student, "v")) * scale, "n": inputs["n"]}


def _export_raises(student, inputs):
    raise KeyError(f"hidden {inputs['n']}")


def _run_cell(code: str, user: dict, monkeypatch) -> list:
    """Execute an export cell with `user` as the notebook's globals; the published outputs."""
    sent = []
    monkeypatch.setattr(IPython.display, "publish_display_data", lambda data, metadata=None: sent.append(data))
    exec(compile(code, "<cell>", "exec"), user)
    return [d[protocol.EXPORT_MIME] for d in sent]


def test_an_export_function_runs_in_one_wrapper(monkeypatch):
    """The part's code is straight-line (no wrapper of its own) inside the protocol's one wrapper;
    the export sees the notebook's names, less those shadowing a builtin and the grader's own;
    the student's ``floats`` does not replace the helper of that name."""
    part = spec.export_code(functools.partial(_export_scaled, scale=2.0))
    assert not [n for n in ast.walk(ast.parse(part)) if isinstance(n, (ast.FunctionDef, ast.Lambda))]
    nonce = protocol.new_nonce()
    cell = protocol.export_code(part, json.dumps({"n": 3}), nonce)
    assert [n.name for n in ast.parse(cell).body if isinstance(n, ast.FunctionDef)] == [f"_gmm_export_{nonce}"]

    user = {"__builtins__": builtins, "v": [1.0, 2.5], "floats": lambda x: "the student's",
            "float": None, "_gx_mine": 1, "answer": 0}
    published = _run_cell(cell, user, monkeypatch)
    got = protocol.read_export(len(published), published, nonce, EXPORT_BYTES)
    assert got["ok"], got
    assert json.loads(got["json"]) == {"names": ["floats", "v"], "v": [2.0, 5.0], "n": 3}
    assert sorted(user) == ["__builtins__", "_gx_mine", "answer", "float", "floats", "v"]  # nothing left behind


def test_an_export_function_has_a_namespace_of_its_own():
    """Run in-process (`grading.local`), in a namespace the student's names fill: a name the
    export function reads (a builtin, a helper) is never the student's."""
    part = spec.export_code(functools.partial(_export_scaled, scale=1.0))
    ns = {"__builtins__": builtins, "inputs": {"n": 1}, "v": [3.0], "sorted": lambda xs: ["forged"],
          "floats": lambda x: [0.0], "var": lambda s, n: [0.0]}
    exec(compile(part, "<export>", "exec"), ns)
    assert ns["answer"] == {"names": ["floats", "sorted", "v", "var"], "v": [3.0], "n": 1}
    assert not [k for k in ns if k.startswith("_gx_")]


def test_an_export_that_raises_is_an_error_answer_without_its_message(monkeypatch):
    """As before the wrappers were merged: the function's exception becomes an ``{"error"}``
    answer, whose text the trusted reading replaces by the fixed sentence (type kept)."""
    nonce = protocol.new_nonce()
    cell = protocol.export_code(spec.export_code(_export_raises), json.dumps({"n": 424242}), nonce)
    published = _run_cell(cell, {"__builtins__": builtins}, monkeypatch)
    got = protocol.read_export(len(published), published, nonce, EXPORT_BYTES)
    assert got["ok"], got
    error = json.loads(got["json"])["error"]
    assert error == protocol.raised_message("KeyError") and "424242" not in error


@pytest.mark.parametrize("source, expected", [("answer = inputs['n'] + 1", {"ok": True, "json": "4"}),
                                              ("answer = float", {"ok": False}),
                                              ("pass", {"ok": False})])
def test_a_source_export_runs_in_the_same_wrapper(monkeypatch, source, expected):
    nonce = protocol.new_nonce()
    published = _run_cell(protocol.export_code(source, json.dumps({"n": 3}), nonce), {"__builtins__": builtins},
                          monkeypatch)
    got = protocol.read_export(len(published), published, nonce, EXPORT_BYTES)
    assert {k: got[k] for k in expected} == expected


def test_exactly_one_export_output_is_accepted():
    n = "ab" * 16
    ok = protocol.read_export(1, [n + ":OK:[1]"], n, EXPORT_BYTES)
    assert ok == {"ok": True, "json": "[1]"}
    two = protocol.read_export(2, [n + ":OK:[1]", n + ":OK:[2]"], n, EXPORT_BYTES)
    assert not two["ok"] and "more than one answer" in two["error"]
    stale = protocol.read_export(1, ["cd" * 16 + ":OK:[1]"], n, EXPORT_BYTES)
    assert not stale["ok"]
    err = protocol.read_export(1, [n + ":ERR:KeyError: \x1b[31m" + "A=b " * 200], n, EXPORT_BYTES)
    assert not err["ok"] and len(err["error"]) <= 160 and "\x1b" not in err["error"]


def test_nonces_are_fresh():
    assert len({protocol.new_nonce() for _ in range(100)}) == 100
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in (protocol.new_nonce(),))
