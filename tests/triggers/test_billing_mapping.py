"""The pure billing-record → StorageEvent mapping and the trigger's filtering, no broker.

Records come from the bundled service's own serializers (the shapes ``tests/server/test_billing_kafka.py``
checks key by key against dCache) and from the reference examples (``dcache-api.md`` §5.5/§5.6).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta, timezone

import pytest

from airflow_dcache.events.billing import BillingRecordError, billing_event, billing_fields, parse_billing_record
from airflow_dcache.events.model import EventKind, StorageEvent, format_time, parse_time
from airflow_dcache.events.payload import SCHEMA, parse_batch
from airflow_dcache.server.services.billing import records as rec
from airflow_dcache.triggers.billing import DCacheBillingEventTrigger
from airflow_dcache.triggers.billing_stream import BillingBatch

POOL = rec.Cell("pool_a", "pool", "poolDomain")
DOOR = rec.Cell("WebDAV-door01", "door", "webdavDomain")
PNFSID = "0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A"
SUBJECT = rec.subject_principals(1000, [1000], "alice", origin="198.51.100.7")
CEST = timezone(timedelta(hours=2))


def pnfsid_of(path: str) -> str:
    """One pnfsid per path (the reference example's for its path), as dCache gives one per file."""
    if path == "/data/foo/clip.mp4":
        return PNFSID
    return hashlib.sha256(path.encode()).hexdigest()[:36].upper()


def mover(path: str = "/data/foo/clip.mp4", *, write: bool = True, p2p: bool = False, code: int = 0,
          size: int = 104857600, host: str = "198.51.100.7") -> rec.MoverInfo:
    return rec.MoverInfo(
        cell=POOL, date_ms=1715674867512, session="pool:pool_a@poolDomain:1715674867512-88", subject=SUBJECT,
        pnfsid=pnfsid_of(path), file_size=size, transfer_size=size, transfer_time=842, is_write=write,
        protocol_info=rec.ProtocolInfo("Https", host, 53122), initiator="door:WebDAV-door01@webdavDomain:1-12",
        billing_path=path, transfer_path=path, status=rec.Status(code, "" if code == 0 else "disk full"),
        write=rec.IoStats(1.2582912e8, 4, 830) if write else None,
        read=None if write else rec.IoStats(1e6, 0, 10), is_p2p=p2p, storage_info="foo:video@osm")


def encoded(record: dict) -> bytes:
    return rec.encode(record)


def transfer(**kw) -> bytes:  # type: ignore[no-untyped-def]
    return encoded(rec.transfer_record(mover(**kw), CEST))


def door(msg_type: str = "request", with_mover: bool = True, **kw) -> bytes:  # type: ignore[no-untyped-def]
    m = mover(**kw)
    return encoded(rec.door_record(rec.DoorRequestInfo(
        cell=DOOR, date_ms=1715674867530, session="door:WebDAV-door01@webdavDomain:1-12", subject=SUBJECT,
        client="198.51.100.7", uid=1000, gid=1000, owner="alice", pnfsid=m.pnfsid, file_size=m.file_size,
        billing_path=m.billing_path, transfer_path=m.transfer_path, msg_type=msg_type,
        mover=m if with_mover else None), CEST))


def storage(msg_type: str) -> bytes:
    return encoded(rec.storage_record(rec.StorageInfoMsg(
        msg_type=msg_type, cell=POOL, date_ms=1715674867512, transaction="pool:pool_a@poolDomain:1-90",
        pnfsid=PNFSID, file_size=10, storage_info="foo:video@osm", transfer_time=5,
        billing_path="/data/foo/clip.mp4", hsm=rec.HsmInfo("osm", "osm", "copy"),
        locations=["osm://osm/?store=foo&group=video&bfid=1"])))


def event(value: bytes, offset: int = 7) -> StorageEvent:
    ev = billing_event(value, cursor=f"billing:0:{offset}")
    assert isinstance(ev, StorageEvent)
    return ev


# -- mapping ---------------------------------------------------------------------------------------


def test_pool_write_transfer_is_closed_after_write_with_every_field() -> None:
    ev = event(transfer())
    assert ev.kind is EventKind.CLOSED_AFTER_WRITE
    assert (ev.path, ev.name, ev.is_dir, ev.source, ev.cursor) == (
        "/data/foo/clip.mp4", "clip.mp4", False, "kafka", "billing:0:7")
    assert ev.time == "2024-05-14T08:21:07.512Z"  # +02:00 converted to UTC, milliseconds
    assert (ev.size, ev.pnfsid, ev.user, ev.client_host, ev.protocol) == (
        104857600, PNFSID, "alice", "198.51.100.7", "Https")
    assert ev.extra["msgType"] == "transfer" and ev.extra["isP2p"] is False
    assert ev.extra["status"] == {"code": 0, "msg": ""} and ev.extra["transferSize"] == 104857600
    assert ev.extra["cellName"] == "pool_a" and ev.extra["storageInfo"] == "foo:video@osm"
    assert ev.key == f"{PNFSID}:closed_after_write"
    assert StorageEvent.from_payload(json.loads(json.dumps(ev.to_payload()))) == ev


def test_reference_examples_map_as_the_contract_says() -> None:
    upload = (b'{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07.512+02:00","queuingTime":0,'
              b'"cellName":"pool_a","cellType":"pool","cellDomain":"poolDomain","status":{"code":0,"msg":""},'
              b'"subject":["UidPrincipal[1000]","UserNamePrincipal[alice]"],"pnfsid":"' + PNFSID.encode() +
              b'","billingPath":"/data/foo/clip.mp4","fileSize":104857600,"transferSize":104857600,'
              b'"isWrite":"write","protocolInfo":{"protocol":"Https","port":53122,"host":"198.51.100.7"},'
              b'"isP2p":false,"transferPath":"/data/foo/clip.mp4"}')
    remove = (b'{"VERSION":"1.0","msgType":"remove","date":"2024-05-14T11:02:44.101+02:00","queuingTime":0,'
              b'"cellName":"WebDAV-door01","cellType":"door","cellDomain":"webdavDomain",'
              b'"status":{"code":0,"msg":""},"subject":["UidPrincipal[1000]"],"client":"198.51.100.7",'
              b'"clientChain":"unknown","owner":"alice","pnfsid":"' + PNFSID.encode() +
              b'","billingPath":"/data/foo/clip.mp4","fileSize":104857600}')
    up, rm = event(upload), event(remove)
    assert (up.kind, up.time, up.user) == (EventKind.CLOSED_AFTER_WRITE, "2024-05-14T08:21:07.512Z", "alice")
    assert (rm.kind, rm.user, rm.client_host, rm.time) == (
        EventKind.DELETED, "alice", "198.51.100.7", "2024-05-14T09:02:44.101Z")


@pytest.mark.parametrize(("value", "kind"), [
    (transfer(write=False), EventKind.READ),
    (door(), EventKind.CLOSED_AFTER_WRITE),
    (door(write=False), EventKind.READ),
    (door("remove", with_mover=False), EventKind.DELETED),
    (storage("store"), EventKind.FLUSHED),
    (storage("restore"), EventKind.STAGED),
])
def test_kinds(value: bytes, kind: EventKind) -> None:
    assert event(value).kind is kind


def test_door_request_and_pool_transfer_of_one_upload_share_the_key() -> None:
    pool, req = event(transfer()), event(door())
    assert pool.key == req.key
    assert req.client_host == "198.51.100.7" and req.protocol == "Https" and req.user == "alice"


@pytest.mark.parametrize("value", [
    door(with_mover=False),  # the request failed before a mover ran
    encoded(rec.pool_remove_record(rec.PoolRemoveInfo(POOL, 1715674867512, "pool:pool_a@poolDomain:1-90",
                                                      PNFSID, 10, "sweeper"))),  # a replica, not the file
    b'{"version":"1.0","msgType":"hit","date":"2024-05-14T10:21:07Z","cellName":"p","cellType":"pool",'
    b'"status":{"code":0},"pnfsid":"X","filesize":1,"billingPath":"/a","cached":true}',
    b'{"version":"1.0","msgType":"warning","date":"2024-05-14T10:21:07Z","status":{"code":1,"msg":"w"}}',
    transfer(path="Unknown"),
])
def test_valid_records_that_are_no_file_event_map_to_none(value: bytes) -> None:
    assert billing_event(value, cursor="t:0:1") is None


def test_nfs_remove_path_is_not_an_absolute_path() -> None:
    doc = json.loads(door("remove", with_mover=False))
    doc["billingPath"] = doc["transferPath"] = "parent:[000011112222]/x.dat"
    assert billing_event(json.dumps(doc), cursor="t:0:1") is None


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"),
    (b"\xff\xfe", "UTF-8"),
    (b"not json", "not JSON"),
    (b"[1,2]", "JSON list"),
    (b'{"msgType":"transfer"}', "version"),
    (b'{"version":"1.0","msgType":"upload","date":"2024-05-14T10:21:07Z"}', "msgType 'upload'"),
    (b'{"version":"1.0","msgType":"transfer"}', "date"),
    (b'{"version":"1.0","msgType":"store","date":"yesterday","status":{"code":0},"billingPath":"/a"}', "ISO-8601"),
    (b'{"version":"1.0","msgType":"store","date":"2024-05-14T10:21:07","billingPath":"/a"}', "offset"),
    (b'{"version":"1.0","msgType":"store","date":"2024-05-14T10:21:07Z","status":"ok"}', "status"),
    (b'{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07Z","isWrite":true,'
     b'"billingPath":"/a"}', "isWrite"),
    (b'{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07Z","isWrite":"write",'
     b'"billingPath":"/a","fileSize":"12"}', "fileSize"),
    (b'{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07Z","isWrite":"write",'
     b'"billingPath":"/a","subject":"alice"}', "subject"),
])
def test_invalid_records_raise_naming_the_problem(value: bytes | None, reason: str) -> None:
    with pytest.raises(BillingRecordError, match=reason):
        billing_event(value, cursor="t:0:1")


