"""Helpers for the storage-events tests (no tests here): a small SSE client and API shortcuts.

The SSE client speaks HTTP/1.1 over a plain socket so a test controls exactly when the connection
opens and closes, sees the raw frames, and notices when the server ends the stream. Every read
has a timeout; nothing waits forever.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

JSON = {"Content-Type": "application/json"}


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None

    @property
    def doc(self) -> Any:
        return json.loads(self.data)

    @property
    def mask(self) -> list[str]:
        return self.doc["event"]["mask"]


class SseClient:
    """``GET url`` with ``Accept: text/event-stream``; events arrive on a queue from a reader thread."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None,
                 connect_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=connect_timeout)
        lines = [f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1", f"Host: {parts.netloc}"]
        if not any(k.lower() == "accept" for k in headers or {}):
            lines.append("Accept: text/event-stream")
        if auth is not None:
            lines.append("Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.sock.settimeout(0.2)
        self.events: queue.Queue[SseEvent | None] = queue.Queue()
        self.raw = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._head = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._head.wait(connect_timeout):
            raise TimeoutError("no response headers")

    # -- reading -----------------------------------------------------------------------------
    def _recv(self) -> bytes | None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            return data or None
        return None

    def _read(self) -> None:
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = self._recv()
                if data is None:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            self.headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            self._head.set()
            if self.headers.get("transfer-encoding") != "chunked":
                length = int(self.headers.get("content-length", "0"))
                while len(buf) < length:
                    data = self._recv()
                    if data is None:
                        break
                    buf += data
                self.body = buf[:length]
                return
            self._chunked(buf)
        finally:
            self._head.set()
            self.closed.set()
            self.events.put(None)

    def _chunked(self, buf: bytes) -> None:
        text = b""
        while True:
            while b"\r\n" not in buf:
                data = self._recv()
                if data is None:
                    return
                buf += data
            size_line, rest = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = self._recv()
                if data is None:
                    return
                rest += data
            chunk, buf = rest[:size], rest[size + 2:]
            if size == 0:
                return
            self.raw += chunk
            text += chunk
            while b"\n\n" in text:
                block, text = text.split(b"\n\n", 1)
                self.events.put(self._parse(block.decode()))

    @staticmethod
    def _parse(block: str) -> SseEvent:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            fields.setdefault(key, []).append(value[1:] if value.startswith(" ") else value)
        return SseEvent(fields.get("event", ["message"])[0], "\n".join(fields.get("data", [])),
                        fields.get("id", [None])[0])

    # -- test API ----------------------------------------------------------------------------
    def next(self, timeout: float = 5.0) -> SseEvent:
        event = self.events.get(timeout=timeout)
        if event is None:
            self.events.put(None)
            raise EOFError("stream closed")
        return event

    def collect(self, count: int | None = None, timeout: float = 5.0, until=None) -> list[SseEvent]:
        """Events until ``count`` arrived, ``until(event)`` is true, the stream ends or ``timeout``."""
        got: list[SseEvent] = []
        deadline = time.monotonic() + timeout
        while count is None or len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                self.events.put(None)
                break
            got.append(event)
            if until is not None and until(event):
                break
        return got

    def quiet(self, seconds: float = 0.5) -> list[SseEvent]:
        """Whatever arrives within ``seconds`` (used to show that nothing more comes)."""
        return self.collect(timeout=seconds)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Events:
    """Shortcuts for one user against the events API; deletes its channels on :meth:`cleanup`."""

    def __init__(self, server, user: str, *, token: str | None = None) -> None:
        self.server = server
        self.user = user
        self.session = requests.Session()
        if token is None:
            self.session.auth = server.auth(user)
        else:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.api = f"{server.api}/events"
        self.created: list[str] = []

    def channel(self, client_id: str | None = None) -> str:
        body = None if client_id is None else json.dumps({"client-id": client_id})
        r = self.session.post(f"{self.api}/channels", data=body, headers=JSON if body else None)
        assert r.status_code == 201, (r.status_code, r.text)
        assert r.content == b""
        self.created.append(r.headers["Location"])
        return r.headers["Location"]

    def subscribe(self, channel: str, selector: dict[str, Any], event_type: str = "inotify",
                  expect: int = 201) -> str:
        r = self.session.post(f"{channel}/subscriptions/{event_type}", json=selector, allow_redirects=False)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.headers.get("Location", "")

    def stream(self, channel: str, headers: dict[str, str] | None = None) -> SseClient:
        auth = self.session.auth if isinstance(self.session.auth, tuple) else None
        hdrs = dict(headers or {})
        if auth is None and "Authorization" in self.session.headers:
            hdrs["Authorization"] = str(self.session.headers["Authorization"])
        client = SseClient(channel, auth=auth, headers=hdrs)
        assert client.status == 200, (client.status, client.body)
        return client

    def cleanup(self) -> None:
        for url in self.created:
            self.session.delete(url)
        self.session.close()


def dav(server, user: str) -> requests.Session:
    s = requests.Session()
    s.auth = server.auth(user)
    return s


def fresh_dir(server, user: str = "alice", parent: str | None = None) -> str:
    """Create a new directory (mode 0755) and return its path."""
    parent = parent or f"/home/{user}"
    name = f"ev-{uuid.uuid4().hex[:8]}"
    r = requests.post(f"{server.api}/namespace{parent}", json={"action": "mkdir", "name": name},
                      auth=server.auth(user))
    assert r.status_code == 201, r.text
    return f"{parent}/{name}"


def inotify(events: list[SseEvent]) -> list[tuple[str | None, list[str]]]:
    """(name, mask) of each inotify event, for compact assertions."""
    return [(e.doc["event"].get("name"), e.mask) for e in events if e.event == "inotify"]


def system(events: list[SseEvent]) -> list[dict[str, Any]]:
    return [e.doc for e in events if e.event == "SYSTEM"]
