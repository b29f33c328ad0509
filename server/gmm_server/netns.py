"""The only network a user's server has: its own network namespace (bwrap ``--unshare-net``,
loopback only) and two relays run by the hub, which is root:

* hub -> server: the hub and the proxy connect to ``127.0.0.1:<port>`` on the host, where the
  relay accepts and opens the same address inside the server's namespace;
* server -> hub: the server's ``127.0.0.1:<hub API port>`` inside its namespace is a socket the
  relay made there; each connection is passed to the hub's API on the host's loopback, from
  the address ``RELAYED_FROM`` (127.0.0.2), so the hub knows it did not come through the proxy.

A socket belongs to the namespace of the thread that created it, so each one made inside
is created by a short-lived thread that first enters the namespace (``setns``); the rest is
plain asyncio in the hub's event loop. The server sees no other host socket, and nothing
else on the host can be reached from it (no route, no other interface).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

MAX_CONNECTIONS = 256  # open relayed connections per server and direction (the hub's file descriptors)
# The hub sees every connection relayed from a user's server as coming from this loopback
# address, never from 127.0.0.1, where the proxy connects from: a request a student's code
# sends straight to the hub's API is told apart from one a browser sent through the proxy,
# whatever its headers claim (auth.py refuses logins from it).
RELAYED_FROM = "127.0.0.2"


def socket_in(ns_fd: int, make):
    """``make()`` run in a new thread that has entered the network namespace ``ns_fd``."""
    out: list = []

    def run():
        try:
            os.setns(ns_fd, os.CLONE_NEWNET)
            out.append(make())
        except BaseException as e:  # noqa: BLE001 -- handed to the caller
            out.append(e)

    t = threading.Thread(target=run, name="gmm-netns", daemon=True)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass


async def _relay(r1, w1, r2, w2) -> None:
    try:
        await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))
    finally:
        for w in (w1, w2):
            w.close()


def _bounded(handler):
    """``handler`` with at most MAX_CONNECTIONS at a time; more are closed at once."""
    active = 0

    async def run(reader, writer):
        nonlocal active
        if active >= MAX_CONNECTIONS:
            writer.close()
            return
        active += 1
        try:
            await handler(reader, writer)
        finally:
            active -= 1

    return run


class Relays:
    """The two relays of one user's server; ``close()`` when it stops."""

    def __init__(self):
        self.servers: list[asyncio.base_events.Server] = []
        self.ns_fd: int | None = None

    async def start(self, netns_path: str, port: int, hub_port: int, host: str = "127.0.0.1") -> None:
        self.ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        ns_fd = self.ns_fd

        def listener():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, hub_port))
            s.listen(64)
            s.setblocking(False)
            return s

        async def to_hub(reader, writer):
            try:
                r2, w2 = await asyncio.open_connection(
                    host, hub_port, local_addr=(RELAYED_FROM, 0) if host == "127.0.0.1" else None)
            except OSError:
                writer.close()
                return
            await _relay(reader, writer, r2, w2)

        async def to_server(reader, writer):
            def client():
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                return s

            s = socket_in(ns_fd, client)
            try:
                await asyncio.get_running_loop().sock_connect(s, (host, port))
                r2, w2 = await asyncio.open_connection(sock=s)
            except OSError:
                s.close()
                writer.close()
                return
            await _relay(reader, writer, r2, w2)

        self.servers.append(await asyncio.start_server(_bounded(to_hub), sock=socket_in(ns_fd, listener)))
        self.servers.append(await asyncio.start_server(_bounded(to_server), host, port, reuse_address=True))

    def close(self) -> None:
        for s in self.servers:
            s.close()
        self.servers = []
        if self.ns_fd is not None:
            os.close(self.ns_fd)
            self.ns_fd = None