def test_time_format_equals_the_model_helper() -> None:
    for date in ("2024-05-14T08:21:07Z", "2024-05-14T10:21:07.5+02:00", "2024-05-14T03:21:07.123456-05:00"):
        fields = billing_fields(parse_billing_record(json.dumps({"version": "1.0", "msgType": "store",
                                                                  "date": date, "billingPath": "/a"})))
        assert fields is not None and fields.time == format_time(parse_time(date))


# -- filters through the trigger --------------------------------------------------------------------


def batch_of(*values: bytes) -> BillingBatch:
    events = tuple(e for i, v in enumerate(values) if (e := billing_event(v, cursor=f"billing:0:{i}")))
    return BillingBatch(events, records=len(values))


def payload_paths(trigger: DCacheBillingEventTrigger, batch: BillingBatch) -> list[str]:
    out = []
    for payload in trigger.payloads(batch):
        assert payload["schema"] == SCHEMA and payload["source"] == "kafka" and payload["site"] == trigger.site
        out += [e.path for e in parse_batch(payload)]
    return out


def test_default_filter_keeps_successful_client_uploads_only() -> None:
    trigger = DCacheBillingEventTrigger(topics=["billing"], site="main")
    batch = batch_of(transfer(path="/d/ok.h5"), door(path="/d/ok.h5"), transfer(path="/d/p2p.h5", p2p=True),
                     transfer(path="/d/failed.h5", code=10006), transfer(path="/d/read.h5", write=False),
                     door("remove", with_mover=False, path="/d/gone.h5"), storage("store"))
    # the door request repeats the pool transfer: one event per key in a batch
    assert payload_paths(trigger, batch) == ["/d/ok.h5"]


