"""``collector_paused``: the collector is off inside, back on after (also after an error), and a collector
someone else disabled stays disabled."""

from __future__ import annotations

import gc

import pytest

from airflow_dcache.utils.gc_pause import collector_paused


@pytest.fixture(autouse=True)
def _restore_collector():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_and_enabled_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_enabled_again_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_billing_burst_leaves_the_collector_enabled() -> None:
    from airflow_dcache.triggers.billing import DCacheBillingEventTrigger
    from benchmarks.trigger_billing import _Message, records

    gc.enable()
    trigger = DCacheBillingEventTrigger(topics=["billing"], site="main")
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(trigger.serialize()[1])
    batch, _ = producer.build_batch([_Message(i, v) for i, v in enumerate([*records(20), b"not json"])])
    assert batch.records == 21 and batch.invalid == 1 and len(batch.events) == 20
    assert gc.isenabled()
