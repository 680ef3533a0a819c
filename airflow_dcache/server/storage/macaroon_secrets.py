"""Macaroon secrets kept in one JSON file so issued macaroons survive a server restart.

dCache shares secrets between doors through ZooKeeper; a single-process test server only needs
them on disk. The file holds bearer-token signing keys, so it is created 0600 and replaced
atomically (temp file, fsync, rename) so a crash never leaves a half-written key file behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

SECRET_BYTES = 32
"""jmacaroons' ``MACAROON_SUGGESTED_SECRET_LENGTH``."""


class SecretStoreError(RuntimeError):
    """The secrets file exists but cannot be read; refusing beats silently forgetting keys."""


@dataclass(frozen=True)
class StoredSecret:
    identifier: str
    secret: bytes
    expiry: datetime


def secret_identifier(secret: bytes) -> str:
    """First 6 bytes of SHA-256, standard base64: the 8-character id dCache puts in a macaroon."""
    return base64.b64encode(hashlib.sha256(secret).digest()[:6]).decode("ascii")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


class MacaroonSecretStore:
    """Secrets by identifier, each with its own expiry after which macaroons using it die."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._secrets: dict[str, StoredSecret] = self._load()

    def _load(self) -> dict[str, StoredSecret]:
        try:
            raw = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            entries = json.loads(raw)["secrets"]
            loaded = [
                StoredSecret(e["identifier"], base64.b64decode(e["secret"], validate=True),
                             datetime.fromisoformat(e["expiry"]))
                for e in entries
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise SecretStoreError(f"cannot read macaroon secrets from {self._path}: {exc}") from None
        if any(s.expiry.tzinfo is None for s in loaded):
            raise SecretStoreError(f"cannot read macaroon secrets from {self._path}: expiry lacks a timezone")
        return {s.identifier: s for s in loaded}

    def _save(self) -> None:
        doc = {
            "secrets": [
                {"identifier": s.identifier, "secret": base64.b64encode(s.secret).decode("ascii"),
                 "expiry": s.expiry.isoformat()}
                for s in sorted(self._secrets.values(), key=lambda s: s.expiry)
            ]
        }
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".macaroon-secrets.", dir=self._path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _purge(self, now: datetime) -> bool:
        expired = [k for k, s in self._secrets.items() if s.expiry < now]
        for key in expired:
            del self._secrets[key]
        return bool(expired)

    def secret_expiring_after(
        self, expiry: datetime, *, lifetime: timedelta, now: datetime | None = None
    ) -> StoredSecret:
        """A secret that outlives ``expiry``: the soonest-expiring such one, else a new one.

        Reuse keeps the number of live secrets small; a new secret lives ``lifetime`` (the
        maximum macaroon lifetime) so later macaroons can share it.
        """
        current = _utc(now)
        with self._lock:
            changed = self._purge(current)
            usable = [s for s in self._secrets.values() if s.expiry > expiry]
            if usable:
                if changed:
                    self._save()
                return min(usable, key=lambda s: s.expiry)
            while True:
                raw = secrets.token_bytes(SECRET_BYTES)
                ident = secret_identifier(raw)
                if ident not in self._secrets:
                    break
            fresh = StoredSecret(ident, raw, max(current + lifetime, expiry + timedelta(seconds=1)))
            self._secrets[ident] = fresh
            self._save()
            return fresh

    def find(self, identifier: str, now: datetime | None = None) -> bytes | None:
        """The secret for a macaroon identifier, or None if unknown or expired."""
        with self._lock:
            if self._purge(_utc(now)):
                self._save()
            found = self._secrets.get(identifier)
            return found.secret if found else None
