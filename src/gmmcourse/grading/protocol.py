"""What crosses into the student's kernel as code text, and how what comes back is read.

Everything sent runs in the student's kernel next to the student's objects, so it never looks
a name up where the student could have put something else: the real builtins are reached
through attribute lookups on literals (`REAL_BUILTINS`, which no assignment in the notebook
can shadow), and the autograder's own code runs in a fresh namespace with those builtins.

* `quiesce_expressions`: clears every IPython hook (event callbacks, input and AST
  transformers, display hooks, trace, profile and ``sys.monitoring`` functions) and reports
  what is left. It is sent as a *user expression* of an empty request, evaluated by the kernel
  after the request ran: no input or AST transformer ever sees it. The exports run only if it
  answers `quiet_token` (fail closed).
* `export_code`: the one wrapper around a part's export: it runs the export's code (for an
  export function, `function_export`) in a fresh namespace and publishes ``nonce:OK:<json>``
  or ``nonce:ERR:<type>``, tagged with a nonce (`new_nonce`) drawn for that request only.
* `function_export`: the code of a part whose export is a function: the kernel-side helpers
  (`gmmcourse.grading.kernel_side`) and the function, run in a namespace of their own (no
  name of the student's can shadow theirs), called on the student's names and the inputs.
* `read_export`: the trusted reading of that answer. Nothing the student's code wrote while it
  held the hidden inputs reaches feedback: an exception is reported by a fixed sentence and,
  when it is one, a builtin exception's class name (never its message), and every ``"error"``
  text inside an exported answer is replaced the same way.

Not defended here (the checks are): a student who replaces modules in ``sys.modules`` or the
builtins themselves, or installs an audit hook (which Python cannot remove), controls what the
kernel publishes; exports therefore carry raw data only and every verdict is computed on the
trusted side.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
from typing import Any

__all__ = ["EXPORT_MIME", "REAL_BUILTINS", "new_nonce", "quiesce_expressions", "quiet_token", "is_quiet",
           "export_code", "function_export", "read_export", "raised_message", "scrub_errors", "NO_ANSWER",
           "NOT_QUIET"]

EXPORT_MIME = "application/x-gmm-export"

REAL_BUILTINS = (
    "(lambda _b: _b if _b.__class__ is {}.__class__ else _b.__dict__)("
    "[_c for _c in ().__class__.__base__.__subclasses__() "
    "if ().__class__.__class__.__dict__['__name__'].__get__(_c) == 'catch_warnings']"
    "[0].__init__.__globals__['__builtins__'])"
)
"""An expression for the builtins dict of the standard library (that of ``warnings``), which
uses no name at all: neither ``list = None`` nor a replaced ``__builtins__`` or ``__import__`` in
the notebook's namespace changes it. The first class so named is the real one (classes are
listed in creation order; the notebook's come later)."""

_QUIESCE = """\
import sys, threading
from IPython.core.getipython import get_ipython
left = []
ip = get_ipython()
if ip is None:
    left.append("no IPython shell")
else:
    from IPython.core.events import EventManager, available_events
    from IPython.core.inputtransformer2 import TransformerManager
    ip.events = EventManager(ip, available_events)
    tm = TransformerManager()
    tm.cleanup_transforms, tm.line_transforms, tm.token_transformers = [], [], []
    ip.input_transformer_manager = tm
    ip.input_transformers_post = []
    ip.ast_transformers = []
    ip.custom_exceptions = ()
    hooks = getattr(ip.display_pub, "_hooks", [])
    del hooks[:]
    plain = ip.display_formatter.formatters.get("text/plain")
    if plain is not None:
        plain.type_printers.pop(str, None)
    left += ["events." + k for k, v in ip.events.callbacks.items() if v]
    left += [k for k in ("cleanup_transforms", "line_transforms", "token_transformers")
             if getattr(ip.input_transformer_manager, k)]
    left += [k for k in ("input_transformers_post", "ast_transformers") if getattr(ip, k)]
    left += ["display hooks"] if getattr(ip.display_pub, "_hooks", []) else []
sys.settrace(None)
sys.setprofile(None)
threading.settrace_all_threads(None)
threading.setprofile_all_threads(None)
threading.settrace(None)
threading.setprofile(None)
mon = getattr(sys, "monitoring", None)
if mon is not None:
    events = [getattr(mon.events, n) for n in dir(mon.events) if n.isupper() and n != "NO_EVENTS"]
    for tool in range(6):
        if mon.get_tool(tool) is not None:
            mon.set_events(tool, 0)
            for ev in events:
                mon.register_callback(tool, ev, None)
            mon.free_tool_id(tool)
    left += ["sys.monitoring tool %d" % t for t in range(6) if mon.get_tool(t) is not None]
left += ["trace function"] if sys.gettrace() or sys.getprofile() else []
left += ["thread trace function"] if threading.gettrace() or threading.getprofile() else []
result = TOKEN if not left else "left: " + ", ".join(left)
"""

