"""One sandboxed kernel: start, run a cell, interrupt, restart, the output budget, stop.

This module runs on a grading worker (trusted, outside the sandbox). `SandboxedKernel` is
an ipykernel started inside bubblewrap (`gmmcourse.grading.sandbox.kernel_command`) in the
submission's cgroup and scratch directory, attached to the submission's notebook; the
executor (`gmmcourse.grading.executor`) drives it cell by cell and decides what a failure
means for the grade. Each `run` ends with ``None`` or one reason: ``"timeout"``,
``"died"``, ``"oversized"`` or ``"garbled"``.

* **Channels** (`gmmcourse.grading.channels`): every socket to the kernel, the manager's own
  included, has a size cap, a short queue and a send timeout. A dropped shell, stdin or
  control connection (an oversized message, or a kernel that closed its sockets) ends the
  request in flight at once (``"oversized"``, or ``"died"`` when no kernel process is left).
  A dropped IOPub message is noted and the IOPub channel re-made; it is used once the kernel
  is heard on it (`READY_S`), so a subscription that reaches the kernel late, as on a loaded
  machine, loses no output. (Ctrl-C during that wait cancels it like any other: the Ctrl-C
  "lost" there in earlier fresh-clone runs was SIGINT ignored by a background launch.)
* **Output budget** (`gmmcourse.grading.outputs.BudgetedClient`): every message of every request (student cells,
  replays, exports) counts with its full serialised size (`message_size`: data, metadata,
  transient, buffers); once the budget is spent, outputs and display updates are dropped;
  widget (comm) state is never stored. The budget carries over a restart.
* **Modes**: ``"student"`` keeps outputs within the budget, ``"replay"`` drops them, and
  ``"export"`` collects only the answers tagged with `protocol.EXPORT_MIME`.
* **Time**: a cell runs within an `Allowance` (`gmmcourse.grading.clock`): CPU seconds of the
  submission's cgroup, read every `CPU_POLL_S`, and wall-clock seconds (nbclient's timeout).
* **Interrupt**: a cell past its time is interrupted with SIGINT to the kernel's processes
  (as Ctrl-C in Jupyter), so the kernel and what it computed survive; `interrupt` says
  whether it answers again.
* **Stop**: every process of the submission is killed first (also on Ctrl-C), then the
  channels and the manager are closed; a Ctrl-C (SIGINT, or the main task's cancellation)
  that arrives while the kernel shuts down is passed on once everything is stopped.
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import DottedObjectName, Type

from . import channels, protocol
from .outputs import BudgetedClient, message_size
from .clock import Allowance
from .sandbox import CGroup, Limits, SandboxConfig, kernel_command, lifeline, wipe_dir

__all__ = ["SandboxedKernel", "KernelStartError", "BudgetedClient", "SandboxKernelManager", "message_size"]

CPU_POLL_S = 0.25
"""How often a running cell's CPU time is read (`SandboxedKernel._within_cpu`): a cell is
stopped at most this long (of wall-clock time) after it used up its CPU seconds."""

READY_S = 30.0
"""How long a kernel has to be heard on a re-made IOPub channel (`SandboxedKernel._iopub_ready`).
An interrupted kernel that is not is restarted and its earlier cells replayed; after a dropped
output, the next request goes ahead (it then times out, as it would have anyway)."""


class SandboxKernelManager(AsyncKernelManager):
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


class CpuTimeUp(CellTimeoutError):
    """A cell used up its CPU seconds (`SandboxedKernel._within_cpu`)."""


class KernelStartError(RuntimeError):
    """The sandboxed kernel could not be started: an infrastructure failure (retried), never
    the student's fault (no student code has run in a fresh kernel)."""


