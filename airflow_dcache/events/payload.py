"""TriggerEvent payloads (always a batch) and the consumer-side helper that flattens them.

The batch shape, caps and id are the contract of ``docs/event-contract.md`` §1; the lineage record is
§7. Everything here is pure so both triggers and every consumer task share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_dcache.events.model import StorageEvent

__all__ = [
    "CHUNK_LINEAGE_SCHEMA",
    "LINEAGE_SCHEMA",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "SCHEMA",
    "BatchBuilder",
    "batch_id",
    "batch_payload",
    "event_size",
    "events_from_asset_events",
    "lineage_chunk",
    "lineage_record",
    "lineage_records",
    "parse_batch",
]

SCHEMA = "airflow-dcache/storage-events/v1"
LINEAGE_SCHEMA = "airflow-dcache/lineage/v1"
#: One asset event for a chunk of files: ``records`` holds one lineage record per file version.
CHUNK_LINEAGE_SCHEMA = "airflow-dcache/lineage-chunk/v1"
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 512 * 1024
MAX_EVENT_BYTES = 16 * 1024
_ENVELOPE_BYTES = 256  # schema, site, source, batch_id, count, flush and the brackets


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_size(event: StorageEvent) -> int:
    """Bytes of the event's compact JSON plus its separator in the batch."""
    return len(_compact(event.to_payload()).encode()) + 1


def batch_id(events: Sequence[StorageEvent]) -> str:
    """Deterministic id: a replay of the same events yields the same id."""
    digest = hashlib.sha256("\n".join(e.key for e in events).encode()).hexdigest()
    return "b-" + digest[:20]


#: Seconds after a flush batch that one more is yielded, unless another yield comes first. Airflow 3.3.2
#: keeps one asset-queue row per asset and DAG and deletes it with the run it makes, and that run takes
#: only the events up to the row's creation (``docs/reliability.md``): a scheduler that creates the run
#: later than the first flush (14 s after the batch, seen at 10 uploads/s for 5 minutes on 2 cores)
#: strands that flush with the batch before it. A second, later flush queues the asset again.
FLUSH_AGAIN_AFTER = 30.0


def batch_payload(site: str, source: str, events: Sequence[StorageEvent], *, flush: bool = False) -> dict[str, Any]:
    """Build one TriggerEvent payload; refuses batches over the contract's caps."""
    if source not in ("sse", "kafka"):
        raise ValueError(f"source must be 'sse' or 'kafka', got {source!r}")
    if len(events) > MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_EVENTS} events, got {len(events)}")
    if flush and events:
        raise ValueError("a flush batch carries no events")
    payload = {
        "schema": SCHEMA,
        "site": site,
        "source": source,
        "batch_id": batch_id(events) if events else "b-flush",
        "count": len(events),
        "flush": flush,
        "events": [e.to_payload() for e in events],
    }
    if len(_compact(payload).encode()) > MAX_BATCH_BYTES:
        raise ValueError(f"a batch is at most {MAX_BATCH_BYTES} bytes of JSON")
    return payload


