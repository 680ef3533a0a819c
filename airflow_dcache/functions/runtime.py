"""What every function runtime provides, and the parts of a run that do not depend on the runtime.

A runtime starts the function with the task document on stdin, waits with a timeout, and hands back
a :class:`RunResult`: exit code, the captured stdout and stderr (bounded), and timing. It can be
stopped from another thread or a signal handler (``on_kill``). Parsing the result line and cutting the
log tail are shared so both runtimes behave the same.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_dcache.functions.warm import WarmInstance

MAX_RESULT_BYTES = 1024 * 1024
LOG_TAIL_BYTES = 4096
STDOUT_KEEP_BYTES = MAX_RESULT_BYTES + 64 * 1024
"""How much of stdout is kept: enough for a 1 MiB result line plus some text before it."""


class FunctionRunError(Exception):
    """The runtime could not run the function at all (missing image, no engine, cannot spawn)."""


class WarmUnsupported(FunctionRunError):
    """A warm instance could not be started (the runtime has no warm mode, or the function never said ready)."""


@dataclass(frozen=True)
class FunctionIdentity:
    """What ran: the runtime, the image (docker) and the digest pipelines version outputs by."""

    runtime: str
    name: str
    digest: str
    """The function's source digest (``sha256:…``); the same for both runtimes."""
    image: str | None = None
    image_id: str | None = None
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "name": self.name, "digest": self.digest, "image": self.image,
                "image_id": self.image_id, "command": list(self.command)}


@dataclass
class RunResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    started: datetime
    ended: datetime
    timed_out: bool = False
    killed: bool = False
    client_ip: str | None = None
    #: Why the run does not count when the exit code cannot say it (a warm instance that died or
    #: answered nonsense); the exit code is then the instance's, and may even be 0.
    failure: str | None = None
    #: Which warm instance ran it (``id``, ``cold_start_seconds``, ``document``, ``started``), or ``None``
    #: for a cold run; ``{"fallback": reason}`` when a warm run was asked for and ran cold.
    warm: dict[str, Any] | None = None

    @property
    def duration(self) -> float:
        return (self.ended - self.started).total_seconds()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.killed and self.failure is None


def now() -> datetime:
    return datetime.now(UTC)


def keep_tail(buffer: bytearray, chunk: bytes, limit: int) -> None:
    """Append ``chunk`` and drop the oldest bytes beyond ``limit`` (bounded memory for chatty functions)."""
    buffer.extend(chunk)
    if len(buffer) > limit:
        del buffer[: len(buffer) - limit]


def parse_result(stdout: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object on the last non-empty stdout line, or ``(None, reason)``."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None, "the function printed no result line"
    last = lines[-1]
    if len(last) > MAX_RESULT_BYTES:
        return None, f"the result line is {len(last)} bytes; the limit is {MAX_RESULT_BYTES}"
    try:
        value = json.loads(last)
    except ValueError:
        return None, "the last stdout line is not JSON"
    if not isinstance(value, dict):
        return None, "the last stdout line is not a JSON object"
    return value, None


def log_text(result: RunResult, secrets: list[str], limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the function's log: stderr, then stdout without the result line."""
    out_lines = result.stdout.splitlines()
    while out_lines and not out_lines[-1].strip():
        out_lines.pop()
    if out_lines and parse_result(result.stdout)[0] is not None:
        out_lines.pop()
    text = (result.stderr + b"\n".join(out_lines)).decode("utf-8", "replace")
    text = redact(text, secrets)
    data = text.encode()
    if len(data) > limit:
        text = data[-limit:].decode("utf-8", "ignore")
    return text


ENV_SECRET_MIN_LENGTH = 4
"""Environment values this long or longer are treated as secrets (shorter ones would mask ordinary words)."""


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The values of ``env`` that are masked in logs, records and results (the one rule for all of them)."""
    return [v for v in env.values() if v and len(v) >= ENV_SECRET_MIN_LENGTH]


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret (longest first) by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class FunctionRuntime(ABC):
    """Start a function, wait for it, stop it. One runtime object runs one function at a time."""

    name: str = ""

    def __init__(self) -> None:
        self._stop_requested = threading.Event()

    @abstractmethod
    def identify(self) -> FunctionIdentity:
        """Resolve what will run (fails fast on a missing image or function)."""

    @abstractmethod
    def client_ip(self) -> str | None:
        """The address dCache will see the function's requests from, when known (for an ``ip:`` caveat)."""

    @abstractmethod
    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        """Run to completion, timeout or :meth:`stop`; never raises for a failing function."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the running function (safe to call from another thread or twice)."""

    def start_warm(self, identity: FunctionIdentity, *, timeout: float) -> WarmInstance:
        """A new long-lived instance of the function that runs task documents one after the other.

        ``identity`` is what :meth:`identify` returned (the pool identifies once); ``timeout`` bounds
        the cold start. The default: no warm mode (the pool then runs each document cold).
        """
        raise WarmUnsupported(f"the {self.name or type(self).__name__} runtime has no warm mode")
