"""What the waiting triggers, sensors and blocking operators share: backoff, deadlines, status events.

Every waiting trigger yields exactly one event ``{"status": "success"|"error"|"timeout"|"cancelled",
"message": str, ...}`` (the Amazon/dbt Cloud contract), so all failure policy lives in the operator's
``execute_complete``. Kept free of I/O so blocking and deferred paths decide the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from airflow_dcache.exceptions import DCacheConnectionError, LimitExceeded, ServerError

STATUSES = ("success", "error", "timeout", "cancelled")
TRANSIENT = (DCacheConnectionError, ServerError, LimitExceeded)
"""Errors worth retrying until the deadline: the service may come back; anything else is final."""

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_MAX_INTERVAL = 60.0
DEFAULT_TIMEOUT = 24 * 3600.0


@dataclass
class Backoff:
    """Poll interval that doubles after each "not yet" up to ``cap`` (capped exponential backoff)."""

    initial: float = DEFAULT_POLL_INTERVAL
    cap: float = DEFAULT_MAX_INTERVAL

    def __post_init__(self) -> None:
        check_interval(self.initial, "poll_interval")
        check_interval(self.cap, "max_poll_interval")
        self.cap = max(self.cap, self.initial)
        self._next = self.initial

    def next(self, deadline: float | None = None) -> float:
        """Seconds to sleep now (never past ``deadline``, a ``time.time()`` value)."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - time.time()))
        return delay


def check_interval(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{field_name}: expected a positive number of seconds, got {value!r}")
    return float(value)


def deadline_after(timeout: float | None) -> float:
    """Absolute ``time.time()`` deadline; serialised as such so a restarted trigger keeps the same one."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    return time.time() + check_interval(timeout, "timeout")


def event(status: str, message: str, **fields: Any) -> dict[str, Any]:
    """One status event payload (plain JSON)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    return {"status": status, "message": message, **fields}


def error_message(exc: BaseException) -> str:
    """A one-line description of an exception for an error event (hook errors are already masked)."""
    return f"{type(exc).__name__}: {exc}"
