"""OpenLineage for the operators: their results as input/output datasets, if the provider is installed.

Datasets are named as OpenLineage's naming convention asks of a storage system: namespace
``dcache://<site>`` (the connection's ``site`` extra, the same one as in ``dcache://`` asset URIs) and
the absolute path as the name. The mapping is pure (results in, :class:`LineageDataset` out) so it is
tested without OpenLineage; :func:`operator_lineage` converts to the provider's ``OperatorLineage``
only when ``apache-airflow-providers-openlineage`` is importable, and otherwise returns ``None``, which
the OpenLineage listener (absent then anyway) or any caller treats as "no lineage".

Checksums and the activation record's path are kept in each dataset's ``facets`` as plain values;
they become OpenLineage custom facets (``dcache_checksums``, ``dcache_activation``) on conversion.
Nothing secret is in a result (the operators scrub macaroons before returning), so nothing secret
reaches a lineage event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_dcache.assets.dcache import lineage_namespace

CHECKSUM_FACET = "dcache_checksums"
ACTIVATION_FACET = "dcache_activation"


@dataclass(frozen=True)
class LineageDataset:
    """One dCache file or directory as an OpenLineage dataset (``namespace`` + ``name``)."""

    namespace: str
    name: str
    facets: Mapping[str, Any] = field(default_factory=dict)





def _dataset(site: str, path: Any, checksums: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> LineageDataset | None:
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    facets: dict[str, Any] = dict(extra or {})
    sums = {str(k): str(v) for k, v in (checksums or {}).items() if v}
    if sums:
        facets[CHECKSUM_FACET] = sums
    return LineageDataset(lineage_namespace(site), path, facets)


def _unique(datasets: Iterable[LineageDataset | None]) -> list[LineageDataset]:
    seen: set[tuple[str, str]] = set()
    out: list[LineageDataset] = []
    for ds in datasets:
        if ds is not None and (ds.namespace, ds.name) not in seen:
            seen.add((ds.namespace, ds.name))
            out.append(ds)
    return out


def replicate_datasets(result: Any, source_site: str, destination_site: str
                       ) -> tuple[list[LineageDataset], list[LineageDataset]]:
    """Inputs and outputs of a ``DCacheReplicateOperator`` run: each source file and its copy.

    :param result: the operator's return value (``{"files": [{"source", "destination", "adler32"}, …]}``).
    :param source_site: ``site`` of the source connection.
    :param destination_site: ``site`` of the destination connection.
    """
    files = result.get("files") if isinstance(result, Mapping) else None
    inputs, outputs = [], []
    for item in files or []:
        if not isinstance(item, Mapping):
            continue
        sums = {"adler32": item.get("adler32")}
        inputs.append(_dataset(source_site, item.get("source"), sums))
        outputs.append(_dataset(destination_site, item.get("destination"), sums))
    return _unique(inputs), _unique(outputs)


def function_datasets(result: Any, record: Any, site: str) -> tuple[list[LineageDataset], list[LineageDataset]]:
    """Inputs and outputs of a ``DCacheFunctionOperator`` run, from its result and activation record.

    :param result: the operator's return value (``outputs`` with final paths and checksums,
        ``activation_record`` path, ``function_digest``).
    :param record: the activation record (XCom ``activation_record``); its ``inputs`` name the files read.
    :param site: ``site`` of the operator's connection (inputs and outputs are on the same dCache).
    """
    result = result if isinstance(result, Mapping) else {}
    record = record if isinstance(record, Mapping) else {}
    inputs = [_dataset(site, i.get("path"), i.get("checksums")) for i in record.get("inputs") or []
              if isinstance(i, Mapping)]
    activation = {k: v for k, v in (("record", result.get("activation_record")),
                                     ("function_digest", result.get("function_digest"))) if v}
    extra = {ACTIVATION_FACET: activation} if activation else None
    outputs = [_dataset(site, o.get("path"), o.get("checksums"), extra) for o in result.get("outputs") or []
               if isinstance(o, Mapping)]
    return _unique(inputs), _unique(outputs)


def available() -> bool:
    """Whether the OpenLineage provider is installed (checked before any XCom is read for lineage)."""
    import importlib.util

    try:
        return importlib.util.find_spec("airflow.providers.openlineage") is not None
    except (ImportError, ValueError):
        return False


def operator_lineage(inputs: list[LineageDataset], outputs: list[LineageDataset]) -> Any:
    """The OpenLineage provider's ``OperatorLineage`` for these datasets, or ``None`` without the provider.

    :param inputs: datasets read.
    :param outputs: datasets written.
    """
    try:
        import attr
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
        from openlineage.client.facet_v2 import DatasetFacet
    except ImportError:
        return None

    @attr.define
    class DCacheFacet(DatasetFacet):  # type: ignore[misc]
        """A plain mapping as a custom facet (checksums, activation record)."""

        values: dict[str, Any] = attr.field(factory=dict)

    def convert(ds: LineageDataset) -> Any:
        facets = {key: DCacheFacet(values=dict(value)) for key, value in ds.facets.items()}
        return Dataset(namespace=ds.namespace, name=ds.name, facets=facets)

    return OperatorLineage(inputs=[convert(d) for d in inputs], outputs=[convert(d) for d in outputs])


def pull_result(task_instance: Any, key: str = "return_value") -> Any:
    """The task's own XCom (its result, or another key) for the lineage methods; ``None`` if unavailable.

    :param task_instance: the finished task instance handed to ``get_openlineage_facets_on_complete``.
    :param key: XCom key.
    """
    try:
        return task_instance.xcom_pull(task_ids=task_instance.task_id, key=key)  # its own map index
    except Exception:  # lineage must never fail a task that succeeded
        return None
