"""The Kafka broker goes down while uploads continue: uploads never block or fail, no billing record is lost.

Uploads run at a steady pace before, during and after an outage of the (real, tansu) broker; each
must be acknowledged promptly. When the broker returns (empty: tansu keeps data in memory), every
upload's transfer and request records arrive, in upload order. CI: 6 s outage; soak: 60 s.
"""

from __future__ import annotations

import time

import pytest

from tests.kafka_broker import unique_topic
from tests.server.test_billing_kafka import FAST_RETRY, records_for, request, spool_count, wait_for

SLOW_UPLOAD_S = 10.0  # a blocked producer would hold an upload for message.timeout.ms or longer


def outage(start_dcache, kafka_broker_factory, seconds: float, pace: float) -> dict[str, float]:
    broker = kafka_broker_factory("outage")
    topic = unique_topic()
    broker.create_topic(topic)
    server = start_dcache("--kafka-bootstrap", broker.bootstrap, "--kafka-topic", topic, *FAST_RETRY,
                          name="billing-outage")
    paths: list[str] = []
    slowest = 0.0

    def upload(tag: str) -> None:
        nonlocal slowest
        path = f"/home/alice/bo-{tag}-{len(paths)}.txt"
        started = time.monotonic()
        status = request(server, "PUT", path, path.encode())[0]
        slowest = max(slowest, time.monotonic() - started)
        assert status == 201, (path, status)
        paths.append(path)

    upload("before")
    assert len(records_for(broker, topic, paths, 2)) == 2
    broker.stop()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        upload("during")
        time.sleep(pace)
    during = len(paths) - 1
    wait_for(lambda: spool_count(server) > 0, 15, "records to be spooled during the outage")
    broker.start()
    broker.create_topic(topic)
    for _ in range(3):
        upload("after")
    docs = records_for(broker, topic, paths[1:], 2, timeout=120, settle=2.0)
    got = [(d["msgType"], d["billingPath"]) for d in docs]
    want = [(kind, p) for p in paths[1:] for kind in ("transfer", "request")]
    assert got == want, "billing records lost, duplicated or out of order"
    wait_for(lambda: spool_count(server) == 0, 30, "the spool to drain")
    assert slowest < SLOW_UPLOAD_S, f"an upload waited {slowest:.1f} s for the broker"
    return {"uploads_during_outage": during, "records": len(docs), "lost": 0, "slowest_upload_s": slowest}


def test_broker_down_while_uploads_continue(start_dcache, kafka_broker_factory):
    figures = outage(start_dcache, kafka_broker_factory, seconds=6.0, pace=0.2)
    assert figures["uploads_during_outage"] >= 10
    print(f"\nbroker outage 6 s: {figures}")


@pytest.mark.soak
def test_soak_broker_down_60s(start_dcache, kafka_broker_factory):
    figures = outage(start_dcache, kafka_broker_factory, seconds=60.0, pace=0.2)
    print(f"\nbroker outage 60 s: {figures}")
