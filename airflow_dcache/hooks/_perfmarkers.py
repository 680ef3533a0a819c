"""Incremental parser for the ``text/perf-marker-stream`` body of an HTTP third-party COPY.

The HTTP status is 202 whether the copy works or not; the outcome is only in the last line
(``success: Created`` / ``failure: <reason>``). The parser is fed one line at a time so that both hooks
can log progress while the stream is still open, and it tolerates the old integer ``State:`` values as
well as the text values used since dCache 8.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PerfMarker:
    """One ``Perf Marker … End`` block; fields missing until the pool has mover information are None."""

    fields: dict[str, str] = field(repr=False)
    timestamp: int | None = None
    state: str | None = None
    state_description: str | None = None
    bytes_transferred: int | None = None
    stripe_status: str | None = None
    remote_connections: str | None = None

    def describe(self) -> str:
        """A one-line summary for the task log."""
        parts = [self.state_description or self.state or "progress"]
        if self.bytes_transferred is not None:
            parts.append(f"{self.bytes_transferred} bytes")
        if self.stripe_status:
            parts.append(self.stripe_status)
        return ", ".join(parts)


@dataclass(frozen=True)
class TransferOutcome:
    """The closing line of the stream."""

    success: bool
    message: str


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _marker(fields: dict[str, str]) -> PerfMarker:
    return PerfMarker(
        fields=fields,
        timestamp=_int(fields.get("timestamp")),
        state=fields.get("state"),
        state_description=fields.get("state description"),
        bytes_transferred=_int(fields.get("stripe bytes transferred")),
        stripe_status=fields.get("stripe status"),
        remote_connections=fields.get("remoteconnections"),
    )


class PerfMarkerParser:
    """Feed lines; get a ``PerfMarker`` at each ``End`` and a ``TransferOutcome`` at the final line."""

    def __init__(self) -> None:
        self._fields: dict[str, str] | None = None
        self.markers = 0
        self.last_marker: PerfMarker | None = None
        self.outcome: TransferOutcome | None = None

    def feed(self, line: str) -> PerfMarker | TransferOutcome | None:
        text = line.strip()
        if not text:
            return None
        lowered = text.lower()
        if lowered == "perf marker":
            self._fields = {}
            return None
        if lowered == "end" and self._fields is not None:
            marker = _marker(self._fields)
            self._fields = None
            self.markers += 1
            self.last_marker = marker
            return marker
        if self._fields is not None:
            key, sep, value = text.partition(":")
            if sep:
                self._fields[key.strip().lower()] = value.strip()
            return None
        for prefix, ok in (("success:", True), ("failure:", False)):
            if lowered.startswith(prefix):
                self.outcome = TransferOutcome(success=ok, message=text[len(prefix) :].strip())
                return self.outcome
        return None  # tolerate anything else (blank keep-alives, future additions)

    def finish(self) -> TransferOutcome:
        """The outcome, or a failure if the stream ended without one (connection dropped mid-copy)."""
        if self.outcome is not None:
            return self.outcome
        return TransferOutcome(success=False, message="transfer stream ended without a success or failure line")


def parse_perf_marker_stream(text: str) -> tuple[list[PerfMarker], TransferOutcome]:
    """Parse a whole body at once (tests, logs); live transfers use :class:`PerfMarkerParser`."""
    parser = PerfMarkerParser()
    markers: list[PerfMarker] = []
    for line in text.splitlines():
        item = parser.feed(line)
        if isinstance(item, PerfMarker):
            markers.append(item)
    return markers, parser.finish()
