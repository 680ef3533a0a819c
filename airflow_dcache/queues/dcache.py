"""dCache's two event streams as common-messaging queues, so a DAG can say what kind of queue it
watches the way it does for ``kafka`` or ``sqs``::

    MessageQueueTrigger(scheme="dcache+sse", dcache_conn_id="dcache_main", paths=["/data/incoming"])
    MessageQueueTrigger(scheme="dcache+billing", kafka_config_id="dcache_billing", topics=["billing"])

``MessageQueueTrigger`` picks the provider whose scheme matches and serialises the concrete trigger
(:class:`~airflow_dcache.triggers.DCacheStorageEventTrigger` or
:class:`~airflow_dcache.triggers.DCacheBillingEventTrigger`), so the stored trigger, its state and its
de-duplication are exactly those of the trigger used directly; the keyword arguments are that
trigger's. Only scheme dispatch is offered: the deprecated ``queue=`` URI form never existed for dCache.

The billing trigger needs the ``[kafka]`` extra; it is imported only when that scheme is used, so the
SSE scheme registers and works without Kafka installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider

if TYPE_CHECKING:
    from airflow.triggers.base import BaseEventTrigger


class DCacheSseMessageQueueProvider(BaseMessageQueueProvider):
    """``scheme="dcache+sse"``: the frontend's storage-event channel (SSE), one watcher per DAG asset."""

    scheme = "dcache+sse"

    def trigger_class(self) -> type[BaseEventTrigger]:
        from airflow_dcache.triggers.storage_events import DCacheStorageEventTrigger

        return DCacheStorageEventTrigger


class DCacheBillingMessageQueueProvider(BaseMessageQueueProvider):
    """``scheme="dcache+billing"``: dCache's billing records on Kafka, read as a shared stream."""

    scheme = "dcache+billing"

    def trigger_class(self) -> type[BaseEventTrigger]:
        from airflow_dcache.triggers.billing import DCacheBillingEventTrigger

        return DCacheBillingEventTrigger
