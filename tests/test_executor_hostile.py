"""Hostile notebooks against the executor (issue 23 items 1, 5, 6, 9): oversized messages on
every channel, floods that would grow the grader's memory, hooks the student cannot make
the autograder's code go through, and hidden inputs that must not come back in feedback.

Each runs real sandboxes (bubblewrap); time limits are far above what an honest notebook
needs and far below what an offender would take.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import nbformat
import psutil

from grading_helpers import HERE, LIMITS, _env, needs_bwrap, run_toy, toy, toy_score
from proc_state import can_run, ctrl_c, sigint_default, start_time

from gmmcourse.grading import channels, protocol
from gmmcourse.grading.checks import guarded
from gmmcourse.grading.engine import autograde

pytestmark = needs_bwrap

HUGE = 17 << 20  # over the 16 MiB cap of the outputs and replies


def _then_honest_is_graded() -> None:
    res = run_toy(toy.notebook())
    assert toy_score(res) == 5.0 and not res["events"], res


# --------------------------------------------------------------------------- item 1: oversized messages


def test_oversized_shell_reply_ends_the_cell_with_a_reason():
    """The reply to `raise ValueError('x' * 17 MiB)` is over the cap: before, the worker hung
    forever in a blocking send; now that cell is stopped with the reason, the kernel restarted
    and everything else graded, and the next submission in this process too."""
    res = run_toy(toy.notebook(extra_before=["raise ValueError('x' * (17 << 20))"]))
    assert any("over the size limit" in e for e in res["events"]), res["events"]
    assert res["infra_error"] is None
    assert toy_score(res) == 5.0, res["answers"]
    _then_honest_is_graded()


def test_oversized_iopub_output_is_dropped_with_a_reason():
    big = "from IPython.display import publish_display_data\npublish_display_data({'text/plain': 'x' * (17 << 20)})\n"
    res = run_toy(toy.notebook(extra_before=[big]))
    assert any("too large and was dropped" in e for e in res["events"]), res["events"]
    assert toy_score(res) == 5.0, res["answers"]
    _then_honest_is_graded()


def test_oversized_stdin_request_ends_the_cell_with_a_reason():
    """`input()` with a huge prompt, the kernel's stdin switched back on by the notebook."""
    ask = "get_ipython().kernel._allow_stdin = True\ninput('x' * (17 << 20))\n"
    res = run_toy(toy.notebook(extra_before=[ask]))
    assert any("over the size limit" in e for e in res["events"]), res["events"]
    assert toy_score(res) == 5.0, res["answers"]
    _then_honest_is_graded()


def test_oversized_export_answer_fails_that_part_only():
    """A part whose export itself sends too much: that part fails, the next one is read."""
    nb = toy.notebook("def mean(xs):\n    return [0.5] * (3 << 20)\n")
    res = run_toy(nb)
    assert not res["answers"]["test_mean"]["ok"]
    assert res["answers"]["test_counts"]["ok"], res["answers"]


def test_honest_large_outputs_and_answers_still_arrive():
    """The caps are per channel: a 300 KB output and a 2 MB answer (3 x 100,000 numbers) (under the 1 MiB output
    budget and the 4 MiB answer cap) arrive whole."""
    show = "from IPython.display import display\ndisplay({'text/plain': 'z' * 300_000}, raw=True)\n"
    res = run_toy(toy.notebook("def mean(xs):\n    return [0.125] * 100_000\n", extra_before=[show]))
    assert res["answers"]["test_mean"]["ok"] and len(res["answers"]["test_mean"]["json"]) > 1 << 20, res["events"]
    shown = [o for c in nbformat.reads(res["notebook"], 4).cells for o in c.get("outputs", [])
             if o.get("data", {}).get("text/plain", "").startswith("zzz")]
    assert len(shown) == 1 and len(shown[0]["data"]["text/plain"]) == 300_000
    assert not res["events"], res["events"]


# --------------------------------------------------------------------------- item 5: bounded queues

_FLOOD = textwrap.dedent("""\
    from IPython.display import publish_display_data
    block = 'x' * (1 << 20)
    for _ in range(600):  # 600 MB of outputs, read (and dropped past the budget) by the grader
        publish_display_data({'text/plain': block})
    k = get_ipython().kernel
    ident = k._parent_ident['shell']
    small = 'y' * (60 << 10)
    for _ in range(3000):  # 180 MB of stdin requests, which the grader never reads
        k.session.send(k.stdin_socket, 'input_request', {'prompt': small, 'password': False}, ident=ident)
    """)

_RSS_CHILD = textwrap.dedent("""\
    import json, resource, sys
    import nbformat, toy
    from gmmcourse.grading.executor import run_submission
    from gmmcourse.grading.sandbox import Limits
    limits = Limits(cell_timeout=60, notebook_timeout=120, export_timeout=20, memory_bytes=1 << 30)
    def run(nb):
        return run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                              json.dumps(toy._inputs()), limits, None)
    run(toy.notebook())  # the process at its working size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run(toy.notebook(extra_before=[sys.argv[1]]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "events": res["events"]}))
    """)


