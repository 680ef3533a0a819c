"""The billing publisher in-process against a real broker: order, spool hand-over, refusals, bounded stop."""

from __future__ import annotations

import json
import time
from pathlib import Path

from airflow_dcache.server.services.billing import KafkaSettings, build_publisher
from airflow_dcache.server.services.events import NamespaceEvent, TransferEvent
from airflow_dcache.server.storage.billing_spool import BillingSpool
from tests.kafka_broker import KafkaBroker, free_port, unique_topic


def upload(i: int, path: str | None = None) -> TransferEvent:
    now = int(time.time() * 1000)
    return TransferEvent("upload", path or f"/data/f{i:05d}", f"0000{i:032X}", 10, 10, now - 5, now,
                         "alice", 1000, (1000,), "127.0.0.1", extra={"protocol": "Http", "client_port": 40000 + i})


def settings(bootstrap: str, topic: str, **kw: object) -> KafkaSettings:
    options = (("message.timeout.ms", "2000"), *kw.pop("options", ()))  # type: ignore[misc]
    return KafkaSettings(bootstrap, topic, options, **kw)  # type: ignore[arg-type]


def paths_in_order(broker: KafkaBroker, topic: str, count: int, timeout: float = 60) -> list[tuple[str, str]]:
    recs = broker.consume(topic, count=count, timeout=timeout, settle=0.5)
    return [(r.json()["msgType"], r.json()["billingPath"]) for r in recs]


def test_many_records_arrive_in_order(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    pub = build_publisher(tmp_path, "pool_a", settings(kafka_broker.bootstrap, topic))
    pub.start()
    try:
        n = 1500  # the listener's cost per event is measured by benchmarks/billing.py, not asserted here
        for i in range(n):
            pub.on_event(upload(i))
        pub.on_event(NamespaceEvent("IN_CREATE", "x", None, "x", False))  # not billing's business
        assert pub.wait_delivered(60), pub.stats()
    finally:
        pub.close()
    got = paths_in_order(kafka_broker, topic, 2 * n)
    assert got == [(kind, f"/data/f{i:05d}") for i in range(n) for kind in ("transfer", "request")]
    assert pub.counters["delivered"] == 2 * n and pub.counters["dead"] == 0


def test_backlog_spooled_without_broker_is_delivered_by_the_next_publisher(tmp_path: Path,
                                                                          kafka_broker: KafkaBroker) -> None:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    down = build_publisher(tmp_path, "pool_a", settings(f"127.0.0.1:{free_port()}", topic))
    down.start()
    for i in range(40):
        down.on_event(upload(i))
    started = time.monotonic()
    down.close()
    # stopping with an unreachable broker must not hang: bounded by the close timeout (5 s), not by Kafka's
    assert time.monotonic() - started < 15
    spool = BillingSpool(tmp_path / "billing-spool.db")
    assert spool.count() == 80
    spool.close()

    up = build_publisher(tmp_path, "pool_a", settings(kafka_broker.bootstrap, topic))
    up.start()
    try:
        up.on_event(upload(99, "/data/live"))  # a live record queues behind the backlog
        assert up.wait_delivered(60), up.stats()
    finally:
        up.close()
    got = paths_in_order(kafka_broker, topic, 82)
    expected = [(kind, f"/data/f{i:05d}") for i in range(40) for kind in ("transfer", "request")]
    assert got == [*expected, ("transfer", "/data/live"), ("request", "/data/live")]


def test_a_record_kafka_refuses_for_good_is_buried_and_does_not_block(tmp_path: Path,
                                                                      kafka_broker: KafkaBroker) -> None:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    pub = build_publisher(tmp_path, "pool_a", settings(kafka_broker.bootstrap, topic,
                                                       options=(("message.max.bytes", "1500"),)))
    pub.start()
    try:
        pub.on_event(upload(1))
        pub.on_event(upload(2, "/data/" + "x" * 2000))  # both of its records exceed message.max.bytes
        pub.on_event(upload(3))
        assert pub.wait_delivered(30), pub.stats()
    finally:
        pub.close()
    assert pub.counters["dead"] == 2
    got = paths_in_order(kafka_broker, topic, 4)
    assert got == [(k, f"/data/f{i:05d}") for i in (1, 3) for k in ("transfer", "request")]
    spool = BillingSpool(tmp_path / "billing-spool.db")
    try:
        assert spool.count() == 0 and spool.dead_count() == 2
    finally:
        spool.close()


def test_spool_order_survives_deletes_and_reopen(tmp_path: Path) -> None:
    spool = BillingSpool(tmp_path / "s.db")
    assert spool.last_seq() == 0
    last = spool.append("t", [b"a", b"b", b"c"])
    assert [r.value for r in spool.after(0, 10)] == [b"a", b"b", b"c"]
    spool.remove([r.seq for r in spool.after(0, 10)])
    spool.close()
    spool = BillingSpool(tmp_path / "s.db")
    try:
        assert spool.count() == 0 and spool.last_seq() == last
        assert spool.append("t", [b"d"]) > last  # never reuses a sequence number
        assert [json.dumps(r.value.decode()) for r in spool.after(0, 10)] == ['"d"']
    finally:
        spool.close()
