"""The ``queues`` entry: ``MessageQueueTrigger(scheme="dcache+sse" | "dcache+billing")`` resolves through
Airflow's real ProvidersManager to the provider's concrete triggers, and stores exactly what the concrete
trigger would (so state, de-duplication and restarts are unchanged). The e2e storage-event test drives a
DAG through ``scheme="dcache+sse"``."""

from __future__ import annotations

import pytest
from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.providers_manager import ProvidersManager

from airflow_dcache.queues.dcache import DCacheBillingMessageQueueProvider, DCacheSseMessageQueueProvider
from airflow_dcache.triggers import DCacheStorageEventTrigger


def test_both_schemes_are_registered_with_airflow() -> None:
    names = ProvidersManager().queue_class_names
    assert "airflow_dcache.queues.dcache.DCacheSseMessageQueueProvider" in names
    assert "airflow_dcache.queues.dcache.DCacheBillingMessageQueueProvider" in names


def test_sse_scheme_serialises_as_the_storage_event_trigger() -> None:
    kwargs = {"dcache_conn_id": "dcache_main", "paths": ["/data/incoming"], "events": ["IN_CLOSE_WRITE"]}
    via_queue = MessageQueueTrigger(scheme="dcache+sse", **kwargs).serialize()
    direct = DCacheStorageEventTrigger(**kwargs).serialize()  # type: ignore[arg-type]
    assert via_queue == direct
    assert via_queue[0] == "airflow_dcache.triggers.storage_events.DCacheStorageEventTrigger"


def test_billing_scheme_serialises_as_the_billing_trigger() -> None:
    pytest.importorskip("airflow.providers.apache.kafka")
    from airflow_dcache.triggers.billing import DCacheBillingEventTrigger

    kwargs = {"kafka_config_id": "dcache_billing", "topics": ["billing"]}
    via_queue = MessageQueueTrigger(scheme="dcache+billing", **kwargs).serialize()
    assert via_queue == DCacheBillingEventTrigger(**kwargs).serialize()  # type: ignore[arg-type]


def test_schemes_are_specific() -> None:
    assert DCacheSseMessageQueueProvider().scheme_matches("dcache+sse")
    assert not DCacheSseMessageQueueProvider().scheme_matches("dcache")
    assert not DCacheBillingMessageQueueProvider().scheme_matches("kafka")
    assert not DCacheSseMessageQueueProvider().queue_matches("dcache+sse://main/data")


def test_bad_arguments_fail_as_the_concrete_trigger_does() -> None:
    with pytest.raises((TypeError, ValueError)) as direct:
        DCacheStorageEventTrigger(dcache_conn_id="dcache_main", paths=["relative/path"])  # type: ignore[arg-type]
    with pytest.raises(type(direct.value)) as queued:
        MessageQueueTrigger(scheme="dcache+sse", dcache_conn_id="dcache_main", paths=["relative/path"]).serialize()
    assert str(queued.value) == str(direct.value)
