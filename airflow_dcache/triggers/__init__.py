"""Triggers for dCache events; imported lazily so a missing optional dependency breaks only its trigger.

``DCacheStorageEventTrigger`` (SSE inotify) needs only the hooks; ``DCacheBillingEventTrigger`` needs
the Kafka provider; ``DCacheQosTrigger`` / ``DCacheBulkRequestTrigger`` are the deferrable sensors'
waiting triggers; ``DCacheFilesWaitTrigger`` waits for a batch of files with per-file outcomes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_dcache.triggers.billing import DCacheBillingEventTrigger
    from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
    from airflow_dcache.triggers.files_wait import DCacheFilesWaitTrigger
    from airflow_dcache.triggers.qos import DCacheQosTrigger
    from airflow_dcache.triggers.storage_events import DCacheStorageEventTrigger

__all__ = ["DCacheBillingEventTrigger", "DCacheBulkRequestTrigger", "DCacheFilesWaitTrigger", "DCacheQosTrigger",
           "DCacheStorageEventTrigger"]

_MODULES = {
    "DCacheStorageEventTrigger": "airflow_dcache.triggers.storage_events",
    "DCacheBillingEventTrigger": "airflow_dcache.triggers.billing",
    "DCacheQosTrigger": "airflow_dcache.triggers.qos",
    "DCacheBulkRequestTrigger": "airflow_dcache.triggers.bulk",
    "DCacheFilesWaitTrigger": "airflow_dcache.triggers.files_wait",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
