"""Command-line values of the Kafka billing publisher, validated before the service starts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_TOPIC = "billing"
# Properties the publisher's guarantees rest on; a --kafka-config may not change them.
_FIXED = {"enable.idempotence": True, "acks": "all"}
_DEFAULTS: dict[str, Any] = {
    # librdkafka retries a record until this runs out; then the publisher starts over from its spool
    # with a fresh producer (see publisher.py), so a short value only means a quicker fresh start.
    "message.timeout.ms": 15000,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 1000,
    "linger.ms": 5,
}
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


class BillingConfigError(ValueError):
    """A billing option is unusable; the message names the option."""


def parse_bootstrap(text: str) -> str:
    """Validate ``HOST:PORT[,HOST:PORT...]`` (IPv6 as ``[addr]:port``) and return it normalised."""
    items = [part.strip() for part in (text or "").split(",")]
    if not text or not all(items):
        raise BillingConfigError(f"--kafka-bootstrap: expected HOST:PORT[,HOST:PORT...], got {text!r}")
    for item in items:
        if item.startswith("["):
            host, sep, port = item[1:].partition("]:")
            ok_host = bool(host) and ":" in host and all(c in "0123456789abcdefABCDEF:." for c in host)
        else:
            host, sep, port = item.rpartition(":")
            ok_host = bool(_HOST.fullmatch(host))
        if not sep or not ok_host:
            raise BillingConfigError(f"--kafka-bootstrap: {item!r} is not HOST:PORT (in {text!r})")
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise BillingConfigError(f"--kafka-bootstrap: bad port in {item!r}: expected 1-65535")
    return ",".join(items)


def parse_topic(text: str) -> str:
    if not _TOPIC.fullmatch(text or "") or text in (".", ".."):
        raise BillingConfigError(f"--kafka-topic: {text!r} is not a Kafka topic name "
                                 "(1-249 characters of A-Z a-z 0-9 . _ -)")
    return text


def parse_config_options(options: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` librdkafka producer properties, as dCache's ``*.kafka.producer.configs!KEY``."""
    pairs = []
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BillingConfigError(f"--kafka-config: expected KEY=VALUE, got {option!r}")
        if key in _FIXED or key == "bootstrap.servers":
            raise BillingConfigError(f"--kafka-config: {key} is fixed by the billing publisher")
        pairs.append((key, value.strip()))
    return tuple(pairs)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    topic: str = DEFAULT_TOPIC
    options: tuple[tuple[str, str], ...] = ()
    partition: int = 0  # every record goes to one partition, so the topic keeps publication order
    window: int = 1000  # records handed to the producer at once; the rest wait in the spool
    close_timeout: float = 5.0  # seconds a stopping service waits for outstanding acknowledgements
    client_id: str = "dcache-billing"
    spool_reserve: int | None = None  # bytes kept for the spool (None: 16 MiB, or 1/8 of a smaller file system)

    def producer_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "client.id": self.client_id, **_DEFAULTS}
        conf.update(dict(self.options))
        conf.update(_FIXED)
        return conf
