"""The one capped exponential backoff used by every wait and reconnect loop of the provider.

Polls of a QoS transition or a bulk request (triggers and their blocking twins in the operators), the
SSE watcher's reconnects and the billing consumer's set-up retries all double their delay up to a cap.
Reconnect loops add jitter so that many watchers cut off by one service restart do not come back in
step; polls do not, so a poll never outlasts the deadline it was given.
"""

from __future__ import annotations

import random
from typing import Any


def positive_seconds(value: Any, field_name: str) -> float:
    """``value`` as seconds; a clear error naming the field for anything but a positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{field_name}: expected a positive number of seconds, got {value!r}")
    return float(value)


class Backoff:
    """``initial``, then doubled after each :meth:`next` up to ``cap``; :meth:`reset` after a healthy period.

    :param initial: the first delay (seconds).
    :param cap: the largest delay; raised to ``initial`` if smaller.
    :param jitter: spread each delay over ±20 % (reconnect loops), never past a deadline.
    """

    def __init__(self, initial: float = 1.0, cap: float = 60.0, *, jitter: bool = False,
                 names: tuple[str, str] = ("initial", "cap")) -> None:
        self.initial = positive_seconds(initial, names[0])
        self.cap = max(positive_seconds(cap, names[1]), self.initial)
        self.jitter = jitter
        self._next = self.initial

    def next(self, deadline: float | None = None) -> float:
        """Seconds to wait now; never past ``deadline`` (a ``time.time()`` value) when one is given."""
        import time

        delay = self._next
        self._next = min(self._next * 2, self.cap)
        if self.jitter:
            delay *= 0.8 + 0.4 * random.random()
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - time.time()))
        return delay

    def reset(self) -> None:
        self._next = self.initial
