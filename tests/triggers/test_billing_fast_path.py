"""The fast billing path (msgspec, trusted events) answers exactly as the reference path, record by record.

``billing_event`` tries a typed decode first and falls back to ``reference_billing_event`` (the json-based
parse + map that was the only path before). These tests feed both the benchmark's records, thousands of
seeded mutations of real records (wrong types, missing keys, odd values) and raw corruptions, and
require the same event (every field, the payload, the key), the same ``None`` or the same error; then the
producer's counting, logging and dead-lettering, and the watcher's payloads, on top of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from typing import Any

import pytest

from airflow_dcache.events import billing
from airflow_dcache.events.billing import _UNSURE, _fast_event, billing_event, reference_billing_event
from airflow_dcache.events.model import StorageEvent
from airflow_dcache.server.services.billing import records as rec
from airflow_dcache.triggers.billing import DCacheBillingEventTrigger
from airflow_dcache.triggers.billing_stream import BillingBatch, DeadRecord
from benchmarks.trigger_billing import _Message
from benchmarks.trigger_billing import records as benchmark_records

WEIRD: list[Any] = [
    None, 1, 1.5, -1, True, False, "x", "", [], {}, ["UserNamePrincipal[bob]"], ["GidPrincipal[1]", 7],
    {"code": 1, "msg": "boom"}, {"code": True}, {"code": None}, {"msg": 5}, {"code": 2, "msg": None}, "/abs/p",
    "Unknown", "write", "read", "other", {"isWrite": "write"}, {"protocol": "p", "host": 5}, {"protocol": "p"},
    {"isWrite": "read", "isP2p": True, "transferSize": 3, "protocolInfo": {"protocol": 1, "host": "h"}},
    10**30, "2024-05-14T08:21:07+02:00", "2024-05-14T08:21:07", "2024-13-01T00:00:00Z", "x" * 600,
]
MSG_TYPES: list[Any] = ["transfer", "request", "remove", "store", "restore", "hit", "warning", "bogus", None, 5]
MOVER_KEYS = ["isWrite", "isP2p", "transferSize", "protocolInfo", "status"]


def outcome(fn: Any, value: Any) -> Any:
    """Everything a caller can observe of one mapping: the event's fields, payload and key, or the error."""
    try:
        event = fn(value, cursor="billing:0:7")
    except Exception as exc:  # the reference raises BillingRecordError, and whatever else it raised before
        return "error", type(exc).__name__, str(exc)
    return observed(event)


def observed(event: StorageEvent | None) -> Any:
    if event is None:
        return None
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return type(event), type(event.kind), fields, event.to_payload(), event.key, hash(event)


def mutations(base: list[bytes], count: int, seed: int = 7) -> list[bytes | str]:
    """Seeded mutations of real records: keys dropped, retyped or set to odd values (also in ``moverInfo``)."""
    rnd = random.Random(seed)
    docs = [json.loads(v) for v in base]
    keys = sorted({k for d in docs for k in d} | {"version", "VERSION", "moverInfo", "storageInfo", "client"})
    out: list[bytes | str] = []
    for _ in range(count):
        doc = json.loads(json.dumps(rnd.choice(docs)))
        for _ in range(rnd.randint(1, 3)):
            key, r = rnd.choice(keys), rnd.random()
            if r < 0.2:
                doc.pop(key, None)
            elif key == "msgType" and r < 0.6:
                doc[key] = rnd.choice(MSG_TYPES)
            elif key == "cellType" and r < 0.6:
                doc[key] = rnd.choice(["door", "pool", None])
            elif key == "moverInfo" and isinstance(doc.get(key), dict) and r < 0.7:
                doc[key][rnd.choice(MOVER_KEYS)] = rnd.choice(WEIRD)
            else:
                doc[key] = rnd.choice(WEIRD)
        text = json.dumps(doc, allow_nan=True)
        out.append(text.encode() if rnd.random() < 0.8 else text)
    return out


