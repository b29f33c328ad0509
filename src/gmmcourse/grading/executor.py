"""Run one submission: student cells in a sandboxed kernel, then the trusted exports.

This module runs on a grading worker (trusted, outside the sandbox). It receives plain data
(notebook text, export sources, inputs) and returns plain data (executed notebook, exported
answers as JSON *text*, events). It never decides a verdict: the parent parses and checks the
answers.

Export channel: after the student's cells, for each part the worker sends a fresh
execute_request whose code wraps ``Part.export`` and publishes the answer as a display_data
message tagged with a random nonce generated now. Only outputs that nbclient attributes to
that very request (parent msg_id) are read, so nothing printed by the student's cells can
pre-fill an answer; the payload is size-capped here and strictly parsed by the parent.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict
from typing import Any

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .sandbox import CGroup, Limits, SandboxConfig, kernel_command, make_scratch

__all__ = ["run_submission", "EXPORT_MIME"]

EXPORT_MIME = "application/x-gmm-export"


class _SandboxKernelManager(AsyncKernelManager):
    """Starts the ipykernel inside bubblewrap; ZeroMQ over Unix sockets in the scratch dir."""

    def __init__(self, *, sandbox_argv, max_message_bytes, **kw):
        super().__init__(**kw)
        self._sandbox_argv = sandbox_argv
        self._max_message_bytes = max_message_bytes
        self._client_ctx = None

    def format_kernel_cmd(self, extra_arguments=None):  # noqa: D102
        return list(self._sandbox_argv)

    def client(self, **kwargs):  # noqa: D102
        ctx = zmq.asyncio.Context()
        ctx.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        ctx.setsockopt(zmq.LINGER, 0)
        self._client_ctx = ctx
        kwargs["context"] = ctx
        return super().client(**kwargs)

    def close_client_context(self):
        if self._client_ctx is not None:
            try:
                self._client_ctx.destroy(linger=0)
            except Exception:  # pragma: no cover
                pass
            self._client_ctx = None


def _msg_size(msg: dict) -> int:
    c = msg.get("content", {})
    t = msg.get("msg_type")
    if t == "stream":
        return len(c.get("text", ""))
    if t in ("display_data", "execute_result", "update_display_data"):
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in c.get("data", {}).values())
    if t == "error":
        return sum(len(x) for x in c.get("traceback", [])) + len(c.get("evalue", ""))
    return 0


class _Client(NotebookClient):
    """nbclient with an output budget (a 100 MB print must not blow up the grader)."""

    output_budget: int = 1 << 20
    output_limit: int = 1 << 20
    truncated: bool = False
    export_index: int = -1

    def output(self, outs, msg, display_id, cell_index):  # noqa: D102
        if cell_index == self.export_index:
            return super().output(outs, msg, display_id, cell_index)
        size = _msg_size(msg)
        if size > self.output_budget and msg.get("msg_type") == "stream" and self.output_budget > 0:
            msg = {**msg, "content": {**msg["content"], "text": msg["content"].get("text", "")[: self.output_budget]}}
            super().output(outs, msg, display_id, cell_index)
            self.output_budget = 0
            size = 1
        if size > self.output_budget:
            if not self.truncated:
                outs.append(
                    nbformat.v4.new_output(
                        "stream",
                        name="stderr",
                        text="\n[autograder: output truncated: the notebook printed more than "
                        f"{self.output_limit} characters]\n",
                    )
                )
                self.truncated = True
            self.output_budget = 0
            return None
        self.output_budget -= size
        return super().output(outs, msg, display_id, cell_index)


def _export_code(src: str, inputs_json: str, nonce: str) -> str:
    fn = f"_gmm_export_{nonce}"
    return f"""def {fn}(_src, _inputs):
    import json as _j
    from IPython.display import publish_display_data as _pub
    def _default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"{{type(o).__name__}} is not JSON serialisable")
    try:
        _ns = dict(globals())
        _ns.pop("answer", None)
        _ns["inputs"] = _j.loads(_inputs)
        exec(compile(_src, "<export>", "exec"), _ns)
        if "answer" not in _ns:
            raise NameError("no answer was produced")
        _out = "OK:" + _j.dumps(_ns["answer"], allow_nan=False, default=_default)
    except BaseException as _e:
        _out = "ERR:" + type(_e).__name__ + ": " + str(_e)[:300]
    _pub({{"{EXPORT_MIME}": "{nonce}:" + _out}}, metadata={{}})
{fn}({src!r}, {inputs_json!r})
del {fn}
"""


class _Session:
    """A (re)startable sandboxed kernel attached to the submission's notebook."""

    def __init__(self, nb, limits: Limits, cfg: SandboxConfig, scratch: str, cgroup: CGroup):
        self.nb, self.limits, self.cfg, self.scratch, self.cgroup = nb, limits, cfg, scratch, cgroup
        self.client: _Client | None = None
        self.km: _SandboxKernelManager | None = None
        self.n = 0
        self.output_budget = limits.output_bytes
        self.truncated = False
        self.dropped_messages = 0

    async def start(self) -> None:
        self.n += 1
        conn = os.path.join(self.scratch, f"k{self.n}.json")
        argv = kernel_command(self.cfg, self.limits, self.scratch, conn, self.cgroup)
        km = _SandboxKernelManager(
            sandbox_argv=argv,
            max_message_bytes=self.limits.max_message_bytes,
            transport="ipc",
            ip=os.path.join(self.scratch, f"s{self.n}"),
            connection_file=conn,
            kernel_name="python3",
        )
        client = _Client(
            self.nb,
            km=km,
            timeout=int(self.limits.cell_timeout),
            startup_timeout=int(self.limits.startup_timeout),
            allow_errors=True,
            interrupt_on_timeout=False,
            iopub_timeout=2,
            raise_on_iopub_timeout=False,
            record_timing=False,
            kernel_name="python3",
            resources={"metadata": {"path": self.scratch}},
        )
        client.output_budget = self.output_budget
        client.output_limit = self.limits.output_bytes
        client.truncated = self.truncated
        self.km, self.client = km, client
        self.mon = None
        try:
            await client.async_start_new_kernel(
                cwd=self.scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
            await client.async_start_new_kernel_client()
            self._watch_iopub()
        except BaseException:
            await self.stop()
            raise

    def _watch_iopub(self) -> None:
        sock = self.client.kc.iopub_channel.socket
        self.mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    async def _iopub_dropped(self) -> bool:
        """True if ZeroMQ dropped the IOPub connection (a message over the size cap); the
        channel is then re-made so that later outputs and exports still arrive."""
        if self.mon is None:
            return False
        dropped = False
        while True:
            try:
                await self.mon.recv_multipart(flags=zmq.NOBLOCK)
                dropped = True
            except zmq.Again:
                break
        if dropped:
            kc = self.client.kc
            try:
                self.mon.close(linger=0)
                kc.iopub_channel.socket.disable_monitor()
            except Exception:
                pass
            kc.iopub_channel.close()
            kc._iopub_channel = None
            self._watch_iopub()
            await asyncio.sleep(0.3)  # let the new subscription reach the kernel
            self.dropped_messages += 1
        return dropped

    async def stop(self) -> None:
        if self.client is not None:
            self.output_budget = self.client.output_budget
            self.truncated = self.client.truncated
            try:
                if self.client.kc is not None:
                    self.client.kc.stop_channels()
            except Exception:
                pass
        if self.km is not None:
            try:
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), 10)
            except BaseException:
                pass
            self.km.close_client_context()
        self.cgroup.kill_all()
        self.client = self.km = None

    async def run(self, cell, index: int, timeout: float) -> str | None:
        """Execute one cell; returns None, ``"timeout"`` or ``"died"``."""
        assert self.client is not None
        self.client.timeout = max(1, int(timeout))
        try:
            await self.client.async_execute_cell(cell, index)
        except CellTimeoutError:
            return "timeout"
        except DeadKernelError:
            return "died"
        except asyncio.CancelledError:
            raise
        except Exception:  # garbled messages from a tampered kernel, zmq errors, ...
            return "garbled"
        if await self._iopub_dropped():
            cell.outputs.append(
                nbformat.v4.new_output(
                    "stream",
                    name="stderr",
                    text=f"[autograder: output larger than {self.limits.max_message_bytes >> 20} MiB dropped]\n",
                )
            )
        return None

    async def run_extra(self, cell, timeout: float) -> str | None:
        """Execute a cell that is not part of the notebook (replays, exports)."""
        assert self.client is not None
        self.nb.cells.append(cell)
        idx = len(self.nb.cells) - 1
        self.client.export_index = idx
        try:
            return await self.run(cell, idx, timeout)
        finally:
            self.client.export_index = -1
            del self.nb.cells[idx]


