"""The grader's ZeroMQ sockets to one sandboxed kernel: bounded in size, in queue and in time.

The kernel is the student's process, so every message it sends is hostile until checked. On
the grading worker's side of each channel:

* a message larger than the channel's cap is refused by ZeroMQ itself (``MAXMSGSIZE``: the
  connection is dropped, the message is never held);
* at most ``RCVHWM`` messages wait in the worker's queue (the kernel's own queue, beyond that,
  lives in the sandbox's memory cgroup, and the kernel drops what does not fit);
* no send blocks longer than ``TIMEOUT_MS`` (``SNDTIMEO``): a peer that went away can never
  stall the event loop where no asyncio timeout reaches it (receives are made only when a
  message is there; ``RCVTIMEO`` would cut jupyter_client's own polls short);
* ``LINGER`` 0: closing never waits for the kernel.

So the worker holds at most ``sum((RCVHWM + 1) * cap)`` bytes of one kernel's messages
(`queued_bytes_bound`), whatever the notebook sends, for as long as it sends it.

`Watch` reports a dropped connection on any channel but IOPub (a message over the cap, or a
kernel that closed its sockets): the request in flight can then never be answered, and the
submission's kernel is stopped at once instead of waiting for a reply that will not come.
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import channel_socket_types

__all__ = ["TIMEOUT_MS", "SMALL_BYTES", "channel_limits", "context", "queued_bytes_bound", "GuardedKernelClient",
           "Watch"]

TIMEOUT_MS = 1000
"""Longest a single ZeroMQ send may block (never reached by a healthy kernel)."""
SMALL_BYTES = 64 << 10
"""Cap of the channels on which the grader expects no message or only tiny ones (stdin: the
grader never allows input; control: it sends no requests; heartbeat: 4-byte pings)."""
WATCHED = ("shell", "stdin", "control")
"""Channels whose dropped connection ends the request in flight (IOPub is re-made instead)."""


def channel_limits(max_message_bytes: int) -> dict[str, tuple[int, int]]:
    """``{channel: (largest message in bytes, messages queued at most)}`` on the grader's side.

    Shell carries one reply per request, IOPub the outputs (read as they come, so a short queue
    only slows a flooding kernel down: the kernel queues, or drops, the rest on its side).
    """
    return {
        "shell": (max_message_bytes, 2),
        "iopub": (max_message_bytes, 8),
        "stdin": (SMALL_BYTES, 1),
        "control": (SMALL_BYTES, 1),
        "hb": (SMALL_BYTES, 1),
    }


def queued_bytes_bound(max_message_bytes: int) -> int:
    """The most bytes of one kernel's messages the grader's sockets can hold at once (each
    channel's queue plus the one message being read)."""
    return sum((hwm + 1) * size for size, hwm in channel_limits(max_message_bytes).values())


def _apply(sock_or_ctx, size: int, hwm: int) -> None:
    sock_or_ctx.setsockopt(zmq.MAXMSGSIZE, size)
    sock_or_ctx.setsockopt(zmq.RCVHWM, hwm)
    sock_or_ctx.setsockopt(zmq.SNDHWM, 16)
    sock_or_ctx.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock_or_ctx.setsockopt(zmq.LINGER, 0)


class _Context(zmq.asyncio.Context):
    max_message_bytes: int = SMALL_BYTES  # read by GuardedKernelClient


def context(max_message_bytes: int) -> zmq.asyncio.Context:
    """A ZeroMQ context whose sockets default to the strictest channel's limits (the
    heartbeat thread and the kernel manager's own control socket take them from here)."""
    ctx = _Context()
    size, hwm = channel_limits(max_message_bytes)["hb"]
    _apply(ctx, size, hwm)
    ctx.max_message_bytes = max_message_bytes
    return ctx


class GuardedKernelClient(AsyncKernelClient):
    """An async kernel client whose channel sockets carry `channel_limits`."""

    def _create_connected_socket(self, channel, identity=None):  # noqa: D102
        # jupyter_client's own, with the limits set *before* connect(): ZeroMQ copies a
        # socket's options into each connection when it is made
        limits = channel_limits(getattr(self.context, "max_message_bytes", SMALL_BYTES))
        size, hwm = limits.get(channel, limits["hb"])
        sock = self.context.socket(channel_socket_types[channel])
        _apply(sock, size, hwm)
        if identity:
            sock.identity = identity
        if self.curve_publickey is not None:
            sock.curve_secretkey = self.curve_secretkey
            sock.curve_publickey = self.curve_publickey
            sock.curve_serverkey = self.curve_publickey
        sock.connect(self._make_url(channel))
        return sock


class Watch:
    """Dropped connections on the `WATCHED` channels of one kernel client."""

    def __init__(self, kc: AsyncKernelClient):
        self._mons = []
        for name in WATCHED:
            sock = getattr(kc, f"{name}_channel").socket
            self._mons.append((name, sock, sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)))

    async def dropped(self) -> str | None:
        """The first channel whose connection dropped since the last call, else None."""
        hit = None
        for name, _, mon in self._mons:
            while True:
                try:
                    await mon.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                hit = hit or name
        return hit

    async def wait(self) -> str:
        """Wait until a watched channel's connection drops; returns its name."""
        waits = {asyncio.ensure_future(mon.poll(None)): name for name, _, mon in self._mons}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in waits:
                f.cancel()
        return waits[next(iter(done))]

    def close(self) -> None:
        for _, sock, mon in self._mons:
            try:
                sock.disable_monitor()
            except Exception:
                pass
            try:
                mon.close(linger=0)
            except Exception:
                pass
        self._mons = []
