"""``BillingStreamProducer``: the broker side of the billing trigger's shared stream, at least once.

One producer (one Kafka consumer) serves every :class:`~airflow_dcache.triggers.billing.DCacheBillingEventTrigger`
watcher with the same ``(kafka_config_id, topics, group_id)``. It runs in the Kafka provider's 3.3
shared-stream **ack mode**: offsets are committed only after Airflow has persisted the TriggerEvents
derived from them (the shared-stream manager calls :meth:`BillingStreamProducer.advance` only then).

What differs from the provider's producer, and why (``docs/triggers-kafka.md`` has the long form):

* **One raw shared-stream event is a micro-batch of records**, not one record. In ack mode a
  subscriber that moves past a raw event without yielding counts it as resolved and its offset gets
  committed, so a subscriber cannot collect a burst across raw events without risking loss. The
  producer therefore lingers (``batch_quiet`` / ``batch_max_wait``) and hands every subscriber the
  whole burst at once (:class:`BillingBatch`).
* **Records are parsed once, here** (:mod:`airflow_dcache.events.billing`); subscribers only filter.
  A record that is not valid billing JSON is counted, logged once with its topic/partition/offset
  and skipped -- re-published to ``dlq_topic`` before its offset is committed when one is set. It
  never raises (the provider's producer raises on a message error, which would fail every watcher
  of the stream and restart them every 2 s).
* Setup problems that need the network or the connection (missing connection, auto-commit left on,
  unreachable broker) are logged once per cause and retried with capped backoff inside the stream.
* Idle streams emit a tick every ``_TICK_SECONDS`` so a watcher can send its trailing flush batch
  (the burst safety net of ``docs/triggers.md``) without a new record arriving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamProducer
from airflow.sdk.observability.stats import Stats
from airflow.triggers.shared_stream import AdvanceItem
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from airflow_dcache.events.billing import BillingRecordError, billing_event
from airflow_dcache.events.model import StorageEvent
from airflow_dcache.hooks.billing import DCacheBillingConsumerHook
from airflow_dcache.utils.backoff import Backoff
from airflow_dcache.utils.gc_pause import collector_paused
from airflow_dcache.utils.log_once import LogOnce

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer

__all__ = ["METRIC", "BillingBatch", "BillingBrokerPayload", "BillingStreamProducer", "DeadRecord", "PartitionSpan"]

# The logger name of the trigger module this code came from: sites filter the "skipping record" and
# setup warnings by it, and splitting the module must not silence them.
log = logging.getLogger("airflow_dcache.triggers.billing")

#: Prefix of every StatsD metric of the billing stream and its watchers.
METRIC: Final = "dcache.billing"
_TICK_SECONDS: Final = 1.0
_MAX_BACKOFF: Final = 60.0
_LOGGED_OFFSETS: Final = 10_000
_DLQ_FLUSH_TIMEOUT: Final = 30.0


# -- what flows through the shared stream ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The first and last offset of one ``(topic, partition)`` inside one micro-batch."""

    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A record that is not valid billing JSON, kept for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class BillingBatch:
    """The raw shared-stream event: one burst of records, already mapped to events.

    ``records`` counts every record of the burst; ``events`` holds only those that are file events
    (contract §3), in offset order. An idle tick is a batch with no records.
    """

    events: tuple[StorageEvent, ...]
    records: int = 0
    invalid: int = 0


@dataclass(frozen=True, slots=True)
class BillingBrokerPayload:
    """What :meth:`BillingStreamProducer.advance` needs to commit (or seek back) one micro-batch."""

    spans: tuple[PartitionSpan, ...]
    dead: tuple[DeadRecord, ...] = ()


_TICK = (BillingBatch(()), BillingBrokerPayload(()))



# -- the producer ---------------------------------------------------------------------------------