def _why(kind: str, limits: Limits, cgroup: CGroup, oom_before: int) -> str:
    if kind == "timeout":
        if cgroup.pids_hit():
            return f"it exceeded the time limit (and tried to start more than {limits.max_pids} processes or threads)"
        return "it exceeded the time limit"
    if cgroup.oom_events() > oom_before:
        return f"it exceeded the memory limit ({limits.memory_bytes >> 20} MiB)"
    if kind == "garbled":
        return "the kernel sent invalid messages (was the notebook tampering with Jupyter?)"
    if cgroup.pids_hit():
        return f"it started too many processes or threads (limit {limits.max_pids})"
    return "the Python kernel died (e.g. os._exit, a crash or the memory limit)"


async def _grade(nb, exports, inputs_json, limits, cfg, scratch, cgroup) -> dict[str, Any]:
    events: list[str] = []
    answers: dict[str, dict] = {}
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i in code:
        nb.cells[i].outputs = []
        nb.cells[i].execution_count = None
    sess = _Session(nb, limits, cfg, scratch, cgroup)
    t0 = time.monotonic()
    deadline = t0 + limits.notebook_timeout
    skipped: set[int] = set()
    restarts = 0
    alive = False
    cells_s = 0.0

    def mark(idx: int, text: str) -> None:
        nb.cells[idx].outputs.append(
            nbformat.v4.new_output("stream", name="stderr", text=f"[autograder: {text}]\n")
        )

    async def restart(upto: int) -> bool:
        """New kernel; replay code cells before ``upto`` (skipping failed ones)."""
        nonlocal restarts, alive
        while True:
            await sess.stop()
            alive = False
            if restarts >= limits.max_restarts:
                events.append("Too many kernel restarts; the remaining cells were not run.")
                return False
            restarts += 1
            try:
                await sess.start()
            except Exception as e:  # pragma: no cover - infrastructure
                events.append(f"The kernel could not be restarted ({type(e).__name__}).")
                return False
            alive = True
            ok = True
            for j in code:
                if j >= upto:
                    break
                if j in skipped:
                    continue
                replay = nbformat.from_dict(dict(nb.cells[j]))
                left = deadline - time.monotonic()
                if left <= 0:
                    events.append("The notebook time limit was reached while re-running cells.")
                    return True
                oom0 = cgroup.oom_events()
                bad = await sess.run_extra(replay, min(limits.cell_timeout, left))
                if bad:
                    skipped.add(j)
                    events.append(
                        f"Cell {j + 1} failed when re-run after a restart ({_why(bad, limits, cgroup, oom0)}); skipped."
                    )
                    ok = False
                    break
            if ok:
                return True

    try:
        try:
            await sess.start()
            alive = True
        except Exception as e:
            events.append(f"The kernel could not be started ({type(e).__name__}: {str(e)[:200]}).")
            alive = False
        pos = 0
        while alive and pos < len(code):
            idx = code[pos]
            left = deadline - time.monotonic()
            if left <= 0:
                rest = [str(j + 1) for j in code[pos:]]
                events.append(
                    f"The notebook time limit ({limits.notebook_timeout:.0f} s) was reached; "
                    f"cells {', '.join(rest)} were not run."
                )
                for j in code[pos:]:
                    skipped.add(j)
                    mark(j, "not run: notebook time limit reached")
                break
            oom0 = cgroup.oom_events()
            tc = time.monotonic()
            bad = await sess.run(nb.cells[idx], idx, min(limits.cell_timeout, left))
            cells_s += time.monotonic() - tc
            if bad:
                why = _why(bad, limits, cgroup, oom0)
                if bad == "timeout" and left < limits.cell_timeout:
                    why = "the notebook time limit was reached"
                events.append(f"Cell {idx + 1} was stopped: {why}. It was skipped; grading continued.")
                mark(idx, f"cell stopped: {why}")
                skipped.add(idx)
                alive = await restart(idx)
            pos += 1

        # Exports: trusted code sent now, read back only from its own execution.
        for grade_id, src in exports:
            if not alive:
                answers[grade_id] = {"ok": False, "error": "the notebook's kernel was not running"}
                continue
            nonce = secrets.token_hex(16)
            cell = nbformat.v4.new_code_cell(_export_code(src, inputs_json, nonce))
            oom0 = cgroup.oom_events()
            bad = await sess.run_extra(cell, limits.export_timeout)
            if bad:
                answers[grade_id] = {"ok": False, "error": f"exporting the answer failed: {_why(bad, limits, cgroup, oom0)}"}
                alive = await restart(len(nb.cells))
                continue
            payload = None
            for out in cell.outputs:
                if out.get("output_type") == "display_data":
                    v = out.get("data", {}).get(EXPORT_MIME)
                    if isinstance(v, str) and v.startswith(nonce + ":"):
                        payload = v[len(nonce) + 1 :]
                        break
            if payload is None:
                answers[grade_id] = {"ok": False, "error": "no answer could be read from the notebook"}
            elif len(payload) > limits.export_bytes:
                answers[grade_id] = {"ok": False, "error": "the answer is too large"}
            elif payload.startswith("OK:"):
                answers[grade_id] = {"ok": True, "json": payload[3:]}
            else:
                answers[grade_id] = {"ok": False, "error": payload[4:][:400] if payload.startswith("ERR:") else "garbled answer"}
    finally:
        await sess.stop()
    if sess.dropped_messages:
        events.append("Some output was too large and was dropped (it is not needed for grading).")
    return {
        "events": events,
        "answers": answers,
        "restarts": max(0, restarts),
        "cells_s": cells_s,
        "duration": time.monotonic() - t0,
    }


def run_submission(
    nb_text: str,
    exports: list[tuple[str, str]],
    inputs_json: str,
    limits: Limits | dict | None = None,
    cfg: SandboxConfig | dict | None = None,
) -> dict[str, Any]:
    """Grade-side execution of one submission (runs on a worker; returns plain data).

    Returns ``{"notebook": executed notebook JSON text, "events": [...], "answers":
    {grade_id: {"ok": bool, "json"|"error": str}}, "duration": s}``.
    """
    limits = Limits(**limits) if isinstance(limits, dict) else (limits or Limits())
    cfg = SandboxConfig(**cfg) if isinstance(cfg, dict) else (cfg or SandboxConfig())
    nb = nbformat.reads(nb_text, as_version=4)
    scratch = make_scratch()
    cgroup = CGroup(limits)
    try:
        res = asyncio.run(_grade(nb, exports, inputs_json, limits, cfg, scratch, cgroup))
    finally:
        cgroup.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    res["notebook"] = nbformat.writes(nb)
    res["cgroup"] = bool(cgroup.name)
    return res


def limits_dict(limits: Limits) -> dict:
    return asdict(limits)
