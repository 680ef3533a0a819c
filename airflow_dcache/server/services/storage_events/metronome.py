"""The ``metronome`` event type: a configurable stream of messages, for tests and keep-alives."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Any

from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.storage_events.channel import Channel, Subscription

MIN_FREQUENCY, MAX_FREQUENCY = 1 / 300, 1e6
MIN_DELAY, MAX_DELAY = 1e-6, 300.0
MAX_MESSAGE = 4096
# The loop wakes at most every MIN_SLEEP and sends at most BATCH events per wake-up, so a fast
# metronome costs bounded CPU (about 10,000 events/s) instead of starving the server.
MIN_SLEEP = 0.01
BATCH = 100
_KEYS = ("frequency", "delay", "message", "count")


def _number(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"Bad selector: Field '{name}' must be a number")
    return float(value)


class MetronomeSelector:
    __slots__ = ("count", "delay", "frequency", "message")

    def __init__(self, frequency: float | None, delay: float | None, message: str, count: int) -> None:
        self.frequency = frequency
        self.delay = delay
        self.message = message
        self.count = count

    @property
    def period(self) -> float:
        return self.delay if self.delay is not None else 1.0 / (self.frequency or 1.0)

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> MetronomeSelector:
        unknown = [k for k in doc if k not in _KEYS]
        if unknown:
            raise BadRequest(f"Bad selector: Unrecognized field \"{unknown[0][:64]}\" "
                             f"(known fields: {', '.join(_KEYS)})")
        frequency, delay = _number(doc, "frequency"), _number(doc, "delay")
        if (frequency is None) == (delay is None):
            raise BadRequest("Bad selector: exactly one of 'frequency' or 'delay' is required")
        if frequency is not None and not MIN_FREQUENCY <= frequency <= MAX_FREQUENCY:
            raise BadRequest(f"Bad selector: frequency must be between {MIN_FREQUENCY:g} and {MAX_FREQUENCY:g} Hz")
        if delay is not None and not MIN_DELAY <= delay <= MAX_DELAY:
            raise BadRequest(f"Bad selector: delay must be between {MIN_DELAY:g} and {MAX_DELAY:g} seconds")
        message = doc.get("message", "tick")
        if message is None:
            message = "tick"
        if not isinstance(message, str) or len(message) > MAX_MESSAGE:
            raise BadRequest(f"Bad selector: Field 'message' must be a string of at most {MAX_MESSAGE} characters")
        count = doc.get("count", 0)
        if count is None:
            count = 0
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BadRequest("Bad selector: Field 'count' must be an integer >= 0")
        return cls(frequency, delay, message, count)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.frequency is not None:
            doc["frequency"] = self.frequency
        if self.delay is not None:
            doc["delay"] = self.delay
        doc["message"] = self.message
        doc["count"] = self.count
        return doc


class MetronomeSubscription(Subscription):
    event_type = "metronome"

    def __init__(self, channel: Channel, sid: str, url: str, selector: MetronomeSelector) -> None:
        super().__init__(channel, sid, url)
        self.sel = selector
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def selector(self) -> dict[str, Any]:
        return self.sel.to_json()

    def release(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _payload(self) -> str:
        text = self.sel.message.replace("${username}", self.channel.login.username)
        return json.dumps(text.replace("${count}", str(self.sent)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period, limit = self.sel.period, self.sel.count
        due_at = loop.time() + period
        while not self.closed and (limit == 0 or self.sent < limit):
            await asyncio.sleep(max(due_at - loop.time(), MIN_SLEEP))
            now = loop.time()
            due = min(BATCH, int((now - due_at) / period) + 1)
            for _ in range(due):
                if self.closed or (limit and self.sent >= limit):
                    break
                self.sent += 1
                self.deliver(self._payload())
            due_at = max(due_at + due * period, now - period)  # never build up an unbounded debt
        if not self.closed:
            self.channel.close_subscription(self)


class MetronomeSource:
    description = "a configurable stream of messages"

    def subscribe(self, channel: Channel, login: Login, doc: dict[str, Any],
                  channel_url: str) -> tuple[Subscription, bool]:
        selector = MetronomeSelector.parse(doc)
        sid = str(uuid.uuid4())
        sub = MetronomeSubscription(channel, sid, f"{channel_url}/subscriptions/metronome/{sid}", selector)
        channel.add_subscription(sub)
        sub.start()
        return sub, True
