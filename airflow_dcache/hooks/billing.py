"""``DCacheBillingConsumerHook``: the Kafka consumer the billing stream reads dCache's records with.

The Kafka provider's ``KafkaConsumerHook`` builds a consumer from the connection's extra as it is. The
billing stream needs two settings decided per stream, not per connection, and the one way into the
provider's construction is its ``_get_client`` (a private override point, listed in
``airflow_dcache/version_compat.py``):

* ``group.id``: the trigger's ``group_id`` argument wins over the connection's, and a connection
  without one still gets a stable group (``airflow-dcache-billing``). The group is part of the
  shared-stream key and the one cursor of the stream: offsets are committed **manually**, only after
  Airflow persisted the events (the connection must set ``enable.auto.commit: false``; the stream
  producer checks it).
* ``auto.offset.reset``: the trigger's ``start_from`` (``latest`` / ``earliest``), where a group that
  never committed starts; the stream pins that position at the first assignment.

The hook does no I/O of its own; ``get_conn`` returns an unsubscribed ``confluent_kafka.Consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["DEFAULT_GROUP_ID", "DCacheBillingConsumerHook"]

#: The consumer group when neither the trigger nor the connection names one.
DEFAULT_GROUP_ID: Final = "airflow-dcache-billing"


class DCacheBillingConsumerHook(KafkaConsumerHook):
    """The provider's consumer hook with the billing stream's ``group.id`` and initial-offset policy.

    :param topics: topics the consumer is for (the stream subscribes itself, with its own ``on_assign``).
    :param kafka_config_id: Kafka connection; its extra is the librdkafka config.
    :param group_id: consumer group; ``None``: the connection's ``group.id``, else :data:`DEFAULT_GROUP_ID`.
    :param start_from: ``latest`` or ``earliest``: where a group without a committed offset starts.
    """

    def __init__(self, topics: Sequence[str], kafka_config_id: str, group_id: str | None, start_from: str) -> None:
        super().__init__(topics=topics, kafka_config_id=kafka_config_id)
        self.group_id = group_id
        self.start_from = start_from
        #: The ``group.id`` the consumer was built with (set by ``get_conn``), for logs and the stream.
        self.resolved_group_id: str | None = None

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        config = dict(config)
        config["group.id"] = self.group_id or config.get("group.id") or DEFAULT_GROUP_ID
        config["auto.offset.reset"] = self.start_from
        self.resolved_group_id = str(config["group.id"])
        return super()._get_client(config)
