"""Batches: caps, deterministic ids, the consumer helper over real-shaped triggering_asset_events."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_dcache.events import (
    MAX_BATCH_EVENTS,
    BatchBuilder,
    StorageEvent,
    batch_payload,
    events_from_asset_events,
    lineage_record,
    parse_batch,
)


def ev(i: int, **kw: object) -> StorageEvent:
    base: dict = dict(kind="closed_after_write", path=f"/in/f{i}", name=f"f{i}", is_dir=False,
                      time="2026-05-14T08:21:07.512Z", source="sse", cursor=f"c#{i}", pnfsid=f"{i:036X}")
    base.update(kw)
    return StorageEvent(**base)


def test_batch_shape_and_deterministic_id() -> None:
    p = batch_payload("main", "sse", [ev(1), ev(2)])
    assert p["schema"] == "airflow-dcache/storage-events/v1" and p["count"] == 2 and p["flush"] is False
    assert p["batch_id"] == batch_payload("main", "sse", [ev(1), ev(2)])["batch_id"]
    assert p["batch_id"] != batch_payload("main", "sse", [ev(2), ev(1)])["batch_id"]
    assert [e.path for e in parse_batch(json.loads(json.dumps(p)))] == ["/in/f1", "/in/f2"]
    flush = batch_payload("main", "sse", [], flush=True)
    assert flush["events"] == [] and flush["flush"] is True


def test_caps_are_enforced() -> None:
    with pytest.raises(ValueError, match="at most"):
        batch_payload("main", "sse", [ev(i) for i in range(MAX_BATCH_EVENTS + 1)])
    b = BatchBuilder(max_events=3)
    for i in range(3):
        assert not b.would_overflow(ev(i))
        b.add(ev(i))
    assert b.would_overflow(ev(9))
    assert not b.add(ev(0))  # same key twice in one batch is kept once
    assert len(b.take()) == 3 and len(b) == 0
    small = BatchBuilder(max_bytes=1000)
    small.add(ev(1))
    assert small.would_overflow(ev(2, extra={"pad": "x" * 800}))
    huge = BatchBuilder()
    huge.add(ev(1, extra={"pad": "x" * 20000}))
    assert huge.events[0].extra == {"trimmed": True}


def test_parse_batch_refuses_other_schemas() -> None:
    with pytest.raises(ValueError, match="schema"):
        parse_batch({"schema": "other"})
    with pytest.raises(ValueError, match="events"):
        parse_batch({"schema": "airflow-dcache/storage-events/v1", "events": {}})


def test_events_from_asset_events_flattens_dedupes_and_skips_foreign() -> None:
    b1 = batch_payload("main", "sse", [ev(1), ev(2)])
    b2 = batch_payload("main", "kafka", [ev(2, source="kafka", cursor="t:0:1"), ev(3)])
    asset_events = {
        "dcache://main/in": [
            SimpleNamespace(extra={"from_trigger": True, "payload": b1}),
            SimpleNamespace(extra={"from_trigger": True, "payload": b2}),
            SimpleNamespace(extra={"something": "else"}),  # a task outlet on the same asset
            SimpleNamespace(extra={"from_trigger": True, "payload": batch_payload("main", "sse", [], flush=True)}),
        ],
        "dcache://main/other": [{"extra": {"from_trigger": True, "payload": b1}}],
    }
    events = events_from_asset_events(asset_events)
    assert [e.path for e in events] == ["/in/f1", "/in/f2", "/in/f3"]
    assert events_from_asset_events(None) == []
    assert [e.path for e in events_from_asset_events([b2])] == ["/in/f2", "/in/f3"]


def test_lineage_record_validates() -> None:
    rec = lineage_record(event_key="k", input={"site": "main", "path": "/in/f1", "pnfsid": "P"},
                         outputs=[{"site": "buffer", "path": "/out/f1", "size": 3}],
                         function={"name": "thumb", "digest": "sha256:00"}, dag_id="d", run_id="r")
    assert rec["schema"] == "airflow-dcache/lineage/v1" and rec["outputs"][0]["checksums"] == {}
    json.dumps(rec)
    with pytest.raises(ValueError, match=r"outputs\[0\]\.path"):
        lineage_record(event_key="k", input={"site": "main", "path": "/in/f1"}, outputs=[{"site": "b"}],
                       function={"name": "t", "digest": "d"}, dag_id="d", run_id="r")


def test_lineage_records_read_both_designs() -> None:
    """A per-file event carries one record, a chunk's event many; every reader gets the same records."""
    from airflow_dcache.events import CHUNK_LINEAGE_SCHEMA, lineage_chunk, lineage_records

    recs = [lineage_record(event_key=f"k{i}", input={"site": "main", "path": f"/in/f{i}"},
                           outputs=[{"site": "main", "path": f"/out/f{i}"}], function={"name": "t", "digest": "d"},
                           dag_id="d", run_id="r") for i in range(3)]
    chunk = lineage_chunk(recs, dag_id="d", run_id="r", chunk=2)
    assert chunk["schema"] == CHUNK_LINEAGE_SCHEMA and chunk["chunk"] == 2
    assert lineage_records(chunk) == recs
    assert lineage_records(recs[1]) == [recs[1]]
    json.dumps(chunk)
    for foreign in (None, [], {"schema": "x"}, {"schema": CHUNK_LINEAGE_SCHEMA, "records": [{"schema": "x"}, 3]}):
        assert lineage_records(foreign) == []
    with pytest.raises(ValueError, match=r"records\[0\]"):
        lineage_chunk([{"schema": "other"}], dag_id="d", run_id="r", chunk=0)
