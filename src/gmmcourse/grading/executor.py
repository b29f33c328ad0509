"""Run one submission: student cells in a sandboxed kernel, then the trusted exports.

This module runs on a grading worker (trusted, outside the sandbox). It receives plain data
(notebook text, export sources, inputs) and returns plain data (executed notebook, exported
answers as JSON *text*, events). It never decides a verdict: the parent parses and checks the
answers.

Export channel: after the student's cells, the worker first clears the kernel's execution
hooks (`protocol.quiesce_expressions`: no transformer sees the request, nothing it uses can be
shadowed, and the exports fail closed unless the kernel then reports no hook left), then, for
each part, sends a fresh execute_request whose code wraps ``Part.export`` and publishes the
answer as a display_data message tagged with a random nonce generated now. Only outputs of
that very request are read, and exactly one tagged output must arrive: a second one (a forged
answer next to the real one) fails the part. The wrapper runs the export in a fresh namespace
with the real builtins (a student's ``float = ...`` or ``exec = ...`` cannot change it). An
exception comes back as its class name only, and reaches feedback as a fixed sentence
(`protocol.read_export`): nothing the student's code wrote from the hidden inputs.

Channels (`channels`): every socket to the kernel has a size cap, a short queue and a send
timeout; a dropped shell, stdin or control connection (an oversized message) ends the request
in flight at once (``"oversized"``), and the kernel is restarted as after a death.

The kernel is untrusted code all the same: a student who patches modules can publish
whatever they like. That is why exports carry raw data only (values, draws, function
outputs on inputs sent now) and every statistic is computed by the trusted checks.

Output budget: every message of every request (student cells, replays, exports) counts with
its full serialised size (data, metadata, transient, buffers); once the budget is spent,
outputs and display updates are dropped; widget (comm) state is never stored; the returned
notebook is capped at ``Limits.notebook_bytes``.

Time: one wall-clock budget per submission, ``notebook_timeout`` for the student's cells and
``grace_timeout`` for everything after (exports, restarts, replays). A cell that runs past its
limit is interrupted (SIGINT), so the kernel and everything computed so far survive; only a
kernel that ignores the interrupt is restarted and the earlier cells replayed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import queue
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import DottedObjectName, Type

from . import channels, protocol
from .protocol import EXPORT_MIME
from .sandbox import CGroup, Limits, SandboxConfig, cleanup_stale_scratch, kernel_command, make_scratch, wipe_dir
from .spec import sanitize

__all__ = ["run_submission", "EXPORT_MIME", "KernelStartError", "sanitize"]

SETUP_TAG = "gmmcourse-setup"


class _SandboxKernelManager(AsyncKernelManager):
    """Starts the ipykernel inside bubblewrap; ZeroMQ over Unix sockets in the scratch dir,
    every socket bounded (`gmmcourse.grading.channels`), the manager's own included."""

    client_class = DottedObjectName("gmmcourse.grading.channels.GuardedKernelClient")
    client_factory = Type(klass=channels.GuardedKernelClient)

    def __init__(self, *, sandbox_argv, max_message_bytes, **kw):
        own = channels.context(max_message_bytes)
        super().__init__(context=own, **kw)
        self._own_ctx = own
        self._sandbox_argv = sandbox_argv
        self._max_message_bytes = max_message_bytes
        self._client_ctx = None

    def format_kernel_cmd(self, extra_arguments=None):  # noqa: D102
        return list(self._sandbox_argv)

    def client(self, **kwargs):  # noqa: D102
        self._client_ctx = kwargs["context"] = channels.context(self._max_message_bytes)
        return super().client(**kwargs)

    def close_client_context(self):
        for ctx in (self._client_ctx, self._own_ctx):
            try:
                if ctx is not None:
                    ctx.destroy(linger=0)
            except Exception:  # pragma: no cover
                pass
        self._client_ctx = self._own_ctx = None


