"""Log a recurring cause once, not on every retry: the one log-once helper of the provider.

A watcher whose service is down retries every few seconds for hours; a warning per retry buries the
triggerer log. Each distinct message is logged at its level the first time and at DEBUG after that,
until :meth:`LogOnce.forget` (the cause went away, so its return is news again).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

#: Distinct messages remembered; the oldest is forgotten first (a message with a changing offset in it
#: must not grow the memory of a trigger that runs for months).
MEMORY = 256


class LogOnce:
    def __init__(self, logger: logging.Logger, memory: int = MEMORY) -> None:
        self.logger = logger
        self.memory = memory
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __call__(self, message: str, *args: Any, level: int = logging.WARNING, repeat_at_debug: bool = True) -> bool:
        """Log ``message % args`` at ``level`` if it is new, else at DEBUG (unless the caller logs the
        repeat itself: ``repeat_at_debug=False``); True if it was new."""
        text = message % args if args else message
        if text in self._seen:
            if repeat_at_debug:
                self.logger.debug(text)
            return False
        self._seen[text] = None
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        self.logger.log(level, text)
        return True

    def forget(self) -> None:
        self._seen.clear()
