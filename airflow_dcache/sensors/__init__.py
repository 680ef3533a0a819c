"""Sensors waiting for dCache files and requests."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "DCacheFileSensor": "airflow_dcache.sensors.dcache",
    "DCacheQosSensor": "airflow_dcache.sensors.dcache",
    "DCacheBulkRequestSensor": "airflow_dcache.sensors.dcache",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
