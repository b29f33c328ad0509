"""RosterAuthenticator: username + personal password from the course roster.

Suitable for a small course on one machine: the instructor adds each user with
``server/course add-student NAME`` (prints a generated password to hand out). Instructors
are JupyterHub admins. To use a real identity provider instead (OAuth, LTI 1.3), see
docs/course-server.md.

Guessing is slowed down: after ``max_failures`` wrong passwords for one name (or
``max_failures_per_address`` from one address: higher, since a classroom often shares one)
within ``lockout_seconds``, every login for that name (or from that address) is refused
until the window has passed, right password or not. Hashes are checked in a thread
(PBKDF2 takes a moment), so logins do not stall the hub. Passwords are never logged.

The address is the one the course's proxy saw (``client_address``), never one the client
wrote into a header; a login sent from a user's server straight to the hub's API (through
the relay of netns.py) is refused, since no browser sends one that way.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque

from jupyterhub.auth import Authenticator
from traitlets import Integer, Unicode

from . import netns, roster


class RosterAuthenticator(Authenticator):
    roster_file = Unicode(help="path of roster.json").tag(config=True)
    max_failures = Integer(5, help="wrong passwords for one name before a lockout").tag(config=True)
    max_failures_per_address = Integer(50, help="wrong passwords from one address before a lockout").tag(config=True)
    lockout_seconds = Integer(300, help="how long the failures count, and the lockout lasts").tag(config=True)
    forwarded_hops = Integer(0, help="trusted reverse proxies in front of the course's proxy (1 for nginx or Caddy "
                             "doing HTTPS on this machine): the client's address is taken that many "
                             "X-Forwarded-For entries further back").tag(config=True)

    def __init__(self, **kw):
        super().__init__(**kw)
        self._failures: dict[str, deque] = defaultdict(deque)

    def _users(self) -> dict:
        return roster.load(self.roster_file)

    def _locked(self, key: str, now: float) -> bool:
        q = self._failures[key]
        while q and q[0] < now - self.lockout_seconds:
            q.popleft()
        return len(q) >= (self.max_failures if key.startswith("name:") else self.max_failures_per_address)

    def client_address(self, handler) -> str | None:
        """The address a login came from, as far as the hub can trust it; None for a request
        relayed from a user's server (``netns.RELAYED_FROM``), which no browser sends.

        The hub listens on loopback only, so the connection's peer is the proxy (or another
        process of this machine). The proxy appends the address it saw to X-Forwarded-For:
        that entry, ``forwarded_hops`` further back for each trusted reverse proxy in front of
        it, is the client's. What a client wrote itself (X-Real-Ip, earlier X-Forwarded-For
        entries) is ignored; tornado's ``remote_ip`` would believe it, and a guesser could
        then claim a new address for every try."""
        request = handler.request
        peer = getattr(getattr(getattr(request, "connection", None), "context", None), "address", None)
        peer = peer[0] if isinstance(peer, tuple) and peer else "?"
        if peer == netns.RELAYED_FROM:
            return None
        chain = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        return chain[max(0, len(chain) - 1 - self.forwarded_hops)] if chain else peer

    async def authenticate(self, handler, data):
        name = self.normalize_username((data or {}).get("username", ""))
        password = (data or {}).get("password", "")
        ip = self.client_address(handler)
        if ip is None:
            self.log.warning("login for %r refused: sent from a user's server straight to the hub's API, "
                             "not through the course's proxy", name)
            return None
        keys = (f"name:{name}", f"ip:{ip}")
        now = time.monotonic()
        if any(self._locked(k, now) for k in keys):
            self.log.warning("login for %r from %s refused: too many wrong passwords, locked for %d s",
                             name, ip, self.lockout_seconds)
            return None
        entry = self._users().get(name)
        ok = bool(entry and password) and await asyncio.get_running_loop().run_in_executor(
            None, roster.check_password, password, entry.get("hash", ""))
        if not ok:
            for k in keys:
                self._failures[k].append(now)
            self.log.warning("failed login for %r from %s", name, ip)
            return None
        return {"name": name, "admin": entry.get("role") == "instructor"}

    def check_allowed(self, username, authentication=None):
        return username in self._users()

    async def refresh_user(self, user, handler=None):
        # a user removed from the roster must log in again, which then fails
        return user.name in self._users()
