"""The project's Kafka broker fixtures: a thin re-export of :mod:`airflow_dcache.testing`.

The broker logic (tansu, ``KafkaBroker``, ``Record``, ``unique_topic``, ...) lives in
:mod:`airflow_dcache.testing.kafka` and the fixtures ``kafka_broker`` / ``kafka_broker_factory`` in the
package's pytest plugin; this module keeps the old import path for the tests and registers the fixtures
(through ``pytest_plugins`` in ``tests/conftest.py``) even where the package's entry point is absent.
"""

from __future__ import annotations

from airflow_dcache.testing.kafka import (
    CONSUMER_DEFAULTS,
    HOST,
    START_TIMEOUT,
    KafkaBroker,
    Record,
    free_port,
    tansu_binary,
    unique_topic,
)
from airflow_dcache.testing.plugin import kafka_broker, kafka_broker_factory

__all__ = [
    "CONSUMER_DEFAULTS",
    "HOST",
    "START_TIMEOUT",
    "KafkaBroker",
    "Record",
    "free_port",
    "kafka_broker",
    "kafka_broker_factory",
    "tansu_binary",
    "unique_topic",
]