def corruptions(value: bytes) -> list[bytes]:
    """Raw damage: truncation, trailing data, bad UTF-8 (also in keys the fast path skips), escapes, NaN..."""
    return [value[: len(value) // 2], value + b" x", b"\xff" + value, b" \n" + value + b"\n ",
            value.replace(b'"msgType"', b'"msg\\u0054ype"'), value.replace(b'"pool_a"', b'"po\\ud800"'),
            value.replace(b'"msgType"', b'"msgType":"hit","msgType"'), value.replace(b'"date"', b'"date":5,"date"'),
            value.replace(b'"write"', b'"write\x01"'), value.replace(b'"poolDomain"', b'"pool\xc3Domain"'),
            value.replace(b"1.0", b"NaN", 1), value.replace(b'"alice"', b'"al\\u00e9ce"')]


MALFORMED: list[Any] = [
    None, bytearray(b'{"msgType":"hit","version":"1","date":"2024-05-14T08:21:07Z"}'), b"", b"[1,2,3]",
    b"\x00garbage", b"null", b"1", "{}", b'{"msgType":"transfer","version":"1.0","date":"x"}',
    b'{"msgType":"transfer","version":"1.0","date":"x","isWrite":"write"}',
    b'{"msgType":"transfer","date":"2024-05-14T08:21:07.512Z","isWrite":"write","billingPath":"/a"}',
]


@pytest.fixture(scope="module")
def base() -> list[bytes]:
    return benchmark_records(400)


def test_benchmark_records_take_the_fast_path_and_equal_the_reference() -> None:
    values = benchmark_records(2000)
    for value in values:
        assert _fast_event(value, "billing:0:7") is not _UNSURE
        assert outcome(billing_event, value) == outcome(reference_billing_event, value)


def test_mutated_and_corrupted_records_equal_the_reference(base: list[bytes]) -> None:
    samples: list[Any] = [*mutations(base, 6000), *MALFORMED, 5, memoryview(base[0])]  # the last: not from Kafka
    for value in base[:60]:
        samples += corruptions(value)
    fast = 0
    for value in samples:
        assert outcome(billing_event, value) == outcome(reference_billing_event, value), value
        fast += _fast_event(value, "billing:0:7") is not _UNSURE
    assert fast > 1000  # the mutations exercise the fast path, not only the fallback


def test_trusted_event_equals_and_behaves_like_a_constructed_one(base: list[bytes]) -> None:
    event = billing_event(base[1], cursor="billing:0:1")
    assert event is not None
    built = StorageEvent(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})
    assert event == built and hash(event) == hash(built) and event.key == built.key
    assert dataclasses.replace(event, size=1).size == 1 and StorageEvent.from_payload(event.to_payload()) == event
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.path = "/elsewhere"  # type: ignore[misc]


