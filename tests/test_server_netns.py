"""The relays between the hub and a user's server in its own network namespace
(server/gmm_server/netns.py, fast, no hub): a namespace made for the test (``unshare --net``),
an echo server inside it and one on the host standing for the hub's API. The host reaches
the server's port and only it; the namespace reaches the hub's port and nothing else of the
host, and the hub sees those connections come from ``netns.RELAYED_FROM``, not from the
proxy's 127.0.0.1 (so it can refuse a login sent that way, tests/test_server_auth.py);
connections beyond the relay's cap are closed at once. A real student server:
tests/test_course_server.py (``test_hostile_student``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))

from gmm_server import netns  # noqa: E402


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


async def _echo(reader, writer):
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _talk(connect, payload: bytes) -> bytes | None:
    try:
        reader, writer = await asyncio.wait_for(connect(), 10)
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1024), 10)
        writer.close()
        return data or None
    except (OSError, asyncio.TimeoutError):
        return None


async def _read(reader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(4), 10)
    except ConnectionResetError:
        return b""


def test_relays(monkeypatch):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("the relays enter network namespaces: run as root with unshare (util-linux)")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    monkeypatch.setattr(netns, "MAX_CONNECTIONS", 4)
    try:
        ns_path = f"/proc/{holder.pid}/ns/net"
        guard = time.monotonic() + 120  # until unshare has made the namespace (milliseconds): a hang guard
        while os.readlink(ns_path) == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < guard, "unshare --net made no network namespace in 120 s"
            asyncio.run(asyncio.sleep(0.05))
        port, hub_port, other_port = _port(), _port(), _port()

        async def main():
            ns_fd = os.open(ns_path, os.O_RDONLY)

            def inside_listener(p):
                def make():
                    s = socket.socket()
                    s.bind(("127.0.0.1", p))
                    s.listen(16)
                    s.setblocking(False)
                    return s
                return make

            # the namespace's loopback up (bwrap does this for a real server)
            lo_up = netns.socket_in(ns_fd, lambda: subprocess.run(["ip", "link", "set", "lo", "up"]).returncode)
            assert lo_up == 0
            server = await asyncio.start_server(_echo, sock=netns.socket_in(ns_fd, inside_listener(port)))
            hub_peers = []

            async def hub_echo(reader, writer):
                hub_peers.append(writer.get_extra_info("peername")[0])
                await _echo(reader, writer)

            hub = await asyncio.start_server(hub_echo, "127.0.0.1", hub_port)
            other = await asyncio.start_server(_echo, "127.0.0.1", other_port)
            relays = netns.Relays()
            await relays.start(ns_path, port, hub_port)
            try:
                loop = asyncio.get_running_loop()

                def from_inside(p):
                    async def connect():
                        s = netns.socket_in(ns_fd, lambda: socket.socket())
                        s.setblocking(False)
                        await loop.sock_connect(s, ("127.0.0.1", p))
                        return await asyncio.open_connection(sock=s)
                    return connect

                res = {
                    "host -> server": await _talk(lambda: asyncio.open_connection("127.0.0.1", port), b"to server"),
                    "inside -> hub": await _talk(from_inside(hub_port), b"to hub"),
                    "inside -> other host port": await _talk(from_inside(other_port), b"x"),
                }
                # beyond the cap: the fifth connection at once is closed, the first four work
                conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
                for _, w in conns:
                    w.write(b"ping")
                replies = [await _read(r) for r, _ in conns]
                for _, w in conns:
                    w.close()
                res["hub saw"] = hub_peers
                return res, replies
            finally:
                relays.close()
                for s in (server, hub, other):
                    s.close()
                os.close(ns_fd)

        res, replies = asyncio.run(main())
    finally:
        holder.kill()
        holder.wait()
    assert res["host -> server"] == b"to server", res
    assert res["inside -> hub"] == b"to hub", res
    assert res["hub saw"] == [netns.RELAYED_FROM] != ["127.0.0.1"], res
    assert res["inside -> other host port"] is None, res
    assert replies[:4] == [b"ping"] * 4 and replies[4] == b"", replies
