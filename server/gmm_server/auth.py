"""RosterAuthenticator: username + personal password from the course roster.

Suitable for a small course on one machine: the instructor adds each user with
``server/course add-student NAME`` (prints a generated password to hand out). Instructors
are JupyterHub admins. To use a real identity provider instead (OAuth, LTI 1.3), see
docs/course-server.md.
"""

from __future__ import annotations

from jupyterhub.auth import Authenticator
from traitlets import Unicode

from . import roster


class RosterAuthenticator(Authenticator):
    roster_file = Unicode(help="path of roster.json").tag(config=True)

    def _users(self) -> dict:
        return roster.load(self.roster_file)

    async def authenticate(self, handler, data):
        name = self.normalize_username((data or {}).get("username", ""))
        password = (data or {}).get("password", "")
        entry = self._users().get(name)
        if not entry or not password or not roster.check_password(password, entry.get("hash", "")):
            self.log.warning("failed login for %r", name)
            return None
        return {"name": name, "admin": entry.get("role") == "instructor"}

    def check_allowed(self, username, authentication=None):
        return username in self._users()

    async def refresh_user(self, user, handler=None):
        # a user removed from the roster must log in again, which then fails
        return user.name in self._users()
