"""DCacheBillingEventTrigger against a real broker (tansu) fed by the real bundled service or by raw bytes.

The shared stream is driven through Airflow's own ``SharedStreamManager`` the way the triggerer's
runner drives it (subscribe, iterate ``filter_shared_stream``, ``bind_pending_event`` right after each
event, ``confirm_persisted`` when "the DB" stored it), or through the producer's ``open_stream`` /
``advance`` directly. Committed offsets are read back from the broker by a separate consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import requests
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamManager
from confluent_kafka import Consumer, TopicPartition

from airflow_dcache.events.payload import parse_batch
from airflow_dcache.server.services.billing import records as rec
from airflow_dcache.triggers.billing import DCacheBillingEventTrigger
from airflow_dcache.triggers.billing_stream import BillingBatch
from tests.kafka_broker import CONSUMER_DEFAULTS, KafkaBroker, unique_topic

pytestmark = pytest.mark.timeout(180) if hasattr(pytest.mark, "timeout") else []

WAIT = 60.0  # generous "does not hang" bound


def connection(monkeypatch: pytest.MonkeyPatch, broker: KafkaBroker, **extra: Any) -> str:
    conn_id = f"kafka_{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": broker.bootstrap, "enable.auto.commit": False, **CONSUMER_DEFAULTS, **extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kafka", "extra": config}))
    return conn_id


def committed(broker: KafkaBroker, group: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return int(consumer.committed([TopicPartition(topic, partition)], timeout=10)[0].offset)
    finally:
        consumer.close()


def wait_committed(broker: KafkaBroker, group: str, topic: str, offset: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if committed(broker, group, topic) == offset:
            return
        time.sleep(0.2)
    raise AssertionError(f"offset {offset} not committed for {group}; got {committed(broker, group, topic)}")


class Runner:
    """The triggerer's part for one watcher: iterate the filter in a task, bind each event, confirm later.

    Like the triggerer's runner it keeps pulling from ``filter_shared_stream`` (that is what closes a
    raw event's binding window), binds every event right after taking it, and confirms persistence
    only when the test says so.
    """

    def __init__(self, trigger: DCacheBillingEventTrigger, manager: SharedStreamManager | None = None,
                 trigger_id: int = 1) -> None:
        self.trigger = trigger
        self.manager = manager or SharedStreamManager(ack_timeout=120)
        self.key = trigger.shared_stream_key()
        self.trigger_id = trigger_id
        stream = self.manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=self.key)
        self.events: AsyncIterator[TriggerEvent] = trigger.filter_shared_stream(stream)  # type: ignore[assignment]
        self.queue: asyncio.Queue[tuple[dict[str, Any], int | None]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        async for event in self.events:
            seq = self.manager.bind_pending_event(trigger_id=self.trigger_id, key=self.key)  # no await between
            self.queue.put_nowait((event.payload, seq))

    async def next(self, timeout: float = WAIT) -> tuple[dict[str, Any], int | None]:
        getter = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.task in done:
            raise AssertionError(f"the watcher ended: {self.task.exception()!r}")
        raise TimeoutError(f"no TriggerEvent within {timeout}s")

    async def paths_until(self, wanted: set[str], timeout: float = WAIT) -> tuple[list[str], list[int]]:
        """Take batches until every wanted path arrived; returns all paths seen and their seqs."""
        paths: list[str] = []
        seqs: list[int] = []
        deadline = time.monotonic() + timeout
        while not wanted <= set(paths):
            payload, seq = await self.next(max(0.1, deadline - time.monotonic()))
            paths += [e.path for e in parse_batch(payload)]
            if seq is not None:
                seqs.append(seq)
        return paths, seqs

    def confirm(self, seqs: list[int]) -> None:
        self.manager.confirm_persisted(seqs)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.manager.unsubscribe(self.trigger_id, self.key)


def trigger_for(conn_id: str, topic: str, group: str, **kw: Any) -> DCacheBillingEventTrigger:
    options: dict[str, Any] = {"start_from": "earliest", "flush_after": None, "batch_quiet": 0.3,
                               "min_batch_interval": 0.1, "site": "main"}
    options.update(kw)
    return DCacheBillingEventTrigger(kafka_config_id=conn_id, topics=[topic], group_id=group, **options)


def upload(server: Any, path: str, body: bytes = b"data") -> None:
    response = requests.put(f"{server.webdav}{path}", data=body, auth=server.auth("alice"), timeout=30)
    assert response.status_code == 201, response.text


@pytest.fixture
def topic(kafka_broker: KafkaBroker) -> str:
    name = unique_topic()
    kafka_broker.create_topic(name)
    return name


@pytest.fixture
def billed(start_dcache: Any, kafka_broker: KafkaBroker, topic: str) -> Iterator[Any]:
    yield start_dcache("--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", topic, name="billed")


def valid_record(path: str, counter: int = 1) -> bytes:
    cell = rec.Cell("main-pool1", "pool", "dCacheDomain")
    mover = rec.MoverInfo(cell=cell, date_ms=1_700_000_000_000 + counter, session=f"pool:s-{counter}",
                          subject=rec.subject_principals(1000, [1000], "alice"), pnfsid=f"{counter:036X}",
                          file_size=4, transfer_size=4, transfer_time=1, is_write=True,
                          protocol_info=rec.ProtocolInfo("Http", "127.0.0.1", 40000), initiator="door:x",
                          billing_path=path, transfer_path=path)
    return rec.encode(rec.transfer_record(mover))


# -- the real service → broker → trigger ------------------------------------------------------------


async def test_uploads_become_one_batch_committed_only_after_persist(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str, billed: Any) -> None:
    paths = [f"/home/alice/in-{i}.h5" for i in range(3)]
    for path in paths:
        upload(billed, path)
    upload(billed, "/home/alice/skip.txt")
    # every upload is a pool transfer + a door request: wait until all 8 records are on the topic
    assert len(kafka_broker.consume(topic, count=8, timeout=30)) == 8

    group = f"g-{uuid.uuid4().hex[:8]}"
    trigger = trigger_for(connection(monkeypatch, kafka_broker), topic, group, include=["*.h5"])
    runner = Runner(trigger)
    try:
        seen, seqs = await runner.paths_until(set(paths))
        assert seen == paths  # in upload order, each once (door request and pool transfer share a key)
        payload_events = seen
        assert "/home/alice/skip.txt" not in payload_events
        # yielded, not yet persisted: the start was pinned (0) but nothing past it is committed
        await asyncio.sleep(1.0)
        assert committed(kafka_broker, group, topic) == 0
        runner.confirm(seqs)
        await asyncio.to_thread(wait_committed, kafka_broker, group, topic, 8)
    finally:
        await runner.stop()


async def test_restart_loses_nothing_and_does_not_redeliver_committed(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str, billed: Any) -> None:
    conn_id = connection(monkeypatch, kafka_broker)
    group = f"g-{uuid.uuid4().hex[:8]}"
    upload(billed, "/home/alice/r1.h5")
    upload(billed, "/home/alice/r2.h5")

    first = Runner(trigger_for(conn_id, topic, group))
    try:
        _, seqs = await first.paths_until({"/home/alice/r1.h5", "/home/alice/r2.h5"})
        first.confirm(seqs)
        await asyncio.to_thread(wait_committed, kafka_broker, group, topic, 4)
        upload(billed, "/home/alice/r3.h5")
        seen, _unconfirmed = await first.paths_until({"/home/alice/r3.h5"})
        assert seen == ["/home/alice/r3.h5"]
    finally:
        await first.stop()  # "the triggerer died" before r3's batch was persisted
    assert committed(kafka_broker, group, topic) == 4

    upload(billed, "/home/alice/r4.h5")  # published while nothing consumes
    second = Runner(trigger_for(conn_id, topic, group))  # a fresh instance from the same kwargs
    try:
        seen, seqs = await second.paths_until({"/home/alice/r3.h5", "/home/alice/r4.h5"})
        assert seen == ["/home/alice/r3.h5", "/home/alice/r4.h5"]  # r1/r2 (committed) are not redelivered
        second.confirm(seqs)
        await asyncio.to_thread(wait_committed, kafka_broker, group, topic, 8)
    finally:
        await second.stop()


async def test_two_watchers_share_one_consumer_and_commit_waits_for_both(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str, billed: Any) -> None:
    conn_id = connection(monkeypatch, kafka_broker)
    group = f"g-{uuid.uuid4().hex[:8]}"
    upload(billed, "/home/alice/a/x.h5")
    upload(billed, "/home/alice/b/y.h5")
    manager = SharedStreamManager(ack_timeout=120)
    wa = Runner(trigger_for(conn_id, topic, group, include=["/home/alice/a"]), manager, trigger_id=1)
    wb = Runner(trigger_for(conn_id, topic, group, include=["/home/alice/b"]), manager, trigger_id=2)
    assert wa.key == wb.key
    try:
        seen_a, seqs_a = await wa.paths_until({"/home/alice/a/x.h5"})
        seen_b, seqs_b = await wb.paths_until({"/home/alice/b/y.h5"})
        assert (seen_a, seen_b) == (["/home/alice/a/x.h5"], ["/home/alice/b/y.h5"])
        wa.confirm(seqs_a)
        await asyncio.sleep(1.5)
        assert committed(kafka_broker, group, topic) == 0  # watcher b has not persisted its batch yet
        wb.confirm(seqs_b)
        await asyncio.to_thread(wait_committed, kafka_broker, group, topic, 4)
    finally:
        await wa.stop()
        await wb.stop()


# -- garbage on the topic ---------------------------------------------------------------------------


async def test_garbage_is_skipped_counted_logged_once_and_dead_lettered(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    dlq = unique_topic("dlq")
    kafka_broker.create_topic(dlq)
    kafka_broker.produce(topic, [valid_record("/data/ok-1.h5", 1), b"\x00garbage", b"[1,2,3]",
                                 b'{"msgType":"transfer","version":"1.0","date":"x","isWrite":"write"}',
                                 valid_record("/data/ok-2.h5", 2)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.WARNING, logger="airflow_dcache.triggers.billing")
    runner = Runner(trigger_for(connection(monkeypatch, kafka_broker), topic, group, dlq_topic=dlq))
    try:
        seen, seqs = await runner.paths_until({"/data/ok-1.h5", "/data/ok-2.h5"})
        assert seen == ["/data/ok-1.h5", "/data/ok-2.h5"]
        runner.confirm(seqs)
        await asyncio.to_thread(wait_committed, kafka_broker, group, topic, 5)
    finally:
        await runner.stop()
    skipped = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
    assert [m.split(":")[0] for m in skipped] == [f"skipping record {topic}[0]@{i}" for i in (1, 2, 3)]
    dead = kafka_broker.consume(dlq, count=3, timeout=30)
    assert [d.value for d in dead] == [b"\x00garbage", b"[1,2,3]",
                                      b'{"msgType":"transfer","version":"1.0","date":"x","isWrite":"write"}']


# -- the producer directly: open_stream / advance ----------------------------------------------------


async def test_advance_holds_and_redelivers_failed_then_commits(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str) -> None:
    kafka_broker.produce(topic, [valid_record(f"/data/p{i}.h5", i) for i in range(3)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    trigger = trigger_for(connection(monkeypatch, kafka_broker), topic, group)
    _, kwargs = trigger.serialize()
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(kwargs)
    stream = producer.open_stream()

    async def next_batch() -> tuple[BillingBatch, Any]:
        while True:
            raw, broker_payload = await asyncio.wait_for(anext(stream), WAIT)  # type: ignore[arg-type]
            if raw.records:
                return raw, broker_payload

    try:
        raw, payload = await next_batch()
        assert [e.path for e in raw.events] == ["/data/p0.h5", "/data/p1.h5", "/data/p2.h5"]
        assert [(s.first, s.last) for s in payload.spans] == [(0, 2)]
        await producer.advance([AdvanceItem(payload, AdvanceOutcome(acked=0, failed=1))])  # ack timeout
        assert committed(kafka_broker, group, topic) == 0
        again, payload = await next_batch()  # sought back: redelivered in this session
        assert [e.cursor for e in again.events] == [e.cursor for e in raw.events]
        await producer.advance([AdvanceItem(payload, AdvanceOutcome(acked=1, failed=0))])
        assert committed(kafka_broker, group, topic) == 3
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await producer.aclose()


async def test_setup_failure_is_logged_once_and_retried_never_raised(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_dcache.triggers.billing")
    conn_id = connection(monkeypatch, kafka_broker, **{"enable.auto.commit": True})
    trigger = trigger_for(conn_id, topic, "g-autocommit")
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(trigger.serialize()[1])
    stream = producer.open_stream()
    task = asyncio.ensure_future(anext(stream))  # type: ignore[arg-type]
    await asyncio.sleep(3.5)  # 1 s + 2 s backoff: three attempts
    assert not task.done()  # still retrying, not raised
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await producer.aclose()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "enable.auto.commit" in r.getMessage()]
    retries = [r for r in caplog.records if "enable.auto.commit" in r.getMessage()]
    assert len(warnings) == 1 and len(retries) >= 2


async def test_flush_batch_follows_the_last_batch_and_once_more_later(
        monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker, topic: str) -> None:
    """A flush after the last batch, and one more ``FLUSH_AGAIN_AFTER`` later (a scheduler slower than the
    first flush strands it with the batch before it); then quiet."""
    import airflow_dcache.triggers.billing as billing_trigger

    monkeypatch.setattr(billing_trigger, "FLUSH_AGAIN_AFTER", 2.0)
    kafka_broker.produce(topic, [valid_record("/data/f.h5", 1)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    runner = Runner(trigger_for(connection(monkeypatch, kafka_broker), topic, group, flush_after=2.0,
                                min_batch_interval=1.0))
    try:
        first, _ = await runner.next()
        flush, _ = await runner.next()
        assert (first["count"], first["flush"]) == (1, False)
        assert (flush["count"], flush["flush"], flush["events"]) == (0, True, [])
        again, _ = await runner.next()
        assert (again["count"], again["flush"]) == (0, True)
        with pytest.raises(TimeoutError):
            await runner.next(timeout=4.0)
    finally:
        await runner.stop()
