"""dCache operators, imported lazily so that loading one does not import them all."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "DCacheCreateDirectoryOperator": "airflow_dcache.operators.namespace",
    "DCacheMoveOperator": "airflow_dcache.operators.namespace",
    "DCacheDeleteOperator": "airflow_dcache.operators.namespace",
    "DCacheSetAttributesOperator": "airflow_dcache.operators.namespace",
    "DCacheSetPermissionsOperator": "airflow_dcache.operators.namespace",
    "DCacheListOperator": "airflow_dcache.operators.namespace",
    "DCacheSetQosOperator": "airflow_dcache.operators.qos",
    "DCachePinOperator": "airflow_dcache.operators.qos",
    "DCacheUnpinOperator": "airflow_dcache.operators.qos",
    "DCacheStageOperator": "airflow_dcache.operators.stage",
    "DCacheReplicateOperator": "airflow_dcache.operators.replicate",
    "DCacheFunctionOperator": "airflow_dcache.operators.function",
    "DCacheChunkWaitOperator": "airflow_dcache.operators.chunk_wait",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