def test_filter_fields() -> None:
    batch = batch_of(transfer(path="/data/in/a.h5", size=10), transfer(path="/data/in/b.txt", size=5000),
                     transfer(path="/data/out/c.h5", size=100, host="10.1.2.3"),
                     transfer(path="/data/in/tmp/d.h5", size=100, p2p=True),
                     transfer(path="/data/in/e.h5", size=100, code=1))
    cases = [
        ({"include": ["/data/in"]}, ["/data/in/a.h5", "/data/in/b.txt"]),
        ({"include": ["*.h5"], "exclude": ["re:/out/"]}, ["/data/in/a.h5"]),
        ({"name_regex": r"[bc]\..*"}, ["/data/in/b.txt", "/data/out/c.h5"]),
        ({"min_size": 50, "max_size": 1000}, ["/data/out/c.h5"]),
        ({"client_ips": ["10.0.0.0/8"]}, ["/data/out/c.h5"]),
        ({"users": ["bob"]}, []),
        ({"exclude_p2p": False, "include": ["/data/in/tmp"]}, ["/data/in/tmp/d.h5"]),
        ({"exclude_failed": False, "include": ["/data/in/e.h5"]}, ["/data/in/e.h5"]),
        ({"kinds": ["read", "IN_CLOSE_WRITE"], "users": ["alice"], "include": ["/data/in/a.h5"]}, ["/data/in/a.h5"]),
    ]
    for kw, expected in cases:
        trigger = DCacheBillingEventTrigger(topics=["billing"], site="main", **kw)
        assert payload_paths(trigger, batch) == expected, kw


def test_payloads_respect_batch_max_events() -> None:
    events = tuple(event(transfer(path=f"/d/f{i}.h5"), i) for i in range(25))
    trigger = DCacheBillingEventTrigger(topics=["billing"], site="main", batch_max_events=10)
    payloads = trigger.payloads(BillingBatch(events, records=25))
    assert [p["count"] for p in payloads] == [10, 10, 5]
    assert [e.path for p in payloads for e in parse_batch(p)] == [f"/d/f{i}.h5" for i in range(25)]
    assert len({p["batch_id"] for p in payloads}) == 3