NOT_QUIET = ("the notebook's hooks into the kernel could not be removed (it interfered with the "
             "autograder), so no answer was read")
NO_ANSWER = "no answer could be read from the notebook"

BUILTIN_EXCEPTIONS = frozenset(
    n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
)
_TYPE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*(?::|$)")


def new_nonce() -> str:
    """A fresh random nonce (128 bits, hex) for one request: its answer must carry it."""
    return secrets.token_hex(16)


def quiet_token(nonce: str) -> str:
    return f"gmm-quiet-{nonce}"


def quiesce_expressions(nonce: str) -> dict[str, str]:
    """``user_expressions`` of an empty execute request: clears the hooks in a fresh namespace
    with the real builtins; evaluates to `quiet_token` if nothing is left."""
    code = _QUIESCE.replace("TOKEN", repr(quiet_token(nonce)))
    expr = (f"(lambda _b: (lambda _g: (_b['exec']({code!r}, _g), _g['result'])[1])"
            f"({{'__builtins__': _b, '__name__': 'gmm_quiesce'}}))({REAL_BUILTINS})")
    return {"q": expr}


def is_quiet(reply_content: Any, nonce: str) -> bool:
    """True if an execute reply carries the quiesce expression's `quiet_token`."""
    try:
        q = reply_content["user_expressions"]["q"]
        return q["status"] == "ok" and q["data"]["text/plain"] == repr(quiet_token(nonce))
    except (KeyError, TypeError):
        return False


def export_code(src: str, inputs_json: str, nonce: str) -> str:
    """The export request: runs `src` in a fresh namespace (the notebook's globals, less those
    that shadow a builtin; the real builtins), publishes ``nonce:OK:<json>`` or
    ``nonce:ERR:<exception class name>`` (never the exception's message)."""
    fn = f"_gmm_export_{nonce}"
    return f"""def {fn}(_src, _inputs):
    _b = {REAL_BUILTINS}
    _imp = _b["__import__"]
    _j = _imp("json")
    _pub = _imp("IPython.display", None, None, ("publish_display_data",)).publish_display_data
    _user = _imp("sys")._getframe(0).f_globals
    def _default(o):
        if _b["hasattr"](o, "tolist"):
            return o.tolist()
        raise _b["TypeError"]("not JSON serialisable")
    try:
        _ns = {{}}
        for _k, _v in _b["list"](_user.items()):
            if _b["type"](_k) is _b["str"] and _k not in _b and _k not in ("answer", "inputs") \\
                    and not _k.startswith(("_gx_", "_gmm_")):
                _ns[_k] = _v
        _ns["__builtins__"] = _b
        _ns["inputs"] = _j.loads(_inputs)
        _b["exec"](_b["compile"](_src, "<export>", "exec"), _ns)
        if "answer" not in _ns:
            raise _b["NameError"]("no answer was produced")
        _out = "OK:" + _j.dumps(_ns["answer"], allow_nan=False, default=_default)
    except _b["BaseException"] as _e:
        _out = "ERR:" + _b["type"].__dict__["__name__"].__get__(_b["type"](_e))[:64]
    _pub({{"{EXPORT_MIME}": "{nonce}:" + _out}}, metadata={{}})
{fn}({src!r}, {inputs_json!r})
del {fn}
"""


