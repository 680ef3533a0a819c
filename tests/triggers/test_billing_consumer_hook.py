"""DCacheBillingConsumerHook against the real broker (tansu): which group it joins, where a new group starts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from airflow_dcache.hooks.billing import DEFAULT_GROUP_ID, DCacheBillingConsumerHook
from tests.kafka_broker import CONSUMER_DEFAULTS, KafkaBroker, unique_topic


def connection(monkeypatch: pytest.MonkeyPatch, broker: KafkaBroker, **extra: Any) -> str:
    conn_id = f"kafka_{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": broker.bootstrap, "enable.auto.commit": False, **CONSUMER_DEFAULTS, **extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kafka", "extra": config}))
    return conn_id


@pytest.mark.parametrize(("argument", "in_connection", "expected"), [
    ("trigger-group", "conn-group", "trigger-group"),
    (None, "conn-group", "conn-group"),
    (None, None, DEFAULT_GROUP_ID),
])
def test_group_id_precedence(monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, argument: str | None,
                             in_connection: str | None, expected: str) -> None:
    extra = {"group.id": in_connection} if in_connection else {}
    hook = DCacheBillingConsumerHook(["billing"], connection(monkeypatch, kafka_broker, **extra), argument, "latest")
    consumer = hook.get_conn
    try:
        assert hook.resolved_group_id == expected
    finally:
        consumer.close()


def test_start_from_earliest_reads_a_new_group_from_the_beginning(monkeypatch: pytest.MonkeyPatch,
                                                                  kafka_broker: KafkaBroker) -> None:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    kafka_broker.produce(topic, [b"r0", b"r1"])
    hook = DCacheBillingConsumerHook([topic], connection(monkeypatch, kafka_broker), f"g-{uuid.uuid4().hex[:8]}",
                                     "earliest")
    consumer = hook.get_conn
    consumer.subscribe([topic])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(seen) < 2:
            seen.extend(m.value() for m in consumer.consume(10, 0.5) if m.error() is None)
    finally:
        consumer.close()
    assert seen == [b"r0", b"r1"]
