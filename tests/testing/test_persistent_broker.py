"""The persistent test broker (tansu with its log in moto's S3) keeps records and group offsets across a restart.

The broker-restart fault tests rely on this: with the default in-memory broker a restart would lose
everything and look like data loss in the code under test.
"""

from __future__ import annotations

from tests.kafka_broker import CONSUMER_DEFAULTS, unique_topic


def test_records_and_committed_offsets_survive_a_restart(kafka_broker_factory):
    from confluent_kafka import Consumer

    broker = kafka_broker_factory("persistent", persistent=True)
    topic = unique_topic()
    broker.create_topic(topic)
    broker.produce(topic, [b"a", b"b"])

    def read_group(expected: int) -> list[bytes]:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "restart-check",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest", **CONSUMER_DEFAULTS})
        consumer.subscribe([topic])
        got: list[bytes] = []
        try:
            for _ in range(300):  # bounded: 300 polls of at most 0.1 s
                msg = consumer.poll(0.1)
                if msg is not None and not msg.error():
                    got.append(msg.value())
                if len(got) >= expected:
                    break
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return got

    assert read_group(2) == [b"a", b"b"]
    broker.restart()
    broker.produce(topic, [b"c"])
    assert read_group(1) == [b"c"], "the group's committed offset was lost in the restart"
    assert [r.value for r in broker.consume(topic, count=3, timeout=30)] == [b"a", b"b", b"c"]
