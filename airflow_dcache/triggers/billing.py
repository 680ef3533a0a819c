"""``DCacheBillingEventTrigger``: dCache Kafka billing records → storage-event batches, at least once.

Built on the Kafka provider's 3.3 ``KafkaSharedStreamTrigger`` in **ack mode**: one consumer per
``(kafka_config_id, topics, group_id)`` is shared by every watcher on those topics, and offsets are
committed only after Airflow has persisted the TriggerEvents derived from them. The consumer side --
micro-batching, parsing each record once, dead-lettering, commits -- is
:class:`~airflow_dcache.triggers.billing_stream.BillingStreamProducer`; its consumer is built by
:class:`~airflow_dcache.hooks.billing.DCacheBillingConsumerHook`. This module is the watcher side.

What differs from the provider's trigger, and why (``docs/triggers-kafka.md`` has the long form):

* **One raw shared-stream event is a burst of records** (:class:`BillingBatch`): each watcher
  filters it and yields its matching events as one batch payload (contract §1) bound to that raw
  event, so the commit of the burst waits for exactly that payload.
* ``serialize()`` names this class (the provider's hard-codes its own path); serialized triggers
  exist in databases, so :data:`CLASSPATH` must not change.
* Idle streams tick, so a watcher sends its trailing flush batch (the burst safety net of
  ``docs/triggers.md``) without a new record arriving.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any, Final

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.sdk.observability.stats import Stats
from airflow.triggers.base import TriggerEvent

from airflow_dcache.events.filters import EventFilter
from airflow_dcache.events.model import EventKind
from airflow_dcache.events.payload import (
    FLUSH_AGAIN_AFTER,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    BatchBuilder,
    batch_payload,
)
from airflow_dcache.triggers.billing_stream import METRIC, BillingBatch, BillingStreamProducer

__all__ = ["CLASSPATH", "DCacheBillingEventTrigger"]

CLASSPATH: Final = "airflow_dcache.triggers.billing.DCacheBillingEventTrigger"
#: Kinds a billing record can map to (``airflow_dcache.events.billing``); others never match.
BILLING_KINDS: Final = frozenset(
    {EventKind.CLOSED_AFTER_WRITE, EventKind.READ, EventKind.DELETED, EventKind.FLUSHED, EventKind.STAGED}
)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SITE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


# -- the trigger -----------------------------------------------------------------------------------


def _positive(name: str, value: Any, *, integer: bool = False, upper: float | None = None) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name}: must be a positive {'integer' if integer else 'number'}, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}: at most {upper}, got {value!r}")
    return value


def _topic(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{name}: {value!r} is not a Kafka topic name ([A-Za-z0-9._-], 1-249 chars)")
    return value


class DCacheBillingEventTrigger(KafkaSharedStreamTrigger):
    """Fire batches of storage events from dCache's Kafka billing records (for ``AssetWatcher``).

    Every TriggerEvent payload is one contract batch (``docs/event-contract.md`` §1) of the
    records that pass the filter; offsets are committed only after Airflow persisted the batch.

    :param kafka_config_id: Kafka connection id; its extra must set ``enable.auto.commit: false``.
    :param topics: billing topics (dCache's default is ``billing``); stored sorted.
    :param include: path patterns of which one must match (see ``EventFilter``).
    :param exclude: path patterns of which none may match.
    :param name_regex: regex the file name must fully match.
    :param kinds: event kinds (``closed_after_write``, ``read``, ``deleted``, ``flushed``,
        ``staged``); default: ``closed_after_write`` (a file landed).
    :param users: user names (``UserNamePrincipal`` / ``owner``).
    :param client_ips: client addresses or CIDR networks.
    :param min_size: smallest ``fileSize`` in bytes.
    :param max_size: largest ``fileSize`` in bytes.
    :param exclude_p2p: drop pool-to-pool copies (default True).
    :param exclude_failed: drop transfers whose ``status.code`` is not 0 (default True).
    :param site: the dCache site name of the payload and the asset (``dcache://<site>/...``);
        default: ``kafka_config_id`` with ``_`` → ``-``, lower-cased.
    :param group_id: Kafka consumer group; default: the connection's ``group.id``, else
        ``airflow-dcache-billing``. Part of the shared-stream key.
    :param start_from: ``latest`` (default) or ``earliest``: where a group that never committed starts.
    :param dlq_topic: dead-letter topic for records that are not valid billing JSON.
    :param batch_max_events: events per payload (at most 1000).
    :param batch_max_bytes: bytes of JSON per payload (at most 512 KiB).
    :param batch_quiet: a burst ends after this many seconds without a record.
    :param batch_max_wait: seconds after its first record a burst is handed on at the latest.
    :param min_batch_interval: seconds between two payloads of this watcher (burst safety).
    :param flush_after: seconds after the last payload an empty flush batch is sent (None: never).
    :param poll_timeout: seconds an idle ``consume`` call waits.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        kafka_config_id: str = "kafka_default",
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        name_regex: str | None = None,
        kinds: Sequence[str] = ("closed_after_write",),
        users: Sequence[str] = (),
        client_ips: Sequence[str] = (),
        min_size: int | None = None,
        max_size: int | None = None,
        exclude_p2p: bool = True,
        exclude_failed: bool = True,
        site: str | None = None,
        group_id: str | None = None,
        start_from: str = "latest",
        dlq_topic: str | None = None,
        batch_max_events: int = MAX_BATCH_EVENTS,
        batch_max_bytes: int = MAX_BATCH_BYTES,
        batch_quiet: float = 0.5,
        batch_max_wait: float = 2.0,
        min_batch_interval: float = 2.0,
        flush_after: float | None = 5.0,
        poll_timeout: float = 0.5,
    ) -> None:
        if isinstance(topics, str) or not isinstance(topics, Sequence) or not topics:
            raise ValueError(f"topics: must be a non-empty list of topic names, got {topics!r}")
        topic_names = sorted({_topic("topics", t) for t in topics})
        if not isinstance(kafka_config_id, str) or not kafka_config_id.strip():
            raise ValueError(f"kafka_config_id: must be a non-empty connection id, got {kafka_config_id!r}")
        if dlq_topic is not None:
            _topic("dlq_topic", dlq_topic)
            if dlq_topic in topic_names:
                raise ValueError(f"dlq_topic: {dlq_topic!r} is one of the watched topics")
        if group_id is not None and (not isinstance(group_id, str) or not group_id.strip()):
            raise ValueError(f"group_id: must be a non-empty string or None, got {group_id!r}")
        if start_from not in ("latest", "earliest"):
            raise ValueError(f"start_from: must be 'latest' or 'earliest', got {start_from!r}")
        if site is None:
            site = kafka_config_id.replace("_", "-").lower()
        if not isinstance(site, str) or not _SITE.fullmatch(site):
            raise ValueError(f"site: {site!r} is not a site name (a-z, 0-9, '-', 1-63 chars)")
        self.filter = EventFilter(include=tuple(include), exclude=tuple(exclude), name_regex=name_regex,
                                  kinds=tuple(kinds), users=tuple(users), client_ips=tuple(client_ips),
                                  min_size=min_size, max_size=max_size, exclude_p2p=exclude_p2p,
                                  exclude_failed=exclude_failed)
        foreign = sorted(set(self.filter.kinds) - {k.value for k in BILLING_KINDS})
        if foreign:
            raise ValueError(f"kinds: billing records never produce {foreign} "
                             f"(only {sorted(k.value for k in BILLING_KINDS)})")
        _positive("batch_max_events", batch_max_events, integer=True, upper=MAX_BATCH_EVENTS)
        _positive("batch_max_bytes", batch_max_bytes, integer=True, upper=MAX_BATCH_BYTES)
        if batch_max_bytes < 32 * 1024:
            raise ValueError(f"batch_max_bytes: at least 32768 (one event may be 16 KiB), got {batch_max_bytes!r}")
        for name, value in (("batch_quiet", batch_quiet), ("batch_max_wait", batch_max_wait),
                            ("min_batch_interval", min_batch_interval), ("poll_timeout", poll_timeout)):
            _positive(name, value, upper=300)
        if batch_quiet > batch_max_wait:
            raise ValueError(f"batch_quiet: {batch_quiet} is longer than batch_max_wait {batch_max_wait}")
        if flush_after is not None:
            _positive("flush_after", flush_after, upper=3600)
            if flush_after < min_batch_interval:
                raise ValueError(f"flush_after: {flush_after} is shorter than min_batch_interval {min_batch_interval}")
        super().__init__(topics=topic_names, kafka_config_id=kafka_config_id, poll_timeout=float(poll_timeout),
                         dlq_topic=dlq_topic)
        self.site = site
        self.group_id = group_id
        self.start_from = start_from
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.batch_quiet = float(batch_quiet)
        self.batch_max_wait = float(batch_max_wait)
        self.min_batch_interval = float(min_batch_interval)
        self.flush_after = float(flush_after) if flush_after is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """This class's path and deterministic kwargs (sorted lists, no secret: only connection ids)."""
        return CLASSPATH, {
            "kafka_config_id": self.kafka_config_id,
            "topics": list(self.topics),
            **self.filter.to_kwargs(),
            "site": self.site,
            "group_id": self.group_id,
            "start_from": self.start_from,
            "dlq_topic": self.dlq_topic,
            "batch_max_events": self.batch_max_events,
            "batch_max_bytes": self.batch_max_bytes,
            "batch_quiet": self.batch_quiet,
            "batch_max_wait": self.batch_max_wait,
            "min_batch_interval": self.min_batch_interval,
            "flush_after": self.flush_after,
            "poll_timeout": self.poll_timeout,
        }

    def shared_stream_key(self) -> Hashable:
        """Watchers on the same connection, topics and group share one consumer.

        The stream's own settings (``start_from``, ``dlq_topic``, ``batch_quiet``,
        ``batch_max_wait``, ``poll_timeout``) come from the first watcher that opens it; watchers
        that need different ones use another ``group_id`` (two streams in one group would split the
        partitions between them).
        """
        return "dcache-billing", self.kafka_config_id, tuple(self.topics), self.group_id

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> BillingStreamProducer:  # type: ignore[override]
        return BillingStreamProducer(
            topics=kwargs["topics"],
            kafka_config_id=kwargs["kafka_config_id"],
            group_id=kwargs.get("group_id"),
            start_from=kwargs.get("start_from", "latest"),
            poll_timeout=kwargs.get("poll_timeout", 0.5),
            dlq_topic=kwargs.get("dlq_topic"),
            batch_quiet=kwargs.get("batch_quiet", 0.5),
            batch_max_wait=kwargs.get("batch_max_wait", 2.0),
        )

    def payloads(self, batch: BillingBatch) -> list[dict[str, Any]]:
        """This watcher's payloads for one burst: matching events, de-duplicated by key, within the caps."""
        builder = BatchBuilder(self.batch_max_events, self.batch_max_bytes)
        out: list[dict[str, Any]] = []
        matches = self.filter.matches
        for event in batch.events:
            if not matches(event):
                continue
            if builder.would_overflow(event) and len(builder):
                out.append(batch_payload(self.site, "kafka", builder.take()))
            builder.add(event)
        if len(builder):
            out.append(batch_payload(self.site, "kafka", builder.take()))
        return out

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Yield this watcher's batches, at least ``min_batch_interval`` apart, then a flush batch (and one
        more ``FLUSH_AGAIN_AFTER`` later, unless a payload comes first).

        Each payload is yielded while its burst's raw event is still open, so the commit of that
        burst waits for the payload's persistence. Sleeping for the interval keeps the raw event
        open (the ack timeout, 300 s by default, is far away).
        """
        last_yield: float | None = None
        flush_due: float | None = None
        flushed_again = False
        tags = {"site": self.site}
        async for raw in shared_stream:
            if not isinstance(raw, BillingBatch):
                continue
            if raw.events:
                payloads = self.payloads(raw)
                for payload in payloads:
                    if last_yield is not None:
                        wait = last_yield + self.min_batch_interval - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    Stats.incr(f"{METRIC}.batches", tags=tags)
                    Stats.incr(f"{METRIC}.events", payload["count"], tags=tags)
                    yield TriggerEvent(payload)
                    last_yield = time.monotonic()
                    flushed_again = False
                    if self.flush_after is not None:
                        flush_due = last_yield + self.flush_after
                filtered = len(raw.events) - sum(p["count"] for p in payloads)
                if filtered:
                    Stats.incr(f"{METRIC}.events_filtered", filtered, tags=tags)
            if flush_due is not None and time.monotonic() >= flush_due:
                Stats.incr(f"{METRIC}.flushes", tags=tags)
                yield TriggerEvent(batch_payload(self.site, "kafka", [], flush=True))
                last_yield = time.monotonic()
                flush_due = None
                if not flushed_again:  # one more, later: a slow scheduler may strand the first
                    flushed_again, flush_due = True, last_yield + FLUSH_AGAIN_AFTER
