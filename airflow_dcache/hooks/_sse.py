"""Incremental parser for ``text/event-stream`` (the WHATWG server-sent events format), without I/O.

Feed it bytes as they arrive, in chunks of any size; it returns the complete events. Lines may end in
``\\r\\n``, ``\\n`` or ``\\r`` (also when a ``\\r\\n`` is split between chunks), comments (``:`` lines) are
skipped, several ``data:`` lines are joined with ``\\n``, and UTF-8 characters split between chunks are
reassembled. dCache sends each event's JSON on one ``data:`` line and ``SYSTEM`` events without ``id:``.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

from airflow_dcache.hooks.models import ChannelMessage

_EOL = re.compile(r"\r\n|\r|\n")

__all__ = ["ChannelMessage", "SSEParser"]


class SSEParser:
    """``feed(chunk)`` → list of :class:`ChannelMessage`; ``last_event_id`` is what to reconnect with.

    As the specification says, an event is dispatched only at its blank line: an incomplete event at the
    end of the stream is discarded, and an event without ``data`` is not dispatched. ``last_event_id``
    keeps the latest ``id:`` seen (it is not reset by events without one), while each event's own ``id``
    is ``None`` when it had no ``id:`` line, as ``SYSTEM`` events have not.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" belongs to it
        self._started = False
        self._reset()
        self.last_event_id: str | None = None
        self.retry: int | None = None  # reconnection time in ms, if the server sent one

    def _reset(self) -> None:
        self._type = ""
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes | str) -> list[ChannelMessage]:
        """Add a chunk of the stream; return the events it completed, in order."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            text = text.removeprefix("\n")
            self._skip_lf = False
        if not text:
            return []
        buffer = self._buffer + text
        events = []
        position = 0
        for match in _EOL.finditer(buffer):
            event = self.feed_line(buffer[position : match.start()])
            position = match.end()
            if event is not None:
                events.append(event)
        self._buffer = buffer[position:]
        self._skip_lf = buffer.endswith("\r")
        return events

    def feed_line(self, line: str) -> ChannelMessage | None:
        """Process one line without its terminator; return the event a blank line completes."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment (keep-alive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> ChannelMessage | None:
        if not self._data:
            self._reset()
            return None
        text = "\n".join(self._data)
        event = ChannelMessage(type=self._type or "message", id=self._id, data=_decode(text))
        self._reset()
        return event


def _decode(text: str) -> Any:
    """dCache's data is JSON; anything else is kept as the text, so one odd event cannot end the stream."""
    try:
        return json.loads(text)
    except ValueError:
        return text
