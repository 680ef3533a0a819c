"""The storage-event model, filters and TriggerEvent payloads shared by the SSE and Kafka triggers.

Pure Python (no Airflow or network imports), so consumer tasks can import it cheaply. The contract is
``docs/event-contract.md``.
"""

from __future__ import annotations

from airflow_dcache.events.filters import EventFilter
from airflow_dcache.events.model import KIND_BY_MASK, EventKind, StorageEvent, format_time, kind_from_mask
from airflow_dcache.events.payload import (
    CHUNK_LINEAGE_SCHEMA,
    LINEAGE_SCHEMA,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    SCHEMA,
    BatchBuilder,
    batch_payload,
    events_from_asset_events,
    lineage_chunk,
    lineage_record,
    lineage_records,
    parse_batch,
)

__all__ = [
    "CHUNK_LINEAGE_SCHEMA",
    "KIND_BY_MASK",
    "LINEAGE_SCHEMA",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "SCHEMA",
    "BatchBuilder",
    "EventFilter",
    "EventKind",
    "StorageEvent",
    "batch_payload",
    "events_from_asset_events",
    "format_time",
    "kind_from_mask",
    "lineage_chunk",
    "lineage_record",
    "lineage_records",
    "parse_batch",
]
