"""The course roster: ``<root>/hub/roster.json`` (root only, 0600).

``{"users": {"alice": {"role": "student", "hash": "pbkdf2_sha256$ITER$SALT$HASH"}}}``.
Usernames are unix account names (each user's server runs as that account). Passwords are
stored as salted PBKDF2-SHA256 hashes; the file is re-read on every login, so adding or
removing a user needs no hub restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path

from gmmcourse.atomic import atomic_write

ROLES = ("student", "instructor")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
ITERATIONS = 200_000


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and name not in {"root", "nobody", "daemon", "bin", "sys", "admin"}


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "pbkdf2_sha256${}${}${}".format(iterations, base64.b64encode(salt).decode(), base64.b64encode(dk).decode())


def check_password(password: str, stored: str) -> bool:
    try:
        algo, it, salt, want = stored.split("$")
        if algo != "pbkdf2_sha256":
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(it))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk, base64.b64decode(want))


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return dict(data.get("users", {}))


def save(path: Path, users: dict) -> None:
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"users": users}, indent=1, sort_keys=True), 0o600, exact=True)  # private: hashes


def new_password() -> str:
    return secrets.token_urlsafe(12)