def test_flooding_notebook_cannot_grow_the_graders_memory():
    """600 MB of 1 MB outputs, then 180 MB of stdin requests the grader never reads: before,
    the grading process grew by 220 MiB (ZeroMQ queued what the kernel sent, up to 1,000
    messages a channel: 60 MB of stdin alone); the queues now hold a few messages each
    (`channels.channel_limits`), however much the notebook sends."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, _FLOOD], env=_env(), capture_output=True, text=True,
                         cwd=HERE, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["growth_kib"] < 40 << 10, got  # at most 9 x 1 MB of outputs queued, 2 x 60 KB of stdin
    assert channels.queued_bytes_bound(16 << 20) < 256 << 20


# --------------------------------------------------------------------------- item 1: Ctrl-C in --serial


def test_ctrl_c_in_serial_mode_stops_and_leaves_nothing(tmp_path):
    """SIGINT to `autograde --serial` grading a notebook whose oversized reply used to hang the
    event loop in a blocking send (where Ctrl-C did nothing): exit 130, no kernel, scratch or
    cgroup of this grader left."""
    course = toy.write_course(tmp_path, [])
    d = course / "submitted" / "hanger" / "toy"
    d.mkdir(parents=True)
    nbformat.write(toy.notebook(extra_before=["raise ValueError('x' * (17 << 20))", "import time\ntime.sleep(1000)"]),
                   d / "toy.ipynb")
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course), "--registry",
           "toy:ASSIGNMENTS", "--serial", "--no-progress", "--no-warm", "--cell-timeout", "6000",
           "--notebook-timeout", "6000"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=sigint_default)
    tree: set[int] = {p.pid}

    def mine(name: str) -> bool:
        parts = name.split("-")
        return len(parts) > 2 and parts[1].isdigit() and int(parts[1]) in tree

    def scratch():
        return {x for x in Path("/tmp").glob("gmg-*-*") if x.is_dir() and mine(x.name)}

    # Past the oversized cell: the first kernel was given up (before: never; the grader hung).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if [x for x in scratch() if (x / "k2.json").exists()]:
            break
        time.sleep(0.2)
    try:
        tree.update(c.pid for c in psutil.Process(p.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    started = {q: t for q in tree if (t := start_time(q)) is not None}  # pids are reused on a busy machine
    # The cell limits (6,000 s) are far above the sleeping cell (1,000 s): the grader is still in
    # that cell whenever the Ctrl-C lands, however loaded the machine (with a 3 s limit its
    # 12 s wall-clock bound cut the cell first when the Ctrl-C came late, and the run ended 0).
    _, err = ctrl_c(p, 600)  # a hang guard; the sleeping cell alone would take 1,000 s
    assert p.returncode == 130, err[-2000:]
    assert not scratch(), scratch()
    cgroups = {c for ctl in ("memory", "pids", "cpu") for c in Path(f"/sys/fs/cgroup/{ctl}").glob("gmmgrade-*")
               if mine(c.name)}
    assert not cgroups, cgroups
    # Killed before the grader exits: none can run code now (gone, a zombie, exiting, or with
    # SIGKILL pending; the mechanism, no wall-clock wait).
    alive = [q for q, t in started.items() if can_run(q, t)]
    assert not alive, [(q, _cmd(q)) for q in alive]


def _cmd(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "?"


# --------------------------------------------------------------------------- item 9: hooks


_HOOKS = textwrap.dedent("""\
    import re, time
    from IPython import get_ipython
    from IPython.display import publish_display_data
    _ip = get_ipython()
    RAN = []
    def _cleanup(lines):
        RAN.append('cleanup')
        return [l.replace('mean(', '(lambda *a: 0.0)(') for l in lines]
    def _post(lines):
        RAN.append('post')
        return [l.replace('counts(', '(lambda *a: {})(') for l in lines]
    def _forge(result):
        RAN.append('post_run_cell')
        m = re.search(r'_gmm_export_([0-9a-f]{32})', result.info.raw_cell or '')
        if m:
            publish_display_data({'application/x-gmm-export': m.group(1) + ':OK:[0, 0, 0]'})
    def _slow(info):
        if '_gmm_export_' in (info.raw_cell or ''):
            time.sleep(1000)
    import ast
    class _Zero(ast.NodeTransformer):
        def visit_Constant(self, node):
            RAN.append('ast')
            return node
    _ip.input_transformers_cleanup.append(_cleanup)
    _ip.input_transformers_post.append(_post)
    _ip.ast_transformers.append(_Zero())
    _ip.events.register('post_run_cell', _forge)
    _ip.events.register('pre_run_cell', _slow)
    _ip.display_pub.register_hook(lambda msg: RAN.append('display') or msg)
    """)
_SHADOWS = "list = None\ndict = None\ngetattr = None\n__import__ = None\nexec = None\ncompile = None\nstr = None\n"


def test_hooks_do_not_see_or_change_the_exports():
    """Every kind of IPython hook, installed after the builtins the old clearing cell used
    were shadowed (`list = None` made it fail, and the hooks then rewrote every export)."""
    nb = toy.notebook(extra_after=[_HOOKS + _SHADOWS])
    res = run_toy(nb)
    assert toy_score(res) == 5.0, res["answers"]


def test_replaced_builtins_namespace_does_not_break_the_exports():
    nb = toy.notebook(extra_after=["__builtins__ = {'__import__': None, 'list': None}\n"])
    assert toy_score(run_toy(nb)) == 5.0


def test_hooks_that_survive_clearing_fail_the_exports_closed():
    """A hook the clearing cannot remove (here: every new IPython event manager is born with
    the student's callback) is found by the check after clearing: no answer is read."""
    reborn = textwrap.dedent("""\
        import IPython.core.events as ev
        _Base = ev.EventManager
        class EventManager(_Base):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.callbacks['pre_run_cell'].append(lambda info: None)
        ev.EventManager = EventManager
        """)
    res = run_toy(toy.notebook(extra_after=[reborn]))
    assert toy_score(res) == 0.0
    assert all(a["error"] == protocol.NOT_QUIET for a in res["answers"].values()), res["answers"]


# --------------------------------------------------------------------------- item 6: hidden inputs


def test_exception_text_from_hidden_inputs_never_reaches_feedback(tmp_path):
    """Functions that raise with their (hidden) inputs in the message, as an exception (which
    the export turns into an ``"error"`` text, as the real exports do), as a BaseException that
    escapes every `except Exception`, and as a forged ``"error"`` answer: the feedback and the
    gradebook say which builtin exception it was, never its message."""
    # As the real assignments do: the export catches the exception and exports its text as
    # {"error": ...}, and the check (checks.guarded) relays that text to the student.
    catching = "try:\n    {}\nexcept Exception as _e:\n    answer = {{'error': type(_e).__name__ + ': ' + str(_e)}}\n"
    parts = tuple(replace(p, export=catching.format(p.export), check=guarded(p.check)) for p in toy.TOY.parts)
    registry = {"toy": replace(toy.TOY, parts=parts)}
    course = toy.write_course(tmp_path, [])
    leaky = {
        "raises": toy.notebook("def mean(xs):\n    raise ValueError('LEAK' + repr(xs))\n",
                               "class Mine(Exception):\n    pass\n"
                               "def counts(words):\n    raise Mine('LEAK' + repr(words))\n"),
        "exits": toy.notebook("def mean(xs):\n    raise SystemExit('LEAK' + repr(xs))\n",
                              "def counts(words):\n    return {'error': 'LEAK' + repr(words)}\n"),
    }
    for name, nb in leaky.items():
        d = course / "submitted" / name / "toy"
        d.mkdir(parents=True)
        nbformat.write(nb, d / "toy.ipynb")
    autograde(["toy"], course, registry=registry, limits=LIMITS, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    said = []
    for name in leaky:
        said.append((course / "feedback" / name / "toy" / "toy.html").read_text())
    con = sqlite3.connect(course / "gradebook.db")
    try:
        said.append("\n".join(con.iterdump()))
    finally:
        con.close()
    for text in said:
        assert "LEAK" not in text
        assert "-10" not in text and "'y'" not in text
    assert "raised a ValueError" in said[0] and "raised an exception" in said[0]
    assert "raised a SystemExit" in said[1]


def test_read_export_relays_no_student_text():
    n = "ab" * 16
    err = protocol.read_export(1, [n + ":ERR:KeyError: LEAK [1, 2]"], n, 1 << 20)
    assert not err["ok"] and "LEAK" not in err["error"] and "KeyError" in err["error"]
    fake = protocol.read_export(1, [n + ":ERR:LEAK_Error"], n, 1 << 20)
    assert "LEAK" not in fake["error"] and "an exception" in fake["error"]
    escaped = protocol.read_export(1, [n + ':OK:{"\\u0065rror": "ValueError: LEAK", "x": [{"error": "LEAK"}]}'],
                                   n, 1 << 20)
    assert escaped["ok"] and "LEAK" not in escaped["json"], escaped
    assert "raised a ValueError" in json.loads(escaped["json"])["error"]


# --------------------------------------------------------------------------- issue 24: load


def test_a_slow_grader_still_reads_every_answer(monkeypatch):
    """A loaded grading worker reads the kernel's outputs late (here: each IOPub message half
    a second after it came). The answer still counts: before, the export's output was given
    up 2 s after the reply (nbclient's `iopub_timeout`), and an honest part scored 0."""
    import asyncio

    import zmq
    from jupyter_client.channels import AsyncZMQSocketChannel

    real = AsyncZMQSocketChannel.get_msg

    async def late(self, *args, **kwargs):
        msg = await real(self, *args, **kwargs)
        if self.socket is not None and self.socket.socket_type == zmq.SUB:
            await asyncio.sleep(0.5)
        return msg

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", late)
    res = run_toy(toy.notebook(), LIMITS)
    assert toy_score(res) == 5.0, res["answers"]