class BatchBuilder:
    """Accumulates events up to the caps; the trigger asks :meth:`would_overflow` before :meth:`add`.

    :param max_events: events per batch (at most :data:`MAX_BATCH_EVENTS`).
    :param max_bytes: bytes of JSON per batch (at most :data:`MAX_BATCH_BYTES`).
    """

    def __init__(self, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.max_events = min(max_events, MAX_BATCH_EVENTS)
        self.max_bytes = min(max_bytes, MAX_BATCH_BYTES)
        self.events: list[StorageEvent] = []
        self.bytes = _ENVELOPE_BYTES
        self._keys: set[str] = set()
        self._last: tuple[StorageEvent, int] | None = None

    def __len__(self) -> int:
        return len(self.events)

    def _size(self, event: StorageEvent) -> int:
        """``event_size``, remembered for the last event asked about (``would_overflow`` then ``add``)."""
        if self._last is not None and self._last[0] is event:
            return self._last[1]
        size = event_size(event)
        self._last = (event, size)
        return size

    def would_overflow(self, event: StorageEvent) -> bool:
        return len(self.events) + 1 > self.max_events or self.bytes + self._size(event) > self.max_bytes

    def add(self, event: StorageEvent) -> bool:
        """Add ``event`` unless its key is already in the batch; returns whether it was added."""
        if event.key in self._keys:
            return False
        size = self._size(event)
        if size > MAX_EVENT_BYTES:
            event = StorageEvent.from_payload({**event.to_payload(), "extra": {"trimmed": True}})
            size = event_size(event)
        self.events.append(event)
        self._keys.add(event.key)
        self.bytes += size
        return True

    def take(self) -> list[StorageEvent]:
        events, self.events, self.bytes, self._keys = self.events, [], _ENVELOPE_BYTES, set()
        return events


def parse_batch(payload: Mapping[str, Any]) -> list[StorageEvent]:
    """Validate a batch payload and return its events (``ValueError`` for anything else)."""
    if not isinstance(payload, Mapping) or payload.get("schema") != SCHEMA:
        got = payload.get("schema") if isinstance(payload, Mapping) else type(payload).__name__
        raise ValueError(f"not a {SCHEMA} payload (schema {got!r})")
    events = payload.get("events")
    if not isinstance(events, list):
        raise ValueError("payload field 'events' must be a list")
    return [StorageEvent.from_payload(e) for e in events]


def _extra_of(item: Any) -> Any:
    if isinstance(item, Mapping):
        return item.get("extra", item)
    return getattr(item, "extra", None)


def _asset_event_items(triggering_asset_events: Any) -> Iterable[Any]:
    """``triggering_asset_events`` maps each asset to a list; accept a plain iterable too."""
    if triggering_asset_events is None:
        return []
    if isinstance(triggering_asset_events, Mapping) or hasattr(triggering_asset_events, "values"):
        items: list[Any] = []
        for value in triggering_asset_events.values():
            items.extend(value if isinstance(value, (list, tuple)) else [value])
        return items
    return list(triggering_asset_events)


def events_from_asset_events(triggering_asset_events: Any) -> list[StorageEvent]:
    """Every storage event of a DAG run's triggering asset events, de-duplicated by key, in order.

    Accepts the task context's ``triggering_asset_events`` (asset → list of asset events), an iterable
    of asset events, or of their ``extra`` dicts / payloads. Asset events not produced by these
    triggers (other producers of the same asset) are skipped, as are flush batches.
    """
    seen: set[str] = set()
    result: list[StorageEvent] = []
    for item in _asset_event_items(triggering_asset_events):
        extra = _extra_of(item)
        if not isinstance(extra, Mapping):
            continue
        payload = extra.get("payload", extra)
        if not isinstance(payload, Mapping) or payload.get("schema") != SCHEMA:
            continue
        for event in parse_batch(payload):
            if event.key not in seen:
                seen.add(event.key)
                result.append(event)
    return result


def lineage_record(
    *,
    event_key: str,
    input: Mapping[str, Any],
    outputs: Sequence[Mapping[str, Any]],
    function: Mapping[str, Any],
    dag_id: str,
    run_id: str,
    activation_record: str | None = None,
) -> dict[str, Any]:
    """Build a contract §7 lineage record, checking the required keys so pipelines cannot drift."""
    for name, need in (("input", ("site", "path")), ("function", ("name", "digest"))):
        value = input if name == "input" else function
        for key in need:
            if not value.get(key):
                raise ValueError(f"lineage {name}.{key} is required")
    for i, out in enumerate(outputs):
        for key in ("site", "path"):
            if not out.get(key):
                raise ValueError(f"lineage outputs[{i}].{key} is required")
    if not event_key:
        raise ValueError("lineage event_key is required")
    return {
        "schema": LINEAGE_SCHEMA,
        "event_key": event_key,
        "input": {
            "site": input["site"],
            "path": input["path"],
            "pnfsid": input.get("pnfsid"),
            "checksums": dict(input.get("checksums") or {}),
        },
        "outputs": [
            {"site": o["site"], "path": o["path"], "size": o.get("size"), "checksums": dict(o.get("checksums") or {})}
            for o in outputs
        ],
        "activation_record": activation_record,
        "function": {"name": function["name"], "digest": function["digest"]},
        "dag_id": dag_id,
        "run_id": run_id,
    }


def lineage_chunk(records: Sequence[Mapping[str, Any]], *, dag_id: str, run_id: str, chunk: int) -> dict[str, Any]:
    """The ``extra`` of a chunk's lineage asset event: the per-file records of one chunk, in one event.

    The per-file design emits one asset event per file with the record itself as ``extra``; a chunk
    emits one event with the list (an asset event per file would cost the scheduler what chunks save).
    Readers use :func:`lineage_records`, which accepts both.
    """
    for i, record in enumerate(records):
        if record.get("schema") != LINEAGE_SCHEMA:
            raise ValueError(f"lineage chunk records[{i}]: expected schema {LINEAGE_SCHEMA!r}, "
                             f"got {record.get('schema')!r}")
    return {"schema": CHUNK_LINEAGE_SCHEMA, "dag_id": dag_id, "run_id": run_id, "chunk": chunk,
            "records": [dict(r) for r in records]}


def lineage_records(extra: Any) -> list[dict[str, Any]]:
    """The per-file lineage records an asset event's ``extra`` carries: one (per-file design), many (a chunk),
    or none (any other ``extra``). Every consumer reads lineage through this, whatever the pipeline's design."""
    if not isinstance(extra, Mapping):
        return []
    if extra.get("schema") == LINEAGE_SCHEMA:
        return [dict(extra)]
    if extra.get("schema") == CHUNK_LINEAGE_SCHEMA:
        return [dict(r) for r in extra.get("records") or []
                if isinstance(r, Mapping) and r.get("schema") == LINEAGE_SCHEMA]
    return []
