"""The one poll loop of the deferred waits (:class:`PollingTrigger`), over the pure decisions of
:mod:`airflow_dcache.waits`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_dcache.waits import TRANSIENT, error_message, event, poll_backoff


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