def test_producer_counts_logs_once_and_dead_letters_as_the_reference(
        base: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    values: list[Any] = [base[0], *MALFORMED, base[1], *corruptions(base[2])[:6], base[3]]
    messages = [_Message(i, v) for i, v in enumerate(values)]
    trigger = DCacheBillingEventTrigger(topics=["billing"], site="main", dlq_topic="billing-dead")
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(trigger.serialize()[1])
    expected_events, expected_dead = [], []
    for i, value in enumerate(values):
        result = outcome(reference_billing_event, value)
        if result is not None and result[0] == "error":
            reason = result[2] if result[1] == "BillingRecordError" else f"not a storage event: {result[2]}"
            expected_dead.append(DeadRecord("billing", 0, i, value, None, reason))
        elif result is not None:
            expected_events.append(reference_billing_event(value, cursor=f"billing:0:{i}"))
    caplog.set_level(logging.WARNING, logger="airflow_dcache.triggers.billing")
    for _ in range(2):  # a redelivered burst: counted again, not logged again
        batch, payload = producer.build_batch(messages)  # type: ignore[arg-type]
        assert [observed(e) for e in batch.events] == [observed(e) for e in expected_events]
        assert (batch.records, batch.invalid) == (len(values), len(expected_dead))
        assert list(payload.dead) == expected_dead
    assert producer.invalid_records == 2 * len(expected_dead)
    skipped = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
    assert [m.split(":")[0] for m in skipped] == [f"skipping record billing[0]@{d.offset}" for d in expected_dead]
    assert [m.split(": ", 2)[2].split("; sending")[0] for m in skipped] == [d.reason for d in expected_dead]


def test_watcher_payloads_equal_those_of_reference_events(base: list[bytes]) -> None:
    values = [*base, *mutations(base, 500, seed=11)]
    fast, reference = [], []
    for i, value in enumerate(values):
        cursor = f"billing:0:{i}"
        try:
            ref = reference_billing_event(value, cursor=cursor)
        except ValueError:
            continue
        if ref is not None:
            fast.append(billing_event(value, cursor=cursor))
            reference.append(ref)
    for kwargs in ({"include": ["/data/in"], "exclude": ["*.tmp"]}, {"kinds": ["closed_after_write", "read"]},
                   {"exclude_p2p": False, "exclude_failed": False, "users": ["alice"], "client_ips": ["10.0.0.0/8"]}):
        trigger = DCacheBillingEventTrigger(topics=["billing"], site="main", **kwargs)
        got = trigger.payloads(BillingBatch(tuple(fast), records=len(fast)))  # type: ignore[arg-type]
        assert got == trigger.payloads(BillingBatch(tuple(reference), records=len(reference)))
        assert sum(p["count"] for p in got) > 0


def test_benchmark_record_shape_is_the_bundled_services() -> None:
    """The fast path's struct names dCache's keys; the bundled service's serializer must still use them."""
    record = json.loads(rec.encode(rec.transfer_record(rec.MoverInfo(
        cell=rec.Cell("p", "pool", "d"), date_ms=1, session="s", subject=rec.subject_principals(1, [1], "u"),
        pnfsid="P", file_size=1, transfer_size=1, transfer_time=1, is_write=True,
        protocol_info=rec.ProtocolInfo("Http", "127.0.0.1", 1), initiator="i", billing_path="/a", transfer_path="/a"))))
    assert {"msgType", "date", "version", "status", "cellType", "cellName", "session", "billingPath", "transferPath",
            "isWrite", "isP2p", "transferSize", "protocolInfo", "subject", "fileSize", "pnfsid"} <= set(record)


def _dates(count: int, seed: int = 11) -> list[str]:
    """Dates as dCache writes them (every fraction length, zone and second of a day) and text that is not."""
    rnd = random.Random(seed)
    out = ["2024-02-29T23:59:59.999-00:30", "2023-02-29T00:00:00Z", "2024-05-14T24:00:00Z", "2024-05-14T23:59:60Z",
           "2024-13-01T00:00:00Z", "2024-13-01T00:00:00.5+01:00", "2024-05-14T08:21:07.512z",
           "2024-05-14T08:21:07.512+0200", "2024-05-14T08:21:07,512Z", "2024-05-14 08:21:07.512Z",
           "2024-05-14T08:21:07.512", "\uff12\uff10\uff12\uff14-05-14T08:21:07Z",  # full-width digits
           "2024-05-14T08:21:07.Z", "2024-05-14T08:21:07.1234567890Z",
           "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.5-01:00", "2024-05-14T08:21:07+25:00", ""]
    for _ in range(count):
        second = (f"{rnd.randint(1970, 2100):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
                  f"T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}")
        digits = rnd.randint(0, 9)
        fraction = "." + "".join(rnd.choice("0123456789") for _ in range(digits)) if digits else ""
        hours, minutes, secs = rnd.randint(0, 18), rnd.choice([0, 30, 45]), rnd.choice([0, 0, 0, 15])
        offset = rnd.choice(["Z", f"{rnd.choice('+-')}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")])
        out.append(second + fraction + offset)
    return out


def test_utc_millis_cache_answers_as_datetime_does() -> None:
    """The per-second cache gives :func:`_parse_utc_millis`'s answer (or its error) for every date, also
    when the same second comes again with another fraction and after the cache was emptied."""
    def answer(fn: Any, date: str) -> Any:
        try:
            return fn(date)
        except Exception as exc:
            return type(exc).__name__, str(exc)

    dates = _dates(3000)
    dates += [d[:19] + ".7" + d[-6:] for d in dates[20:200] if len(d) > 25]  # cached seconds, new fractions
    billing._UTC_SECONDS.clear()
    for round_ in range(2):  # cold, then warm
        for date in dates:
            assert answer(billing._utc_millis, date) == answer(billing._parse_utc_millis, date), (round_, date)
    assert len(billing._UTC_SECONDS) <= billing._UTC_SECONDS_MAX
