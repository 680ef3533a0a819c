"""Transfers between dCache and the worker's local filesystem."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "LocalFilesystemToDCacheOperator": "airflow_dcache.transfers.local_to_dcache",
    "DCacheToLocalFilesystemOperator": "airflow_dcache.transfers.dcache_to_local",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
