"""Publish billing records to Kafka through a durable spool, in order, without blocking requests.

Path of a record::

    EventBus listener (event loop)  --list append-->  delivery thread
        --fsynced SQLite append-->  spool  --produce (idempotent, acks=all)-->  Kafka
        --delivery report OK-->  row deleted

* The listener only serialises the records and appends them to an in-memory list (microseconds);
  it never touches the disk or the network and never raises into the request.
* The delivery thread first makes every new record durable in the spool, then hands spooled
  records to the producer in spool order, at most ``window`` at a time, all to one partition.
  A row leaves the spool only when its delivery report says the broker persisted it.
* Every record takes that path, so live records and records spooled during an outage share one
  order: the spool's sequence number.
* A failed delivery (broker gone past ``message.timeout.ms``, a fatal idempotence error, ...)
  makes the thread purge and drop the producer, wait with a growing back-off, create a fresh
  producer and start again from the head of the spool with a window of one record, widening
  the window once the broker acknowledges again.

Guarantee: **at-least-once, in order**. A record can be published twice only when its
acknowledgement was lost: the broker persisted it but the producer was reset, or the service
stopped, before the report arrived. The repeats then come after the original as a replay of the
spool's head, so a consumer that drops records it has already seen (key: ``msgType`` +
``cellName`` + ``session``, unique per record) reads every record exactly once, in order.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from airflow_dcache.server.services.billing.events import RecordBuilder
from airflow_dcache.server.services.billing.settings import BillingConfigError, KafkaSettings
from airflow_dcache.server.services.events import TransferEvent
from airflow_dcache.server.storage.billing_spool import BillingSpool

log = logging.getLogger(__name__)
# librdkafka's own chatter (connection refused every back-off while the broker is down) goes here.
rdkafka_log = logging.getLogger("airflow_dcache.server.billing.librdkafka")

# Broker answers that will never change for this record: it moves to the spool's dead table.
_PERMANENT_ERRORS = {
    2,  # CORRUPT_MESSAGE
    10,  # MSG_SIZE_TOO_LARGE
    18,  # RECORD_LIST_TOO_LARGE
    87,  # INVALID_RECORD
}
_ALL_BROKERS_DOWN = -187  # librdkafka's _ALL_BROKERS_DOWN
_BACKOFF_START = 0.25
_BACKOFF_MAX = 5.0
_POLL = 0.02


class Producer(Protocol):
    def produce(self, topic: str, value: bytes, *, partition: int, on_delivery: Callable[..., None]) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...


def confluent_producer(conf: dict[str, Any]) -> Producer:
    try:
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as KafkaProducer
    except ImportError as exc:  # pragma: no cover - confluent-kafka is a dependency of the venv
        raise BillingConfigError(f"--kafka-bootstrap needs the confluent-kafka package: {exc}") from None
    try:
        producer: Producer = KafkaProducer({**conf, "logger": rdkafka_log})
    except (KafkaException, ValueError, TypeError) as exc:
        raise BillingConfigError(f"--kafka-config: the Kafka producer refuses the configuration: {exc}") from None
    return producer


class BillingPublisher:
    def __init__(self, settings: KafkaSettings, spool: BillingSpool, builder: RecordBuilder,
                 producer_factory: Callable[[dict[str, Any]], Producer] = confluent_producer) -> None:
        self.settings = settings
        self.spool = spool
        self.builder = builder
        self._factory = producer_factory
        self._conf = dict(settings.producer_config(), error_cb=self._on_error)
        if rdkafka_log.level == logging.NOTSET:
            rdkafka_log.setLevel(logging.CRITICAL)  # our own warnings say when the broker is unreachable
        self._producer: Producer | None = self._factory(self._conf)  # a bad config fails the start-up here
        self._cond = threading.Condition()
        self._incoming: list[bytes] = []
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        # Owned by the delivery thread:
        self._generation = 0
        self._sent_upto = 0  # highest seq handed to the current producer
        self._spooled_upto = spool.last_seq()
        self._inflight = 0
        self._acked: list[int] = []
        self._dead: list[tuple[int, str]] = []
        self._failure: str | None = None
        self._window = 1 if spool.count() else settings.window  # probe first when the spool has a backlog
        self._backoff = _BACKOFF_START
        self._retry_at = 0.0
        self._healthy = True
        self._brokers_down = False
        self.counters = {"submitted": 0, "spooled": 0, "delivered": 0, "dead": 0, "resets": 0, "dropped": 0}

    # -- producer side of the event bus (runs in the event loop) -----------------------------------

    def on_event(self, event: object) -> None:
        """EventBus listener: serialise and enqueue; never blocks, never raises."""
        if not isinstance(event, TransferEvent):
            return
        try:
            values = self.builder.encoded(event)
        except Exception:
            log.exception("billing: cannot serialise %s event for %s", event.kind, event.path)
            return
        self.submit(values)

    def submit(self, values: list[bytes]) -> None:
        if not values:
            return
        with self._cond:
            if self._stopping:
                self.counters["dropped"] += len(values)
                log.warning("billing: publisher stopped; %d record(s) not spooled", len(values))
                return
            self._incoming.extend(values)
            self.counters["submitted"] += len(values)
            self._cond.notify()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="billing-delivery", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Spool whatever is queued, wait briefly for outstanding acknowledgements, stop."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.close_timeout + 30)
            if self._thread.is_alive():
                log.error("billing: delivery thread did not stop; unacknowledged records stay spooled")
                return
        else:
            self._spool_incoming()
        self.spool.close()

    def pending(self) -> int:
        """Records not yet acknowledged by Kafka (queued in memory or spooled)."""
        with self._cond:
            queued = len(self._incoming)
        return queued + (0 if self._closed else self.spool.count())

    def wait_delivered(self, timeout: float) -> bool:
        """Wait (bounded) until every submitted record has been acknowledged; for tests and benchmarks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.01)
        return self.pending() == 0

    def stats(self) -> dict[str, Any]:
        return dict(self.counters, pending=self.pending(), healthy=self._healthy, window=self._window)

    # -- delivery thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._incoming and not self._stopping:
                    self._cond.wait(self._idle_wait())
                stopping = self._stopping
            try:
                self._spool_incoming()
                if stopping:
                    self._shutdown()
                    return
                self._pump(_POLL)
            except Exception:
                log.exception("billing: delivery round failed; spooled records are kept and retried")
                self._failure = None
                self._drop_producer(flush=0.0)
                self._retry_at = time.monotonic() + _BACKOFF_MAX
                if stopping:
                    return

    def _idle_wait(self) -> float:
        if self._inflight or (self._producer is not None and self._sent_upto < self._spooled_upto):
            return 0.0  # _pump polls the producer instead of sleeping here
        if self._producer is None and self._sent_upto < self._spooled_upto:
            return max(0.0, self._retry_at - time.monotonic())
        return 1.0

    def _spool_incoming(self) -> None:
        with self._cond:
            batch, self._incoming = self._incoming, []
        if not batch:
            return
        try:
            self._spooled_upto = self.spool.append(self.settings.topic, batch)
        except Exception:
            log.exception("billing: cannot write the spool; keeping %d record(s) in memory", len(batch))
            with self._cond:
                self._incoming[:0] = batch
            time.sleep(0.1)
            return
        self.counters["spooled"] += len(batch)

    def _pump(self, poll: float) -> None:
        if self._producer is None:
            if time.monotonic() < self._retry_at:
                return
            try:
                self._producer = self._factory(self._conf)
            except Exception as exc:
                log.error("billing: cannot create a Kafka producer: %s", exc)
                self._retry_at = time.monotonic() + _BACKOFF_MAX
                return
            self._sent_upto = 0
        self._produce_window()
        if self._producer is not None:
            self._producer.poll(poll if self._inflight else 0)
        self._settle()

    def _produce_window(self) -> None:
        producer = self._producer
        room = self._window - self._inflight
        if producer is None or room <= 0 or self._sent_upto >= self._spooled_upto:
            return
        for record in self.spool.after(self._sent_upto, room):
            callback = functools.partial(self._delivered, self._generation, record.seq)
            try:
                producer.produce(record.topic, record.value, partition=self.settings.partition, on_delivery=callback)
            except BufferError:
                break  # librdkafka's queue is full; the next round continues from here
            except Exception as exc:  # refused locally, e.g. larger than message.max.bytes
                if _is_permanent(exc):
                    self._dead.append((record.seq, str(exc)))
                    self._sent_upto = record.seq
                    continue
                self._failure = f"produce failed: {exc}"
                break
            self._sent_upto = record.seq
            self._inflight += 1

    def _delivered(self, generation: int, seq: int, err: Any, msg: Any) -> None:
        """Delivery report (called from ``poll``/``flush`` on the delivery thread)."""
        if generation == self._generation:
            self._inflight -= 1
        if err is None:
            self._acked.append(seq)
        elif _is_permanent(err):
            self._dead.append((seq, str(err)))
        elif generation == self._generation and self._failure is None:
            self._failure = str(err)

    def _on_error(self, err: Any) -> None:
        """librdkafka's error callback: a fatal error needs a fresh producer; note when no broker answers."""
        fatal = getattr(err, "fatal", None)
        if callable(fatal) and fatal() and self._failure is None:
            self._failure = f"fatal producer error: {err}"
        code = getattr(err, "code", None)
        if callable(code) and code() == _ALL_BROKERS_DOWN:
            self._brokers_down = True

    def _settle(self) -> None:
        if self._acked:
            self._brokers_down = False
            acked, self._acked = self._acked, []
            self.spool.remove(acked)
            self.counters["delivered"] += len(acked)
            if not self._healthy or self._window < self.settings.window:
                if not self._healthy:
                    log.warning("billing: Kafka accepts records again; delivering %d spooled record(s)",
                                self.spool.count())
                self._healthy = True
                self._window = self.settings.window
                self._backoff = _BACKOFF_START
        for seq, error in self._dead:
            log.error("billing: Kafka refuses record %d for good (%s); moved to the spool's dead table", seq, error)
            self.spool.bury(seq, error)
            self.counters["dead"] += 1
        self._dead.clear()
        if self._failure is not None:
            self._reset(self._failure)

    def _reset(self, reason: str) -> None:
        """Drop the producer after a failed delivery and start again from the spool's head later."""
        if self._healthy:
            log.warning("billing: Kafka delivery failed (%s); records are spooled in %s until it recovers",
                        reason, self.spool.path)
        self._healthy = False
        self._failure = None
        self.counters["resets"] += 1
        self._drop_producer(flush=1.0)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        self._window = 1

    def _drop_producer(self, flush: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.flush(flush)  # serves the reports still due: purged ones fail, persisted ones ack
            except Exception:
                log.debug("billing: error while dropping the producer", exc_info=True)
        self._generation += 1
        self._inflight = 0
        self._sent_upto = 0
        acked, self._acked = self._acked, []
        if acked:
            self.spool.remove(acked)
            self.counters["delivered"] += len(acked)
        self._failure = None

    def _shutdown(self) -> None:
        """Give outstanding records a short, bounded chance, then leave the rest in the spool."""
        reachable = self._healthy and not self._brokers_down
        budget = self.settings.close_timeout if reachable else min(1.0, self.settings.close_timeout)
        deadline = time.monotonic() + budget
        while (reachable and self._producer is not None and time.monotonic() < deadline
               and (self._inflight or self._sent_upto < self._spooled_upto)):
            self._pump(_POLL)
        self._drop_producer(flush=max(0.0, min(1.0, deadline - time.monotonic())))


def _is_permanent(err: Any) -> bool:
    """True for a KafkaError (or a KafkaException carrying one) that no retry can cure."""
    if isinstance(err, Exception) and err.args and callable(getattr(err.args[0], "code", None)):
        err = err.args[0]
    code = getattr(err, "code", None)
    if not callable(code):
        return False
    try:
        return int(code()) in _PERMANENT_ERRORS
    except (TypeError, ValueError):
        return False