def _msg_size(msg: dict) -> int:
    """The full serialised size of a message's payload (content, metadata, buffers)."""
    try:
        n = len(json.dumps(msg.get("content", {}), default=str))
        n += len(json.dumps(msg.get("metadata", {}), default=str))
    except (TypeError, ValueError, RecursionError):
        return 1 << 62
    for b in msg.get("buffers") or ():
        try:
            n += len(b)
        except TypeError:
            n += 1 << 20
    return n


class _Client(NotebookClient):
    """nbclient with an output budget, no widget state, and an export mode.

    ``mode``: ``"student"`` (outputs kept within the budget), ``"replay"`` (outputs dropped)
    or ``"export"`` (only tagged answers are collected, into ``export_payloads``).
    """

    output_budget: int = 1 << 20
    output_limit: int = 1 << 20
    truncated: bool = False
    mode: str = "student"
    export_payloads: list
    export_count: int = 0
    export_cap: int = 4 << 20

    def process_message(self, msg, cell, cell_index):  # noqa: D102
        t = msg.get("msg_type")
        if t in ("status", "execute_input"):
            return super().process_message(msg, cell, cell_index)
        if t is None or t.startswith("comm"):  # no widget state, no comm handlers
            return None
        if self.mode == "replay":
            return None
        if self.mode == "export":
            if t in ("display_data", "execute_result", "update_display_data"):
                data = (msg.get("content") or {}).get("data") or {}
                if isinstance(data, dict) and EXPORT_MIME in data:
                    self.export_count += 1
                    v = data[EXPORT_MIME]
                    if len(self.export_payloads) < 2:
                        self.export_payloads.append(v[: self.export_cap + 64] if isinstance(v, str) else None)
            return None
        size = _msg_size(msg)
        if t == "stream" and size > self.output_budget > 0:
            text = str((msg.get("content") or {}).get("text", ""))[: self.output_budget]
            msg = {**msg, "content": {"name": msg["content"].get("name", "stdout"), "text": text}, "metadata": {}}
            self.output_budget = 0
            super().process_message(msg, cell, cell_index)
            size = 1
        if size > self.output_budget:
            if not self.truncated and t != "update_display_data":
                cell.outputs.append(
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
        return super().process_message(msg, cell, cell_index)

    def set_widgets_metadata(self):  # noqa: D102 - never store widget state
        return None


class KernelStartError(RuntimeError):
    """The sandboxed kernel could not be started: an infrastructure failure (retried), never
    the student's fault (no student code has run in a fresh kernel)."""


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
        self.watch: channels.Watch | None = None

    def _wipe_scratch(self) -> None:
        """Empty the scratch directory (a dead kernel's sockets and files; a full scratch
        must not stop the next kernel from starting)."""
        try:
            wipe_dir(self.scratch)  # iterative: a 4,000-deep folder chain does not recurse
        except OSError:
            pass

    async def start(self, timeout: float | None = None) -> None:
        self.n += 1
        if self.n > 1:
            self._wipe_scratch()
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
            startup_timeout=max(1, int(min(self.limits.startup_timeout, timeout or self.limits.startup_timeout))),
            allow_errors=True,
            interrupt_on_timeout=False,
            iopub_timeout=2,
            raise_on_iopub_timeout=False,
            record_timing=False,
            store_widget_state=False,
            kernel_name="python3",
            resources={"metadata": {"path": self.scratch}},
        )
        client.output_budget = self.output_budget
        client.output_limit = self.limits.output_bytes
        client.truncated = self.truncated
        client.export_payloads = []
        client.export_cap = self.limits.export_bytes
        self.km, self.client = km, client
        self.mon = None
        try:
            await client.async_start_new_kernel(
                cwd=self.scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
            await client.async_start_new_kernel_client()
            self._watch_iopub()
            self.watch = channels.Watch(client.kc)
        except BaseException as e:
            await self.stop()
            if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise KernelStartError(f"{type(e).__name__}: {str(e)[:200]}") from None

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
            await self._reset_iopub()
            self.dropped_messages += 1
        return dropped

    async def _reset_iopub(self) -> None:
        """A fresh IOPub channel (after a dropped message, or a cancelled read on timeout)."""
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

    async def stop(self) -> None:
        """Stop the kernel: every process of the submission is killed first (at once, also on
        Ctrl-C), then the channels and the manager are closed."""
        self.cgroup.kill_all()
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.client is not None:
            self.output_budget = self.client.output_budget
            self.truncated = self.client.truncated
            try:
                if self.client.kc is not None:
                    self.client.kc.stop_channels()
            except Exception:
                pass
        interrupted: BaseException | None = None
        if self.km is not None:
            try:
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), 10)
            except (asyncio.CancelledError, KeyboardInterrupt) as e:
                interrupted = e  # Ctrl-C while stopping: finish stopping, then pass it on
            except BaseException:
                pass
            self.km.close_client_context()
        self.cgroup.kill_all()
        self.client = self.km = None
        if interrupted is not None:
            raise interrupted

    def _kernel_pids(self) -> list[int]:
        """Host pids of the ipykernel process(es) in this submission's cgroup."""
        pids = []
        for f in self.cgroup.procs_files():
            try:
                candidates = [int(p) for p in Path(f).read_text().split()]
            except OSError:
                continue
            for pid in candidates:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"ipykernel_launcher" in cmd and not cmd.startswith((b"bwrap", b"/bin/sh", b"prlimit", b"env")):
                    pids.append(pid)
            break
        return sorted(set(pids))

    async def interrupt(self) -> bool:
        """SIGINT to the kernel (as Ctrl-C in Jupyter); True if it is responsive again."""
        pids = self._kernel_pids()
        if not pids:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        await self._reset_iopub()  # the timed-out read left the old channel unusable
        probe = nbformat.v4.new_code_cell("pass")
        return await self.run_extra(probe, 5.0, mode="replay") is None

    async def _unless_dropped(self, coro) -> tuple[bool, asyncio.Future]:
        """Run `coro` until it ends or a watched channel's connection drops (then it is
        cancelled: its reply can never come). Returns (dropped, the finished task)."""
        assert self.watch is not None
        job = asyncio.ensure_future(coro)
        cut = asyncio.ensure_future(self.watch.wait())
        try:
            await asyncio.wait({job, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task is cancelled (Ctrl-C): nothing is left running
            job.cancel()
            cut.cancel()
            await asyncio.gather(job, cut, return_exceptions=True)
        dropped = await self.watch.dropped()
        return bool(dropped) or (not cut.cancelled() and cut.exception() is None), job

    def _dropped_kind(self) -> str:
        """A dropped connection: the kernel died, or it sent an oversized message (or closed
        its sockets) while alive."""
        return "oversized" if self._kernel_pids() else "died"

    async def run(self, cell, index: int, timeout: float) -> str | None:
        """Execute one cell; returns None, ``"timeout"``, ``"died"``, ``"oversized"`` or
        ``"garbled"``."""
        assert self.client is not None
        self.client.timeout = max(1, math.ceil(timeout))  # nbclient wants whole seconds
        # Outputs (an export's answer among them) that a loaded worker reads late still count:
        # nbclient gives up on them this long after the reply (a fixed 2 s made grades depend
        # on the machine's load).
        self.client.iopub_timeout = self.client.timeout
        dropped, job = await self._unless_dropped(self.client.async_execute_cell(cell, index))
        if dropped:
            return self._dropped_kind()
        try:
            job.result()
        except CellTimeoutError:
            return "timeout"
        except DeadKernelError:
            return "died"
        except Exception:  # garbled messages from a tampered kernel, zmq errors, ...
            return "garbled"
        if await self._iopub_dropped():
            if self.client.mode == "student":
                cell.outputs.append(
                    nbformat.v4.new_output(
                        "stream",
                        name="stderr",
                        text=f"[autograder: output larger than {self.limits.max_message_bytes >> 20} MiB dropped]\n",
                    )
                )
        return None

    async def _reply(self, msg_id: str, timeout: float) -> dict | None:
        """The shell reply to `msg_id` (others are skipped), or None after `timeout` s."""
        kc = self.client.kc
        until = time.monotonic() + timeout
        while (room := until - time.monotonic()) > 0:
            try:
                msg = await kc.shell_channel.get_msg(timeout=room)
            except queue.Empty:
                return None
            if (msg.get("parent_header") or {}).get("msg_id") == msg_id:
                return msg
        return None

    async def quiesce(self, timeout: float) -> bool:
        """Clear every hook the student's cells installed in the kernel (`protocol`: no input
        or AST transformer sees the request); True only if the kernel says none is left."""
        assert self.client is not None
        nonce = secrets.token_hex(16)
        msg_id = self.client.kc.execute("", silent=True, store_history=False, allow_stdin=False, stop_on_error=False,
                                        user_expressions=protocol.quiesce_expressions(nonce))
        dropped, job = await self._unless_dropped(self._reply(msg_id, timeout))
        if dropped or job.cancelled() or job.exception() is not None or job.result() is None:
            return False
        return protocol.is_quiet(job.result().get("content"), nonce)

    async def run_extra(self, cell, timeout: float, mode: str = "replay") -> str | None:
        """Execute a cell that is not part of the notebook (replays, probes, exports)."""
        assert self.client is not None
        self.nb.cells.append(cell)
        idx = len(self.nb.cells) - 1
        self.client.mode = mode
        self.client.export_payloads = []
        self.client.export_count = 0
        try:
            return await self.run(cell, idx, timeout)
        finally:
            self.client.mode = "student"
            del self.nb.cells[idx]


def _why(kind: str, limits: Limits, cgroup: CGroup, oom_before: int) -> str:
    if kind == "timeout":
        if cgroup.pids_hit():
            return f"it exceeded the time limit (and tried to start more than {limits.max_pids} processes or threads)"
        return f"it exceeded the time limit ({limits.cell_timeout:.0f} s per cell)"
    if cgroup.oom_events() > oom_before:
        return f"it exceeded the memory limit ({limits.memory_bytes >> 20} MiB)"
    if kind == "garbled":
        return "the kernel sent invalid messages (was the notebook tampering with Jupyter?)"
    if kind == "oversized":
        return (f"it sent the autograder a message over the size limit ({limits.max_message_bytes >> 20} MiB for "
                "outputs and replies, less on the other channels) or broke its connection to the autograder")
    if cgroup.pids_hit():
        return f"it started too many processes or threads (limit {limits.max_pids})"
    return "the Python kernel died (e.g. os._exit, a crash or the memory limit)"


def _read_export(client: _Client, nonce: str, limits: Limits) -> dict:
    """The trusted reading of one export (`protocol.read_export`: fixed failure texts)."""
    return protocol.read_export(client.export_count, client.export_payloads, nonce, limits.export_bytes)


def _cap_notebook(nb, limit: int) -> bool:
    """Drop outputs (largest first) until the serialised notebook is under `limit` bytes."""
    size = len(nbformat.writes(nb))
    if size <= limit:
        return False
    outs = []
    for c in nb.cells:
        for i, o in enumerate(c.get("outputs", [])):
            outs.append((len(json.dumps(o, default=str)), c, o))
    outs.sort(key=lambda t: -t[0])
    note = nbformat.v4.new_output("stream", name="stderr", text="[autograder: output removed (notebook size limit)]\n")
    for n, c, o in outs:
        if size <= limit:
            break
        c.outputs = [x if x is not o else note for x in c.outputs]
        size -= n
    if len(nbformat.writes(nb)) > limit:  # sources alone too large: keep no outputs at all
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs = []
    return True


async def _grade(nb, exports, inputs_json, limits, cfg, scratch, cgroup) -> dict[str, Any]:
    events: list[str] = []
    answers: dict[str, dict] = {}
    # The set-up cell of the published notebooks (tag "gmmcourse-setup") installs packages
    # outside the grader; in the sandbox (no network) it is not run.
    code = [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and SETUP_TAG not in (c.get("metadata", {}).get("tags") or [])]
    for i in code:
        nb.cells[i].outputs = []
        nb.cells[i].execution_count = None
    sess = _Session(nb, limits, cfg, scratch, cgroup)
    t0 = time.monotonic()
    deadline = t0 + limits.notebook_timeout  # the student's cells
    final = deadline + limits.grace_timeout  # everything, exports and restarts included
    skipped: set[int] = set()
    restarts = 0
    alive = False
    cells_s = 0.0
    infra: str | None = None

    def left(until: float) -> float:
        return until - time.monotonic()

    def mark(idx: int, text: str) -> None:
        nb.cells[idx].outputs.append(
            nbformat.v4.new_output("stream", name="stderr", text=f"[autograder: {text}]\n")
        )

    async def restart(upto: int) -> bool:
        """New kernel; replay code cells before ``upto`` (skipping failed ones)."""
        nonlocal restarts, alive, infra
        while True:
            await sess.stop()
            alive = False
            if restarts >= limits.max_restarts:
                events.append("Too many kernel restarts; the remaining cells were not run.")
                return False
            if left(final) <= 1:
                events.append("The time budget of the submission was used up; the kernel was not restarted.")
                return False
            restarts += 1
            try:
                await sess.start(left(final))
            except KernelStartError as e:
                infra = f"the kernel could not be restarted ({e})"
                return False
            alive = True
            ok = True
            for j in code:
                if j >= upto:
                    break
                if j in skipped:
                    continue
                replay = nbformat.from_dict(dict(nb.cells[j]))
                if left(final) <= 0:
                    events.append("The time budget was used up while re-running cells after a restart.")
                    return True
                oom0 = cgroup.oom_events()
                bad = await sess.run_extra(replay, min(limits.cell_timeout, left(final)))
                if bad:
                    skipped.add(j)
                    events.append(
                        f"Cell {j + 1} failed when re-run after a restart ({_why(bad, limits, cgroup, oom0)}); skipped."
                    )
                    ok = False
                    break
            if ok:
                return True

    async def recover(kind: str, upto: int) -> bool:
        """After a timeout: interrupt (keeps the kernel's state); otherwise restart."""
        if kind == "timeout" and await sess.interrupt():
            return True
        return await restart(upto)

    try:
        try:
            await sess.start()
            alive = True
        except KernelStartError as e:
            infra = f"the kernel could not be started ({e})"
        pos = 0
        while alive and pos < len(code):
            idx = code[pos]
            if left(deadline) <= 0:
                rest = [str(j + 1) for j in code[pos:]]
                events.append(
                    f"The notebook time limit ({limits.notebook_timeout:.0f} s) was reached; "
                    f"cells {', '.join(rest)} were not run."
                )
                for j in code[pos:]:
                    skipped.add(j)
                    mark(j, f"not run: notebook time limit ({limits.notebook_timeout:.0f} s) reached")
                break
            oom0 = cgroup.oom_events()
            tc = time.monotonic()
            room = left(deadline)
            bad = await sess.run(nb.cells[idx], idx, min(limits.cell_timeout, room))
            cells_s += time.monotonic() - tc
            if bad:
                why = _why(bad, limits, cgroup, oom0)
                if bad == "timeout" and room < limits.cell_timeout:
                    why = f"the notebook time limit ({limits.notebook_timeout:.0f} s) was reached"
                events.append(f"Cell {idx + 1} was stopped: {why}. It was skipped; grading continued.")
                mark(idx, f"cell stopped: {why}")
                skipped.add(idx)
                alive = await recover(bad, idx)
            pos += 1

        # Exports: trusted code sent now, read back only from its own execution.
        quiet_kernel = 0  # the kernel (by start count) whose hooks were last cleared
        quiet = False
        for grade_id, src in exports:
            if infra is not None:
                break
            if not alive:
                answers[grade_id] = {"ok": False, "error": "the notebook's kernel was not running"}
                continue
            if quiet_kernel != sess.n:
                # Clear hooks the student's cells installed (they would see the export code);
                # again after a restart, whose replay ran the student's cells once more.
                quiet = await sess.quiesce(min(30.0, max(1.0, left(final))))
                quiet_kernel = sess.n
            if not quiet:
                answers[grade_id] = {"ok": False, "error": protocol.NOT_QUIET}
                continue
            room = min(limits.export_timeout, left(final))
            if room <= 0:
                answers[grade_id] = {"ok": False, "error": "the submission's time budget was used up before this part"}
                continue
            nonce = secrets.token_hex(16)
            cell = nbformat.v4.new_code_cell(protocol.export_code(src, inputs_json, nonce))
            oom0 = cgroup.oom_events()
            bad = await sess.run_extra(cell, room, mode="export")
            if bad:
                answers[grade_id] = {"ok": False, "error": f"exporting the answer failed: {_why(bad, limits, cgroup, oom0)}"}
                alive = await recover(bad, len(nb.cells))
                continue
            answers[grade_id] = _read_export(sess.client, nonce, limits)
    finally:
        await sess.stop()
    if sess.dropped_messages:
        events.append("Some output was too large and was dropped (it is not needed for grading).")
    if _cap_notebook(nb, limits.notebook_bytes):
        events.append(f"Outputs were removed: the notebook exceeded {limits.notebook_bytes >> 20} MiB.")
    return {
        "events": events,
        "answers": answers,
        "infra_error": infra,
        "restarts": max(0, restarts),
        "cells_s": cells_s,
        "duration": time.monotonic() - t0,
    }


_HOST_CLEANED = False


def run_submission(
    nb_text: str,
    exports: list[tuple[str, str]],
    inputs_json: str,
    limits: Limits | dict | None = None,
    cfg: SandboxConfig | dict | None = None,
) -> dict[str, Any]:
    """Grade-side execution of one submission (runs on a worker; returns plain data).

    Returns ``{"notebook": executed notebook JSON text, "events": [...], "answers":
    {grade_id: {"ok": bool, "json"|"error": str}}, "infra_error": None or str, "duration": s}``.
    ``infra_error`` set means the grading infrastructure failed (the kernel could not be
    started): the result is not a grade and the submission must be retried.
    """
    global _HOST_CLEANED
    if not _HOST_CLEANED:  # a worker cleans its own host: what killed graders/workers left
        _HOST_CLEANED = True
        CGroup.cleanup_stale()
        cleanup_stale_scratch()
    limits = Limits(**limits) if isinstance(limits, dict) else (limits or Limits())
    if isinstance(cfg, dict):
        cfg = SandboxConfig(**{**cfg, "hide": tuple(cfg.get("hide", ()))})
    cfg = cfg or SandboxConfig()
    nb = nbformat.reads(nb_text, as_version=4)
    cgroup = CGroup(limits)  # first: it refuses (LimitUnavailable) where a limit cannot be applied
    scratch = make_scratch(limits.scratch_bytes)
    try:
        res = asyncio.run(_grade(nb, exports, inputs_json, limits, cfg, scratch.path, cgroup))
    finally:
        cgroup.remove()
        scratch.remove()
    res["notebook"] = nbformat.writes(nb)
    res["cgroup"] = bool(cgroup.name)
    res["scratch_tmpfs"] = scratch.mounted
    return res
