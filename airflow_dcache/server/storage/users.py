"""The users file: who may log in, with which uid/gids, home and root.

Passwords are stored only as salted PBKDF2 hashes so the file can be shared with CI or committed
to a private deployment repository without leaking credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ITERATIONS = 120_000
_SCHEME = "pbkdf2_sha256"


class UsersFileError(ValueError):
    """The users file is missing, not JSON, or an entry is malformed (the message names the field)."""


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    uid: int
    gids: tuple[int, ...]
    home: str = "/"
    root: str = "/"
    roles: tuple[str, ...] = field(default=())
    dn: str | None = None  # X.509 subject, OpenSSL one-line form: /O=Example/CN=alice

    @property
    def admin(self) -> bool:
        return "admin" in self.roles


def hash_password(password: str, *, iterations: int = _ITERATIONS) -> str:
    """Return ``pbkdf2_sha256$<iterations>$<salt>$<digest>`` for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{_SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a hash made by :func:`hash_password`."""
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


def _parse_user(index: int, raw: Any) -> User:
    where = f"users[{index}]"
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: must be an object")
    unknown = set(raw) - {"username", "password_hash", "uid", "gids", "home", "root", "roles", "dn"}
    if unknown:
        raise UsersFileError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("username")
    if not isinstance(name, str) or not name or any(c in name for c in ":#/ ;,"):
        raise UsersFileError(f"{where}.username: a non-empty name without ':#/ ;,' is required")
    pw = raw.get("password_hash")
    if not isinstance(pw, str) or not pw.startswith(_SCHEME + "$"):
        raise UsersFileError(f"{where}.password_hash: expected a {_SCHEME} hash (see hash_password)")
    uid = raw.get("uid")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
        raise UsersFileError(f"{where}.uid: a non-negative integer is required")
    gids = raw.get("gids", [uid])
    if not isinstance(gids, list) or not gids or not all(isinstance(g, int) and g >= 0 for g in gids):
        raise UsersFileError(f"{where}.gids: a non-empty list of non-negative integers is required")
    paths = {}
    for key in ("home", "root"):
        value = raw.get(key, "/")
        if not isinstance(value, str) or not value.startswith("/") or "/../" in value + "/":
            raise UsersFileError(f"{where}.{key}: an absolute path is required")
        paths[key] = value.rstrip("/") or "/"
    roles = raw.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise UsersFileError(f"{where}.roles: a list of strings is required")
    dn = raw.get("dn")
    if dn is not None and (not isinstance(dn, str) or not dn.startswith("/") or "=" not in dn):
        raise UsersFileError(f"{where}.dn: an X.509 subject in one-line form is required, e.g. /O=Example/CN=alice")
    return User(name, pw, uid, tuple(gids), paths["home"], paths["root"], tuple(roles), dn)


def load_users(path: Path) -> dict[str, User]:
    """Parse and validate the users file, keyed by username."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise UsersFileError(f"cannot read users file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsersFileError(f"users file {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise UsersFileError(f"users file {path}: expected an object with a 'users' list")
    users: dict[str, User] = {}
    for i, raw in enumerate(doc["users"]):
        user = _parse_user(i, raw)
        if user.username in users:
            raise UsersFileError(f"users[{i}].username: duplicate user {user.username!r}")
        users[user.username] = user
    return users


def write_users(path: Path, users: list[dict[str, Any]]) -> None:
    """Write a users file readable only by its owner (it holds password hashes)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"users": users}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def new_password(nbytes: int = 18) -> str:
    """A random URL-safe password that never starts with ``-``.

    A leading dash makes command-line tools (``rclone obscure``, ``curl -u``) read the password as an option.
    """
    while True:
        password = secrets.token_urlsafe(nbytes)
        if not password.startswith("-"):
            return password


def write_dev_users(path: Path) -> str:
    """Create a development users file with one ``admin`` user; return its random password."""
    password = new_password()
    write_users(
        path,
        [{"username": "admin", "password_hash": hash_password(password), "uid": 0, "gids": [0],
          "home": "/", "root": "/", "roles": ["admin"]}],
    )
    return password