def function_export(name: str, source: str, options: dict, helpers: str) -> str:
    """The code of an export function's part (run by `export_code`'s wrapper, or in-process by
    `gmmcourse.grading.local`): executes `helpers` (the kernel-side helpers' source) and
    `source` (the function `name`) in a namespace of their own, calls the function on the
    student's names and ``inputs`` with `options`, and assigns ``answer``: its value as plain
    data (``to_json``), or ``{"error": "<type>: <message>"}`` if it raised an Exception
    (`read_export` keeps the type only)."""
    return (
        "_gx_student, _gx_inputs = {_k: _v for _k, _v in globals().items() if _k not in ('inputs', '__builtins__')}, inputs\n"
        "_gx_env = {'__name__': 'gmm_export', '__builtins__': __builtins__}\n"
        "try:\n"
        f"    exec(compile({helpers!r}, '<kernel_side>', 'exec'), _gx_env)\n"
        f"    exec(compile({source!r}, '<export {name}>', 'exec'), _gx_env)\n"
        f"    answer = _gx_env['to_json'](_gx_env[{name!r}](_gx_student, _gx_inputs, **{options!r}))\n"
        "except Exception as _gx_e:\n"
        "    answer = {'error': (type(_gx_e).__name__ + ': ' + str(_gx_e))[:300]}\n"
        "del _gx_student, _gx_inputs, _gx_env\n"
    )


def raised_message(text: Any = None) -> str:
    """The fixed feedback for an exception raised on the autograder's inputs: the class name
    if the text starts with a builtin exception's, nothing else of the text."""
    m = _TYPE.match(text) if isinstance(text, str) else None
    kind = m.group(1) if m and m.group(1) in BUILTIN_EXCEPTIONS else None
    what = f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind}" if kind else "an exception"
    return f"your code raised {what} when the autograder called it on its own inputs (the message is not shown)"


def scrub_errors(value: Any) -> int:
    """Replace, in place, the text of every ``"error"`` string of `value`'s dicts (the exports'
    way to say that the student's code raised, with its message) by `raised_message`; returns
    how many were replaced."""
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("error"), str):
                v["error"] = raised_message(v["error"])
                n += 1
            stack.extend(x for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend(x for x in v if isinstance(x, (dict, list)))
    return n


def read_export(count: int, payloads: list, nonce: str, export_bytes: int) -> dict:
    """The trusted reading of one export's published answers: ``{"ok": True, "json": text}``
    or ``{"ok": False, "error": fixed text}``."""
    if count == 0:
        return {"ok": False, "error": NO_ANSWER}
    if count > 1:
        return {"ok": False, "error": "the notebook published more than one answer for this part "
                                      "(it interfered with the autograder)"}
    v = payloads[0]
    if not isinstance(v, str) or not v.startswith(nonce + ":"):
        return {"ok": False, "error": "the answer did not come from the autograder's request "
                                      "(the notebook interfered with the autograder)"}
    payload = v[len(nonce) + 1:]
    if len(payload) > export_bytes:
        return {"ok": False, "error": f"the answer is too large (limit {export_bytes >> 20} MiB)"}
    if payload.startswith("ERR:"):
        return {"ok": False, "error": raised_message(payload[4:])}
    if not payload.startswith("OK:"):
        return {"ok": False, "error": "garbled answer"}
    text = payload[3:]
    try:  # parsed whatever it looks like: the kernel may spell "error" with escapes
        value = json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return {"ok": False, "error": "the answer is not plain data"}
    if scrub_errors(value):
        text = json.dumps(value)
    return {"ok": True, "json": text}