class BillingStreamProducer(KafkaSharedStreamProducer):
    """Broker side of a billing stream: micro-batches records, parses them once, commits after persist.

    Reuses the provider's ``enable.auto.commit=false`` check and per-partition redelivery floors;
    replaces the poll loop (batches, no raise on a bad record or a transient consumer error),
    ``advance`` (a batch spans several offsets and maybe several partitions) and the dead-letter send
    (only invalid records, with their cause in headers). Every consumer call runs on one private
    thread, so a blocking ``consume`` never stalls the triggerer's event loop or other triggers.

    :param topics: topics to consume.
    :param kafka_config_id: Kafka connection (its extra is the librdkafka config).
    :param group_id: consumer group; ``None``: the connection's ``group.id``, else
        ``airflow-dcache-billing``.
    :param start_from: ``latest`` or ``earliest``: where a group without a committed offset starts.
    :param poll_timeout: seconds one idle ``consume`` waits.
    :param dlq_topic: dead-letter topic for records that are not valid billing JSON.
    :param batch_quiet: a burst ends after this many seconds without a record.
    :param batch_max_wait: a micro-batch is handed on at the latest this long after its first record.
    :param batch_max_records: and at the latest when it holds this many records.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        kafka_config_id: str = "kafka_default",
        group_id: str | None = None,
        start_from: str = "latest",
        poll_timeout: float = 0.5,
        dlq_topic: str | None = None,
        batch_quiet: float = 0.5,
        batch_max_wait: float = 2.0,
        batch_max_records: int = 5000,
    ) -> None:
        super().__init__(topics=topics, kafka_config_id=kafka_config_id, poll_timeout=poll_timeout,
                         dlq_topic=dlq_topic)
        self.group_id = group_id
        self.start_from = start_from
        self.batch_quiet = batch_quiet
        self.batch_max_wait = batch_max_wait
        self.batch_max_records = batch_max_records
        self.resolved_group_id: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcache-billing-kafka")
        self._log_once = LogOnce(log)
        self._log_bad_record_once = LogOnce(log, memory=_LOGGED_OFFSETS)
        self.invalid_records = 0
        self.records = 0

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    # -- connect -----------------------------------------------------------------------------------

    async def _connect(self) -> Consumer:
        """Create and subscribe the consumer, retrying every setup failure with capped backoff."""
        backoff = Backoff(1.0, _MAX_BACKOFF, jitter=True)
        while True:
            hook = DCacheBillingConsumerHook(self.topics, self.kafka_config_id, self.group_id, self.start_from)
            try:
                await self._ensure_manual_commit(hook)
                consumer: Consumer = await self._call(getattr, hook, "get_conn")
                await self._call(consumer.subscribe, self.topics, on_assign=self._on_assign)
            except Exception as exc:  # connection missing, auto-commit on, bad config: retry, log once
                Stats.incr(f"{METRIC}.setup_failures")
                self._log_once("dCache billing stream on %s (connection %r) cannot start: %s: %s; "
                      "retrying with backoff", self.topics, self.kafka_config_id, type(exc).__name__, exc)
                await asyncio.sleep(backoff.next())
                continue
            self.resolved_group_id = hook.resolved_group_id
            log.info("dCache billing stream consuming %s as group %r (start_from=%s for a new group)",
                     self.topics, self.resolved_group_id, self.start_from)
            return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Pin the start of partitions the group has never committed, so a restart cannot skip records.

        ``auto.offset.reset=latest`` alone re-resolves "latest" at every start until the first
        commit: records published while the triggerer was down would be skipped. Committing the
        resolved position right away makes the initial-offset policy apply exactly once per group.
        """
        try:
            committed = consumer.committed(partitions, timeout=10)
            fresh = [tp for tp in committed if tp.offset < 0]
            for tp in fresh:
                low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                tp.offset = high if self.start_from == "latest" else low
            if fresh:
                consumer.commit(offsets=fresh, asynchronous=False)
                log.info("group %r had no committed offset for %s; starting at %s (start_from=%s)",
                         self.resolved_group_id, [f"{tp.topic}[{tp.partition}]" for tp in fresh],
                         [tp.offset for tp in fresh], self.start_from)
            consumer.assign(committed)
        except KafkaException as exc:
            self._log_once("could not pin the start offsets of %s (%s); auto.offset.reset=%s applies",
                  self.topics, exc, self.start_from)
            consumer.assign(partitions)

    # -- the stream --------------------------------------------------------------------------------

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:  # type: ignore[override]
        """Yield ``(BillingBatch, BillingBrokerPayload)`` per burst, and an empty tick when idle."""
        consumer = await self._connect()
        self._consumer = consumer
        pending: list[Message] = []
        first_at = last_at = 0.0
        idle_since = time.monotonic()
        while True:
            now = time.monotonic()
            if pending:
                timeout = max(0.0, min(first_at + self.batch_max_wait, last_at + self.batch_quiet) - now)
            else:
                timeout = self.poll_timeout
            messages = await self._call(consumer.consume, self.batch_max_records - len(pending), timeout)
            now = time.monotonic()
            for message in messages:
                error = message.error()
                if error is not None:
                    self._on_consumer_error(error)
                    continue
                if not pending:
                    first_at = now
                pending.append(message)
                last_at = now
            if pending and (len(pending) >= self.batch_max_records or now >= first_at + self.batch_max_wait
                            or now >= last_at + self.batch_quiet):
                yield self.build_batch(pending)
                pending = []
                idle_since = time.monotonic()
            elif not pending and now - idle_since >= _TICK_SECONDS:
                yield _TICK
                idle_since = now

    def _on_consumer_error(self, error: KafkaError) -> None:
        """Count and log (once per cause) a consumer error; only a fatal one ends the stream."""
        Stats.incr(f"{METRIC}.consumer_errors")
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            log.error("dCache billing stream on %s: fatal consumer error %s; restarting the stream",
                      self.topics, error)
            raise KafkaException(error)
        self._log_once("dCache billing stream on %s: consumer error %s (%s); continuing",
              self.topics, error.name(), error.str())

    def build_batch(self, messages: Sequence[Message]) -> tuple[BillingBatch, BillingBrokerPayload]:
        """Map one burst of Kafka messages: events in offset order, spans to commit, dead records."""
        events: list[StorageEvent] = []
        dead: list[DeadRecord] = []
        invalid = 0
        spans: dict[tuple[str, int], list[int]] = {}
        keep_dead = self.dlq_topic is not None
        with collector_paused():
            for message in messages:
                topic, partition = str(message.topic()), int(message.partition() or 0)
                offset = int(message.offset() or 0)
                lane = (topic, partition)
                span = spans.get(lane)
                if span is None:
                    spans[lane] = [offset, offset]
                elif offset < span[0]:
                    span[0] = offset
                elif offset > span[1]:
                    span[1] = offset
                value = message.value()
                try:
                    event = billing_event(value, cursor=f"{topic}:{partition}:{offset}")
                except ValueError as exc:  # BillingRecordError, or the event model refused a mapped value
                    reason = str(exc) if isinstance(exc, BillingRecordError) else f"not a storage event: {exc}"
                    invalid += 1
                    self._invalid(topic, partition, offset, reason)
                    if keep_dead:
                        dead.append(DeadRecord(topic, partition, offset, value, message.key(), reason))
                    continue
                if event is not None:
                    events.append(event)
        self.records += len(messages)
        Stats.incr(f"{METRIC}.records", len(messages))
        batch = BillingBatch(tuple(events), records=len(messages), invalid=invalid)
        payload = BillingBrokerPayload(
            tuple(PartitionSpan(t, p, s[0], s[1]) for (t, p), s in spans.items()), tuple(dead))
        return batch, payload

    def _invalid(self, topic: str, partition: int, offset: int, reason: str) -> None:
        """Count a bad record; log it once per (topic, partition, offset), even across redeliveries."""
        self.invalid_records += 1
        Stats.incr(f"{METRIC}.invalid_records")
        self._log_bad_record_once("skipping record %s[%d]@%d: not a dCache billing record: %s%s", topic, partition,
                                  offset, reason, f"; sending it to {self.dlq_topic!r}" if self.dlq_topic else "",
                                  repeat_at_debug=False)

    # -- commit ------------------------------------------------------------------------------------

    def get_advance_lane(self, broker_payload: Any) -> Hashable:
        """One lane: a micro-batch may span partitions, and commits must follow fan-out order."""
        return None

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Commit what every subscriber resolved (persisted), seek back what must come again.

        Walks the items in fan-out order. Items before the first *held* one (a subscriber failed --
        ack timeout, overflow -- or nobody was subscribed) are committed per partition through their
        last offset, after their dead records reached the dead-letter topic. From the held item on,
        every partition it or a later item touches is sought back to its first offset there and a
        floor is kept (the provider's ``_resolve_floor``), so no later commit can pass a record
        that was never persisted.
        """
        commit_through: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        held: dict[tuple[str, int], int] = {}
        dead: list[DeadRecord] = []
        holding = False
        for item in batch:
            payload: BillingBrokerPayload = item.broker_payload
            outcome = item.outcome
            if not payload.spans:
                continue  # an idle tick: nothing to commit
            if not holding and (outcome.failed > 0 or (outcome.acked == 0 and outcome.rejected == 0)):
                holding = True
            for span in payload.spans:
                lane = (span.topic, span.partition)
                starts.setdefault(lane, span.first)
                if holding:
                    held.setdefault(lane, span.first)
                else:
                    commit_through[lane] = span.last
            if not holding:
                dead.extend(payload.dead)
        if not starts:
            return
        targets: list[TopicPartition] = []
        seeks: list[TopicPartition] = []
        for lane, start in starts.items():
            through = commit_through.get(lane)
            floor = self._resolve_floor(lane, start, through, held.get(lane))
            if through is not None:
                target = through + 1 if floor is None else min(through + 1, floor)
                targets.append(TopicPartition(lane[0], lane[1], target))
            if lane in held:
                seeks.append(TopicPartition(lane[0], lane[1], floor if floor is not None else held[lane]))
        if dead and self.dlq_topic is not None:
            await self._call(self._send_dead, self.dlq_topic, dead)
        if targets:
            await self._call(self._commit_many, targets)
        for tp in seeks:
            await self._call(self._seek, tp.topic, tp.partition, tp.offset)

    def _commit_many(self, offsets: list[TopicPartition]) -> None:
        if self._consumer is None:
            raise RuntimeError(f"cannot commit {offsets}: no open consumer")
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and not error.fatal():
                # A rebalance took the partition (or the commit raced one): the new owner reads from
                # the last commit, so these records come again -- a duplicate, never a loss.
                Stats.incr(f"{METRIC}.commit_failures")
                self._log_once("commit of %s failed (%s); the records will be redelivered",
                      self.topics, error.name())
                return
            raise
        Stats.incr(f"{METRIC}.commits")
        for tp in offsets:
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                Stats.gauge(f"{METRIC}.lag", max(0, high - tp.offset),
                            tags={"topic": tp.topic, "partition": str(tp.partition)})

    def _send_dead(self, topic: str, records: list[DeadRecord]) -> None:
        """Re-publish invalid records (value and key unchanged, cause in headers); flush before commit."""
        if self._dlq_producer is None:
            self._dlq_producer = KafkaProducerHook(kafka_config_id=self.kafka_config_id).get_producer()
        producer: Producer = self._dlq_producer
        for rec in records:
            producer.produce(topic, value=rec.value, key=rec.key, headers=[
                ("dcache-billing-error", rec.reason.encode()),
                ("dcache-billing-source", f"{rec.topic}:{rec.partition}:{rec.offset}".encode()),
            ])
        left = producer.flush(_DLQ_FLUSH_TIMEOUT)
        if left:
            raise RuntimeError(f"{left} dead-letter record(s) not acknowledged by {topic!r}; not committing past them")
        Stats.incr(f"{METRIC}.dead_lettered", len(records))

    async def aclose(self) -> None:
        """Flush the dead-letter producer, close the consumer on its thread, stop the thread."""
        try:
            producer, self._dlq_producer = self._dlq_producer, None
            if producer is not None:
                await self._call(producer.flush, 10)
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await self._call(consumer.close)
        except Exception:
            log.warning("closing the dCache billing consumer failed", exc_info=True)
        finally:
            self._executor.shutdown(wait=False)


