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

When the spool's file system is full (see :mod:`.spool_space` for the space the spool keeps):

* **Uploads are refused before they commit.** :meth:`BillingPublisher.admit_upload` is the
  transfer service's upload guard; it raises :class:`InsufficientStorage` (HTTP 507) while an
  append is failing or while the spool is short of its reserve. The guard runs before the body is
  read and again right before the namespace commit, on the event loop with no await between it
  and the event that brings the upload's records here, so a refused upload leaves nothing (no
  name, no pool file, no namespace event, no record) and an admitted one has the reserve for its
  records. Uploads never wait for Kafka or for the disk: the check is one ``statvfs``.
* **Reads keep working.** Their records (and those of door deletes and tape flushes) use the
  reserve down to the spool's floor, which stays for deleting delivered records. Below the floor,
  or when an append fails anyway (ENOSPC from another writer), records wait in memory, in order
  (at most ``_MAX_HELD``; beyond that new ones are dropped and counted), and the delivery thread
  tries again with a growing back-off (up to 2 s), logging once, not per attempt. An append is one
  transaction, so a failed one leaves the spool exactly as it was: nothing half-written.
* **Deletes that fail** (a delivered record cannot be removed for lack of space) are remembered
  and retried; those records are not sent again meanwhile.
* **Recovery is automatic**: deliveries free pages inside the spool, the next append that
  succeeds reopens uploads, and the spool, once drained, gives its space back
  (:meth:`.SpaceAwareSpool.compact`). A record is lost only if the service stops while it is still
  held in memory (the stop retries for its close timeout, then logs how many).

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
from airflow_dcache.server.services.billing.spool_space import SpaceAwareSpool, is_out_of_space
from airflow_dcache.server.services.errors import InsufficientStorage
from airflow_dcache.server.services.events import TransferEvent

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
_APPEND_CHUNK = 500  # records per spool transaction
_SPOOL_RETRY_START = 0.05  # seconds before a failed append is tried again, doubling ...
_SPOOL_RETRY_MAX = 2.0  # ... up to this
_MAX_HELD = 100_000  # records held in memory while the spool cannot take them; beyond: dropped, counted


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
    def __init__(self, settings: KafkaSettings, spool: SpaceAwareSpool, builder: RecordBuilder,
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
        self._spool_error: str | None = None  # why the last append failed; None once one succeeds
        self._spool_retry_at = 0.0
        self._spool_backoff = _SPOOL_RETRY_START
        self._undeleted: set[int] = set()  # delivered, but their delete failed: retried, never re-sent
        self._delete_retry_at = 0.0
        self._refusing: str | None = None  # event loop: the reason uploads were last refused
        self.counters = {"submitted": 0, "spooled": 0, "delivered": 0, "dead": 0, "resets": 0, "dropped": 0,
                         "refused_uploads": 0, "spool_failures": 0}

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
            if self._spool_error is not None and len(self._incoming) + len(values) > _MAX_HELD:
                self.counters["dropped"] += len(values)
                log.error("billing: the spool cannot take records (%s) and %d are held in memory; "
                          "%d record(s) dropped", self._spool_error, len(self._incoming), len(values))
                return
            self._incoming.extend(values)
            self.counters["submitted"] += len(values)
            self._cond.notify()

    def admit_upload(self, path: str) -> None:
        """Upload guard (event loop): refuse with 507 while the spool could not keep the upload's records.

        Called by the transfer service before an upload's body is read and again just before the
        namespace commit; see the module docstring for why this keeps every committed upload's
        records and leaves nothing of a refused one.
        """
        reason = self._spool_error or self.spool.shortage()
        if reason is None:
            if self._refusing is not None:
                self._refusing = None
                log.warning("billing: the spool %s has room again; uploads are accepted", self.spool.path)
            return
        self.counters["refused_uploads"] += 1
        if self._refusing is None:
            log.warning("billing: the spool %s has no room for more records (%s); uploads are refused "
                        "(507) until it has", self.spool.path, reason)
        self._refusing = reason
        raise InsufficientStorage(f"No space left for billing records: upload of {path} refused; "
                                  "try again later")

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
        with self._cond:
            held = len(self._incoming)
        return dict(self.counters, pending=self.pending(), held=held, healthy=self._healthy, window=self._window,
                    spool_error=self._spool_error, spool_free=self.spool.free_bytes(), spool_slack=self.spool.slack)

    # -- delivery thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if (not self._incoming or self._spool_error is not None) and not self._stopping:
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
                try:
                    self._failure = None
                    self._drop_producer(flush=0.0)
                except Exception:
                    log.exception("billing: cannot drop the producer")
                self._retry_at = time.monotonic() + _BACKOFF_MAX
                if stopping:
                    return

    def _idle_wait(self) -> float:
        now = time.monotonic()
        if self._inflight or (self._producer is not None and self._sent_upto < self._spooled_upto):
            return 0.0  # _pump polls the producer instead of sleeping here
        wait = 1.0
        if self._producer is None and self._sent_upto < self._spooled_upto:
            wait = self._retry_at - now
        if self._spool_error is not None:
            wait = min(wait, self._spool_retry_at - now)
        if self._undeleted:
            wait = min(wait, self._delete_retry_at - now)
        return max(0.0, wait)

    def _spool_incoming(self, *, force: bool = False) -> None:
        """Append the queued records, in order, in transactions of at most ``_APPEND_CHUNK`` records
        and the spool's ``append_budget`` bytes (a single larger record goes alone).

        A failed transaction leaves the spool as it was (SQLite rolls it back), so its records and
        every later one go back to the head of the queue and are tried again after a back-off.
        """
        if self._spool_error is not None and not force and time.monotonic() < self._spool_retry_at:
            return
        with self._cond:
            batch, self._incoming = self._incoming, []
        if not batch:
            return
        done = 0
        try:
            budget = self.spool.append_budget
            while done < len(batch):
                end, size = done + 1, len(batch[done])
                while end < len(batch) and end - done < _APPEND_CHUNK and size + len(batch[end]) <= budget:
                    size += len(batch[end])
                    end += 1
                short = self.spool.append_shortage(size)
                if short is not None:
                    raise _SpoolShort(short)
                self._spooled_upto = self.spool.append(self.settings.topic, batch[done:end])
                self.counters["spooled"] += end - done
                done = end
        except Exception as exc:
            with self._cond:
                self._incoming[:0] = batch[done:]
                held = len(self._incoming)
            self._spool_failed(exc, held)
        else:
            if self._spool_error is not None:
                log.warning("billing: the spool %s takes records again (%d spooled)", self.spool.path, len(batch))
                self._spool_error = None
                self._spool_backoff = _SPOOL_RETRY_START
        finally:
            self.spool.refresh()

    def _spool_failed(self, exc: Exception, held: int) -> None:
        self.counters["spool_failures"] += 1
        first = self._spool_error is None
        if isinstance(exc, _SpoolShort) or is_out_of_space(exc):
            self._spool_error = _why(exc)
            if first:
                log.warning("billing: the spool %s takes no more records for now (%s); %d record(s) wait in "
                            "memory and uploads are refused until it has room", self.spool.path, self._spool_error,
                            held)
        else:
            self._spool_error = f"the spool cannot be written: {exc}"
            if first:
                log.exception("billing: cannot write the spool %s; %d record(s) wait in memory and uploads "
                              "are refused until it can be written", self.spool.path, held)
        if not first:
            log.debug("billing: spool append failed again (%s); %d record(s) held", exc, held)
            self._spool_backoff = min(self._spool_backoff * 2, _SPOOL_RETRY_MAX)
        self._spool_retry_at = time.monotonic() + self._spool_backoff

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
            if record.seq in self._undeleted:  # delivered already; only its delete is pending
                self._sent_upto = record.seq
                continue
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

    def _forget(self, seqs: list[int]) -> bool:
        """Delete delivered records; a delete that fails (disk full) is remembered and retried later.

        True when the spool may now be empty: it is then compacted if an outage left it large.
        """
        todo = sorted(self._undeleted.union(seqs)) if self._undeleted else seqs
        if not todo:
            return False
        try:
            self.spool.remove(todo)
        except Exception as exc:
            if not self._undeleted:
                log.warning("billing: cannot delete %d delivered record(s) from the spool %s (%s); they are "
                            "not sent again and the delete is retried", len(todo), self.spool.path, _why(exc))
            self._undeleted.update(todo)
            self._delete_retry_at = time.monotonic() + _SPOOL_RETRY_MAX
            return False
        finally:
            self.spool.refresh()
        if self._undeleted:
            log.warning("billing: %d delivered record(s) deleted from the spool after all", len(self._undeleted))
            self._undeleted.clear()
        if not self._inflight and self._sent_upto >= self._spooled_upto and self.spool.compact():
            log.info("billing: the spool %s is empty again; its free space went back to the file system",
                     self.spool.path)
        return True

    def _settle(self) -> None:
        if self._acked:
            self._brokers_down = False
            acked, self._acked = self._acked, []
            self.counters["delivered"] += len(acked)
            self._forget(acked)
            if not self._healthy or self._window < self.settings.window:
                if not self._healthy:
                    log.warning("billing: Kafka accepts records again; delivering %d spooled record(s)",
                                self.spool.count())
                self._healthy = True
                self._window = self.settings.window
                self._backoff = _BACKOFF_START
        elif self._undeleted and time.monotonic() >= self._delete_retry_at:
            self._forget([])
        while self._dead:
            seq, error = self._dead[0]
            try:
                self.spool.bury(seq, error)
            except Exception as exc:  # disk full: left in the spool; Kafka refuses it again next time
                log.warning("billing: cannot move record %d to the spool's dead table (%s)", seq, exc)
                self._dead.clear()
                break
            log.error("billing: Kafka refuses record %d for good (%s); moved to the spool's dead table", seq, error)
            self._dead.pop(0)
            self.counters["dead"] += 1
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
            self.counters["delivered"] += len(acked)
            self._forget(acked)
        self._failure = None

    def _shutdown(self) -> None:
        """Give outstanding records a short, bounded chance, then leave the rest in the spool."""
        reachable = self._healthy and not self._brokers_down
        budget = self.settings.close_timeout if reachable else min(1.0, self.settings.close_timeout)
        deadline = time.monotonic() + budget
        while self._incoming and time.monotonic() < deadline:  # the spool was failing: a few more tries
            if reachable and self._producer is not None:
                self._pump(_POLL)  # deliveries free spool pages
            else:
                time.sleep(_SPOOL_RETRY_START)
            self._spool_incoming(force=True)
        while (reachable and self._producer is not None and time.monotonic() < deadline
               and (self._inflight or self._sent_upto < self._spooled_upto)):
            self._pump(_POLL)
        self._drop_producer(flush=max(0.0, min(1.0, deadline - time.monotonic())))
        with self._cond:
            lost, self._incoming = len(self._incoming), []
        if lost:
            self.counters["dropped"] += lost
            log.error("billing: %d record(s) could not be spooled before the stop (%s) and are lost",
                      lost, self._spool_error)


class _SpoolShort(Exception):
    """The spool keeps its floor for deletes: the records wait (see :mod:`.spool_space`)."""


def _why(exc: BaseException) -> str:
    """The cause to log: a full disk by name (SQLite reports it behind a failed rollback)."""
    if isinstance(exc, _SpoolShort):
        return str(exc)
    return "no space left on the spool's file system" if is_out_of_space(exc) else str(exc)


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
