"""DCacheBillingEventTrigger construction: validation naming the field, deterministic kwargs, round-trip."""

from __future__ import annotations

import json

import pytest
from airflow.triggers.base import BaseEventTrigger

from airflow_dcache.triggers.billing import CLASSPATH, DCacheBillingEventTrigger
from airflow_dcache.triggers.billing_stream import BillingStreamProducer


def test_serialize_names_this_class_and_rebuilds_identically() -> None:
    trigger = DCacheBillingEventTrigger(
        kafka_config_id="kafka_billing", topics=["billing-b", "billing-a", "billing-b"], include=["*.h5", "/data"],
        users=["bob", "alice"], client_ips=["10.0.0.0/8"], kinds=["IN_CLOSE_WRITE", "deleted"], min_size=1,
        site="main", dlq_topic="billing-dead", group_id="facility")
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH == f"{DCacheBillingEventTrigger.__module__}.{DCacheBillingEventTrigger.__name__}"
    assert kwargs["topics"] == ["billing-a", "billing-b"]
    assert kwargs["include"] == ["*.h5", "/data"] and kwargs["users"] == ["alice", "bob"]
    assert kwargs["kinds"] == ["closed_after_write", "deleted"]
    json.dumps(kwargs)  # plain JSON, no secret: only the connection id
    rebuilt = DCacheBillingEventTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*rebuilt.serialize())
    assert rebuilt.shared_stream_key() == ("dcache-billing", "kafka_billing", ("billing-a", "billing-b"), "facility")
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(kwargs)
    assert isinstance(producer, BillingStreamProducer)
    assert (producer.group_id, producer.dlq_topic, producer.topics) == ("facility", "billing-dead",
                                                                        ["billing-a", "billing-b"])


def test_defaults() -> None:
    trigger = DCacheBillingEventTrigger(topics=["billing"], kafka_config_id="kafka_billing")
    kwargs = trigger.serialize()[1]
    assert kwargs["site"] == "kafka-billing" and kwargs["kinds"] == ["closed_after_write"]
    assert (kwargs["exclude_p2p"], kwargs["exclude_failed"], kwargs["start_from"], kwargs["group_id"]) == (
        True, True, "latest", None)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"topics": []}, "topics"),
    ({"topics": "billing"}, "topics"),
    ({"topics": ["bad topic"]}, "topics"),
    ({"kafka_config_id": ""}, "kafka_config_id"),
    ({"dlq_topic": "billing"}, "dlq_topic"),
    ({"dlq_topic": "a/b"}, "dlq_topic"),
    ({"group_id": ""}, "group_id"),
    ({"start_from": "beginning"}, "start_from"),
    ({"site": "Main Site"}, "site"),
    ({"include": ["re:("]}, "include"),
    ({"exclude": ["/data/../etc"]}, "exclude"),
    ({"name_regex": "[a-"}, "name_regex"),
    ({"kinds": ["IN_CREATE"]}, "kinds"),
    ({"kinds": ["landed"]}, "kinds"),
    ({"client_ips": ["not-an-ip"]}, "client_ips"),
    ({"min_size": -1}, "min_size"),
    ({"min_size": 10, "max_size": 1}, "min_size"),
    ({"exclude_p2p": "yes"}, "exclude_p2p"),
    ({"batch_max_events": 5000}, "batch_max_events"),
    ({"batch_max_events": 0}, "batch_max_events"),
    ({"batch_max_bytes": 1024}, "batch_max_bytes"),
    ({"batch_quiet": 0}, "batch_quiet"),
    ({"batch_quiet": 3, "batch_max_wait": 2}, "batch_quiet"),
    ({"min_batch_interval": -1}, "min_batch_interval"),
    ({"flush_after": 1, "min_batch_interval": 2}, "flush_after"),
    ({"poll_timeout": True}, "poll_timeout"),
])
def test_bad_configuration_fails_at_construction_naming_the_field(kwargs: dict, field: str) -> None:
    options = {"topics": ["billing"], "site": "main", **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        DCacheBillingEventTrigger(**options)


def test_exported_from_the_triggers_package() -> None:
    import airflow_dcache.triggers as triggers

    try:
        exported = triggers.DCacheBillingEventTrigger
    except AttributeError:
        pytest.skip("airflow_dcache.triggers does not export DCacheBillingEventTrigger yet (events-sse owns it)")
    assert exported is DCacheBillingEventTrigger
