"""Kafka billing records as dCache publishes them (reference §5), with a durable spool.

* :mod:`.records`: pure serializers (``transfer``, ``request``, door/pool ``remove``, ``store``/``restore``)
* :mod:`.javafmt`: the JVM value formats they need (date, duration, double, IP, org.json text)
* :mod:`.events`: which records a :class:`~airflow_dcache.server.services.events.TransferEvent` yields
* :mod:`.door`: request details only the WebDAV door knows (client port, TLS, macaroon)
* :mod:`.publisher`: spool-first, in-order, at-least-once delivery on a background thread
* :mod:`.spool_space`: the spool's room: a bounded WAL, a reserve, space given back after an outage
* :mod:`.settings`: validated command-line values
"""

from __future__ import annotations

from pathlib import Path

from airflow_dcache.server.services.billing.events import DEFAULT_DOMAIN, RecordBuilder
from airflow_dcache.server.services.billing.publisher import BillingPublisher
from airflow_dcache.server.services.billing.settings import (
    BillingConfigError,
    KafkaSettings,
    parse_bootstrap,
    parse_config_options,
    parse_topic,
)
from airflow_dcache.server.services.billing.spool_space import SpaceAwareSpool

SPOOL_FILE = "billing-spool.db"


def build_publisher(spool_dir: Path, pool_name: str, settings: KafkaSettings, *, door_cell: str | None = None,
                    domain: str = DEFAULT_DOMAIN) -> BillingPublisher:
    """A publisher spooling to ``<spool_dir>/billing-spool.db``; call ``start()`` then ``close()``.

    ``spool_dir`` is the service's ``--billing-spool-dir``, by default its ``--data-dir``.
    """
    spool = SpaceAwareSpool(spool_dir / SPOOL_FILE, settings.spool_reserve)
    try:
        return BillingPublisher(settings, spool, RecordBuilder.for_service(pool_name, door_cell=door_cell,
                                                                           domain=domain))
    except BaseException:
        spool.close()
        raise


__all__ = [
    "SPOOL_FILE",
    "BillingConfigError",
    "BillingPublisher",
    "KafkaSettings",
    "RecordBuilder",
    "SpaceAwareSpool",
    "build_publisher",
    "parse_bootstrap",
    "parse_config_options",
    "parse_topic",
]
