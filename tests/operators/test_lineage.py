"""OpenLineage mapping of the replicate and function operators (the provider is not installed here, so the
pure mapping is tested, and the operator methods with the provider's presence and converter stubbed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_dcache.operators import DCacheFunctionOperator, DCacheReplicateOperator, _lineage
from airflow_dcache.operators._lineage import ACTIVATION_FACET, CHECKSUM_FACET, LineageDataset

REPLICATED = {
    "source_conn_id": "a", "destination_conn_id": "b", "mode": "pull", "destinations": ["/work/x.h5", "/work/y.h5"],
    "files": [
        {"source": "/data/in/x.h5", "destination": "/work/x.h5", "size": 3, "adler32": "024d0127", "markers": 1},
        {"source": "/data/in/y.h5", "destination": "/work/y.h5", "size": 3, "adler32": None, "markers": 0},
    ],
}
FUNCTION_RESULT = {
    "outputs": [{"path": "/data/out/x.png", "name": "x.png", "size": 10, "checksums": {"adler32": "0a0b0c0d"}}],
    "activation_record": "/data/out/.activation-run1.json", "function_digest": "sha256:abc",
}
RECORD = {"inputs": [{"path": "/data/in/x.h5", "pnfsid": "0000AB", "size": 3, "checksums": {"adler32": "024d0127"}},
                     {"path": "/data/in/x.h5", "checksums": {}}]}


def test_replicate_maps_sources_and_copies_to_site_namespaces() -> None:
    inputs, outputs = _lineage.replicate_datasets(REPLICATED, "main", "buffer")
    assert inputs == [
        LineageDataset("dcache://main", "/data/in/x.h5", {CHECKSUM_FACET: {"adler32": "024d0127"}}),
        LineageDataset("dcache://main", "/data/in/y.h5", {}),
    ]
    assert [(d.namespace, d.name) for d in outputs] == [("dcache://buffer", "/work/x.h5"),
                                                         ("dcache://buffer", "/work/y.h5")]
    assert outputs[0].facets == {CHECKSUM_FACET: {"adler32": "024d0127"}}


def test_function_maps_record_inputs_and_outputs_with_activation() -> None:
    inputs, outputs = _lineage.function_datasets(FUNCTION_RESULT, RECORD, "main")
    assert inputs == [LineageDataset("dcache://main", "/data/in/x.h5", {CHECKSUM_FACET: {"adler32": "024d0127"}})]
    assert outputs == [LineageDataset("dcache://main", "/data/out/x.png", {
        ACTIVATION_FACET: {"record": "/data/out/.activation-run1.json", "function_digest": "sha256:abc"},
        CHECKSUM_FACET: {"adler32": "0a0b0c0d"}})]


@pytest.mark.parametrize("junk", [None, "text", [], {"files": "x"}, {"files": [None, {"source": "relative"}]}])
def test_odd_results_give_no_datasets_rather_than_errors(junk: Any) -> None:
    assert _lineage.replicate_datasets(junk, "main", "buffer") == ([], [])
    assert _lineage.function_datasets(junk, junk, "main") == ([], [])


def test_without_the_provider_there_is_no_lineage() -> None:
    assert not _lineage.available()  # apache-airflow-providers-openlineage is not installed here
    assert _lineage.operator_lineage([LineageDataset("dcache://main", "/x")], []) is None


class _TI:
    task_id = "t"

    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        assert task_ids == "t"
        return self.xcoms.get(key)


@pytest.fixture
def sites(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id, site in (("LIN_MAIN", "main"), ("LIN_BUFFER", "buffer")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps(
            {"conn_type": "dcache", "host": "http://127.0.0.1:1", "extra": {"site": site}}))
    monkeypatch.setattr(_lineage, "available", lambda: True)
    monkeypatch.setattr(_lineage, "operator_lineage", lambda inputs, outputs: (inputs, outputs))


def test_operator_methods_use_their_connections_sites(sites: None) -> None:
    replicate = DCacheReplicateOperator(task_id="t", source_conn_id="lin_main", destination_conn_id="lin_buffer",
                                        source_path="/data/in/x.h5", destination_dir="/work")
    inputs, outputs = replicate.get_openlineage_facets_on_complete(_TI({"return_value": REPLICATED}))
    assert inputs[0].namespace == "dcache://main" and outputs[0].namespace == "dcache://buffer"
    function = DCacheFunctionOperator(task_id="t", dcache_conn_id="lin_main", function="hdf5-preview",
                                      inputs="/data/in/x.h5", output_dir="/data/out")
    inputs, outputs = function.get_openlineage_facets_on_complete(
        _TI({"return_value": FUNCTION_RESULT, "activation_record": RECORD}))
    assert [d.name for d in inputs] == ["/data/in/x.h5"] and [d.name for d in outputs] == ["/data/out/x.png"]


def test_operator_methods_return_none_without_the_provider() -> None:
    replicate = DCacheReplicateOperator(task_id="t", source_conn_id="x", destination_conn_id="y",
                                        source_path="/a", destination_dir="/b")
    assert replicate.get_openlineage_facets_on_complete(_TI({})) is None
