"""The event model: kinds, keys, JSON round trip and validation naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from airflow_dcache.events import EventKind, StorageEvent, format_time, kind_from_mask
from airflow_dcache.events.model import parse_time

PNFSID = "0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A"


def ev(**kw: object) -> StorageEvent:
    base: dict = dict(kind="closed_after_write", path="/data/in/a.h5", name="a.h5", is_dir=False,
                      time="2026-05-14T08:21:07.512Z", source="sse", cursor="chan#7")
    base.update(kw)
    return StorageEvent(**base)


def test_kind_from_mask_covers_dcache_flags() -> None:
    assert kind_from_mask(["IN_CLOSE_WRITE"]) is EventKind.CLOSED_AFTER_WRITE
    assert kind_from_mask(["IN_CREATE", "IN_ISDIR"]) is EventKind.CREATED
    assert kind_from_mask(["IN_ISDIR", "IN_MOVED_TO"]) is EventKind.MOVED_IN
    assert kind_from_mask(["IN_DELETE_SELF"]) is EventKind.DELETED
    assert kind_from_mask(["IN_CLOSE_NOWRITE"]) is EventKind.READ
    assert kind_from_mask(["IN_Q_OVERFLOW"]) is EventKind.OVERFLOW
    assert kind_from_mask(["IN_IGNORED"]) is None


def test_key_rules() -> None:
    assert ev(pnfsid=PNFSID).key == f"{PNFSID}:closed_after_write"
    # repeatable kinds keep the time so two reads are two events
    assert ev(pnfsid=PNFSID, kind="read").key == f"{PNFSID}:read@2026-05-14T08:21:07.512Z"
    # SSE without stat: the cursor is stable under a Last-Event-ID replay
    assert ev().key == "/data/in/a.h5@chan#7:closed_after_write"
    assert ev(source="kafka", cursor="billing:0:5").key == "/data/in/a.h5@2026-05-14T08:21:07.512Z:closed_after_write"
    # the same upload seen by both sources has one key
    assert ev(pnfsid=PNFSID).key == ev(pnfsid=PNFSID, source="kafka", cursor="billing:0:9").key


def test_payload_round_trip_is_plain_json() -> None:
    e = ev(pnfsid=PNFSID, size=12, user="alice", client_host="127.0.0.1", protocol="Http",
           mask=["IN_CLOSE_WRITE"], extra={"cookie": "x"})
    data = json.loads(json.dumps(e.to_payload()))
    assert data["key"] == e.key and data["mask"] == ["IN_CLOSE_WRITE"]
    back = StorageEvent.from_payload(data)
    assert back == e and back.extra == {"cookie": "x"} and back.kind is EventKind.CLOSED_AFTER_WRITE


@pytest.mark.parametrize(
    ("change", "field"),
    [({"kind": "exploded"}, "kind"), ({"path": "rel/a"}, "path"), ({"source": "nfs"}, "source"),
     ({"time": "yesterday"}, "time"), ({"size": "12"}, "size"), ({"size": True}, "size")],
)
def test_invalid_fields_are_named(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        ev(**change)


def test_from_payload_missing_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="'cursor' is missing"):
        StorageEvent.from_payload({"kind": "created", "path": "/a", "time": "2026-01-01T00:00:00.000Z",
                                   "source": "sse"})
    with pytest.raises(ValueError, match="'pnfsid'"):
        StorageEvent.from_payload({**ev().to_payload(), "pnfsid": 5})
    with pytest.raises(ValueError, match="JSON object"):
        StorageEvent.from_payload([])  # type: ignore[arg-type]


def test_time_formatting() -> None:
    moment = datetime(2026, 5, 14, 10, 21, 7, 512999, tzinfo=UTC)
    assert format_time(moment) == "2026-05-14T10:21:07.512Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert parse_time("2024-05-14T10:21:07.512+02:00") == datetime(2024, 5, 14, 8, 21, 7, 512000, tzinfo=UTC)
    with pytest.raises(ValueError):
        format_time(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="UTC offset"):
        parse_time("2026-01-01T00:00:00")
