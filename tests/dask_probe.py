"""What a student on the grading host would try: connect to every given port as another uid
and ask Dask to run code there (``Client(addr).run`` and the workers' and nannies' own
``run`` handler), over plain TCP and over TLS with credentials of its own making.

``python dask_probe.py MARKER_DIR UID PORT ...``: started as root (to import from the
root-only Python install), it drops to UID before connecting; the code it sends writes a
file into MARKER_DIR, a folder only root can write. Prints one JSON line: address -> what
happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl  # noqa: F401 (imported while still root: the install is root-only)
import sys

import distributed.comm.tcp  # noqa: F401
from distributed import Client, Security
from distributed.core import rpc
from distributed.protocol.pickle import dumps

MARKER_DIR = sys.argv[1]


def pwn(path=MARKER_DIR):
    import os

    with open(os.path.join(path, f"ran-as-{os.getuid()}-pid-{os.getpid()}"), "w") as f:
        f.write("pwned")
    return os.getuid()


async def _client_run(addr: str, kw: dict):
    async with Client(addr, asynchronous=True, timeout="5s", **kw) as c:
        return await c.run(pwn)


async def _direct(addr: str, args: dict):
    r = rpc(addr, connection_args=args, timeout=5)
    try:
        return await r.run(function=dumps(pwn))
    finally:
        await r.close_rpc()


def _try(coro) -> str:
    """Each attempt is cut after 15 s (a port that never answers, e.g. an HTTP server)."""
    try:
        return f"ran: {asyncio.run(asyncio.wait_for(coro, 15))}"
    except BaseException as e:  # noqa: BLE001 (any refusal is what we hope for)
        return f"refused: {type(e).__name__}"


def main() -> None:
    uid = int(sys.argv[2])
    ports = sys.argv[3:]
    sec = Security.temporary()  # made while root (imports cryptography); a CA nobody trusts
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    assert os.getuid() == uid and os.geteuid() == uid
    out = {}
    for port in ports:
        for scheme, kw in (("tcp", {}), ("tls", {"security": sec})):
            addr = f"{scheme}://127.0.0.1:{port}"
            out[addr + " client.run"] = _try(_client_run(addr, kw))
            args = sec.get_connection_args("client") if scheme == "tls" else {}
            out[addr + " rpc.run"] = _try(_direct(addr, args))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