class SandboxedKernel:
    """A (re)startable sandboxed kernel attached to the submission's notebook."""

    _lifeline: int | None = None  # the write end of the running sandbox's lifeline (`sandbox.lifeline`)

    def __init__(self, nb, limits: Limits, cfg: SandboxConfig, scratch: str, cgroup: CGroup):
        self.nb, self.limits, self.cfg, self.scratch, self.cgroup = nb, limits, cfg, scratch, cgroup
        self.client: BudgetedClient | None = None
        self.km: SandboxKernelManager | None = None
        self.n = 0
        self.output_budget = limits.output_bytes
        self.truncated = False
        self.dropped_messages = 0
        self.watch: channels.Watch | None = None
        self.last_timeout: str | None = None  # after a "timeout": "cpu" (its CPU seconds) or "wall" (its wall-clock bound)

    def _wipe_scratch(self) -> None:
        """Empty the scratch directory (a dead kernel's sockets and files; a full scratch
        must not stop the next kernel from starting)."""
        try:
            wipe_dir(self.scratch)  # iterative: a 4,000-deep folder chain does not recurse
        except OSError:
            pass

    async def start(self, timeout: float | None = None) -> None:
        self._cut_lifeline()  # an earlier sandbox of this submission, if any, is never kept alive
        self.n += 1
        if self.n > 1:
            self._wipe_scratch()
        conn = os.path.join(self.scratch, f"k{self.n}.json")
        argv = kernel_command(self.cfg, self.limits, self.scratch, conn, self.cgroup)
        km = SandboxKernelManager(
            sandbox_argv=argv,
            max_message_bytes=self.limits.max_message_bytes,
            transport="ipc",
            ip=os.path.join(self.scratch, f"s{self.n}"),
            connection_file=conn,
            kernel_name="python3",
        )
        client = BudgetedClient(
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
            read_end, self._lifeline = lifeline()
            try:
                await client.async_start_new_kernel(
                    cwd=self.scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=read_end
                )
            finally:
                os.close(read_end)
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
            await self._reset_iopub(READY_S)
            self.dropped_messages += 1
        return dropped

    async def _reset_iopub(self, timeout: float) -> bool:
        """A fresh IOPub channel (after a dropped message, or a cancelled read on timeout),
        ready when this returns True: a message the kernel published after a request of
        ours came back on it (`_iopub_ready`), so no later output is lost however slowly the
        subscription travels. False: the kernel answered nothing within `timeout` s."""
        kc = self.client.kc
        try:
            self.mon.close(linger=0)
            kc.iopub_channel.socket.disable_monitor()
        except Exception:
            pass
        kc.iopub_channel.close()
        kc._iopub_channel = None
        self._watch_iopub()
        return await self._iopub_ready(timeout)

    async def _iopub_ready(self, timeout: float) -> bool:
        """Round trips until the IOPub channel hears the kernel: a kernel_info request on
        shell, its reply, then the status (busy, idle) the kernel published for it on IOPub.
        A status that went out before the subscription reached the kernel is lost, so the
        next round asks again (one request in flight at a time); a late status of an earlier
        round counts too. True once heard; False if nothing came within `timeout` s."""
        kc = self.client.kc
        asked: set[str] = set()
        until = time.monotonic() + timeout
        while until - time.monotonic() > 0:
            try:
                msg_id = kc.kernel_info()
            except zmq.ZMQError:  # the kernel does not even take requests
                return False
            asked.add(msg_id)
            if await self._reply(msg_id, until - time.monotonic()) is None:
                return False
            # the status is published beside the reply, not before it: allow it a moment
            listen = min(until, time.monotonic() + 0.5)
            while (room := listen - time.monotonic()) > 0:
                try:
                    msg = await kc.iopub_channel.get_msg(timeout=room)
                except queue.Empty:
                    break
                if (msg.get("parent_header") or {}).get("msg_id") in asked:
                    return True
        return False

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
        self._cut_lifeline()
        self.client = self.km = None
        if interrupted is not None:
            raise interrupted

    def _cut_lifeline(self) -> None:
        """Close the lifeline's write end: whatever of the sandbox is left (the cgroup's kill
        missed nothing, but a sandbox outside any cgroup has only this) ends by itself."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

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
        # the timed-out read left the old channel unusable; a kernel that still ignores the
        # interrupt after READY_S answers nothing and is restarted
        if not await self._reset_iopub(READY_S):
            return False
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

    async def run(self, cell, index: int, timeout: float | Allowance) -> str | None:
        """Execute one cell within `timeout`: an `Allowance` (CPU seconds of the submission's
        cgroup, and wall-clock seconds whatever it does; `gmmcourse.grading.clock`) or plain
        wall-clock seconds. Returns None, ``"timeout"``, ``"died"``, ``"oversized"`` or
        ``"garbled"``."""
        assert self.client is not None
        allowed = timeout if isinstance(timeout, Allowance) else Allowance(timeout, timeout)
        self.client.timeout = max(1, math.ceil(allowed.wall))  # nbclient wants whole seconds
        # Outputs (an export's answer among them) that a loaded worker reads late still count:
        # nbclient gives up on them this long after the reply (a fixed 2 s made grades depend
        # on the machine's load).
        self.client.iopub_timeout = self.client.timeout
        execute = self.client.async_execute_cell(cell, index)
        if allowed.cpu < allowed.wall:
            execute = self._within_cpu(execute, allowed.cpu)
        self.last_timeout = None
        dropped, job = await self._unless_dropped(execute)
        if dropped:
            return self._dropped_kind()
        try:
            job.result()
        except CpuTimeUp:
            self.last_timeout = "cpu"
            return "timeout"
        except CellTimeoutError:
            self.last_timeout = "wall"  # the wall-clock bound: it waited (or was starved) that long
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

    async def _within_cpu(self, execute, cpu_s: float):
        """Await `execute` (a cell's execution) until it ends, or raise `CellTimeoutError` once
        the submission's cgroup has used `cpu_s` CPU seconds since it started (the execution
        is then cancelled; the kernel goes on computing until the executor interrupts it)."""
        start = self.cgroup.cpu_seconds()
        job = asyncio.ensure_future(execute)
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=CPU_POLL_S)
                if done:
                    return job.result()
                now = self.cgroup.cpu_seconds()
                if start is not None and now is not None and now - start >= cpu_s:
                    raise CpuTimeUp(f"the cell used {cpu_s:.0f} s of CPU time")
        finally:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)

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
        nonce = protocol.new_nonce()
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
