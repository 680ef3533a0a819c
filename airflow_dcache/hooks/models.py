"""What the dCache hooks return and accept: the public home of their value types.

The classes are defined in the hooks' private modules (``_models``, ``_settings``), which may be
reorganised; import them from here, e.g.::

    from airflow_dcache.hooks.models import AuthType, NamespaceEntry, TransferResult

Note that :class:`StorageEvent` here is the hook-level event as read from one SSE channel
(``DCacheHook.stream_events``); triggers and DAGs work with the richer, source-independent
:class:`airflow_dcache.events.model.StorageEvent` of the event contract.
"""

from __future__ import annotations

from airflow_dcache.hooks._models import (
    BULK_FINISHED,
    STAGE_FILE_FINAL,
    ArchivedBulkRequest,
    ArchiveInfo,
    BulkRequestInfo,
    BulkSubmission,
    BulkTarget,
    MacaroonResponse,
    NamespaceEntry,
    StagedFile,
    StageRequestInfo,
    StorageEvent,
    TransferResult,
    UserInfo,
)
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings

__all__ = [
    "BULK_FINISHED",
    "STAGE_FILE_FINAL",
    "ArchiveInfo",
    "ArchivedBulkRequest",
    "AuthType",
    "BulkRequestInfo",
    "BulkSubmission",
    "BulkTarget",
    "ConnectionSettings",
    "MacaroonResponse",
    "NamespaceEntry",
    "StageRequestInfo",
    "StagedFile",
    "StorageEvent",
    "TransferResult",
    "UserInfo",
]
