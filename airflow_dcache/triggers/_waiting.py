"""What the waiting triggers, sensors and blocking operators share: backoff, deadlines, status events.

Every waiting trigger yields exactly one event ``{"status": "success"|"error"|"timeout"|"cancelled",
"message": str, ...}`` (the Amazon/dbt Cloud contract), so all failure policy lives in the operator's
``execute_complete``. The helpers are free of I/O so blocking and deferred paths decide the same way;
:class:`PollingTrigger` is the one poll loop of the deferred path, built on them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_dcache.exceptions import DCacheConnectionError, LimitExceeded, ServerError
from airflow_dcache.utils.backoff import Backoff, positive_seconds

STATUSES = ("success", "error", "timeout", "cancelled")
TRANSIENT = (DCacheConnectionError, ServerError, LimitExceeded)
"""Errors worth retrying until the deadline: the service may come back; anything else is final."""

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_MAX_INTERVAL = 60.0
DEFAULT_TIMEOUT = 24 * 3600.0


def poll_backoff(poll_interval: Any, max_poll_interval: Any) -> Backoff:
    """The backoff of a poll loop; validates both intervals with errors naming the argument."""
    return Backoff(poll_interval, max_poll_interval, names=("poll_interval", "max_poll_interval"))


check_interval = positive_seconds


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


class PollingTrigger(BaseTrigger):
    """The loop of a trigger that polls dCache until a state is reached; one status event.

    Each round :meth:`poll` returns the final event or ``None`` (not yet); a transient error
    (:data:`TRANSIENT`) counts as "not yet". Between rounds the trigger sleeps with capped backoff, and
    past ``deadline`` it sends :meth:`timeout_event`. Any other exception becomes an ``error`` event
    with :meth:`unfinished_fields`. A subclass sets ``dcache_conn_id``, ``deadline``, ``poll_interval`` and
    ``max_poll_interval`` and says what it polls and when it is done.
    """

    dcache_conn_id: str
    deadline: float | None
    poll_interval: float
    max_poll_interval: float

    async def poll(self, hook: Any) -> dict[str, Any] | None:
        """One round: the final event's payload, or ``None`` to wait and poll again."""
        raise NotImplementedError

    def timeout_event(self) -> dict[str, Any]:
        """The event sent when the deadline passes before :meth:`poll` returned one."""
        raise NotImplementedError

    def unfinished_fields(self) -> dict[str, Any]:
        """Fields of an event that ends the wait unfinished: the ``error`` for an exception that ends it
        (subclasses give their timeout and failure events the same)."""
        return {}

    def _hook(self) -> Any:
        from airflow_dcache.hooks.dcache_async import DCacheAsyncHook

        return DCacheAsyncHook(self.dcache_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backoff = poll_backoff(self.poll_interval, self.max_poll_interval)
        try:
            async with self._hook() as hook:
                while True:
                    try:
                        outcome = await self.poll(hook)
                    except TRANSIENT as exc:  # the service may come back before the deadline
                        self.log.warning("dCache unavailable, retrying: %s", exc)
                        outcome = None
                    if outcome is not None:
                        yield TriggerEvent(outcome)
                        return
                    if self.deadline is not None and time.time() >= self.deadline:
                        yield TriggerEvent(self.timeout_event())
                        return
                    await asyncio.sleep(backoff.next(self.deadline))
        except Exception as exc:  # every failure becomes an event, so execute_complete decides
            yield TriggerEvent(event("error", error_message(exc), **self.unfinished_fields()))
