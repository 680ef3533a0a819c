"""select-files against the bundled service: same records as airflow_dcache.selection (DCacheListOperator)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from airflow_dcache import selection
from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import *  # noqa: F403 - fixtures


@pytest.fixture(params=["local", "docker"])
def runtime_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "docker":
        return {"runtime": "docker", "docker_url": request.getfixturevalue("docker_url"),
                "image": request.getfixturevalue("function_image")("select-files")}
    return {"runtime": "local"}


def test_select_files_matches_the_selection_module(runtime_kwargs: dict, dc: Any, area: str, alice_conn: str,
                                                   make_context: Any) -> None:
    root = f"{area}/in"
    for name, size in (("a.h5", 10), ("b.h5", 2000), ("c.txt", 10)):
        dc.upload(io.BytesIO(b"x" * size), f"{root}/{name}")
    dc.upload(io.BytesIO(b"y" * 50), f"{root}/sub/d.h5", make_parents=True)
    params = {"name_glob": "*.h5", "max_size": 1000, "recursive": True}
    op = DCacheFunctionOperator(task_id="select", function="select-files", inputs=root, output_dir=f"{area}/out",
                                input_activities=["LIST"], parameters=params, dcache_conn_id=alice_conn,
                                **runtime_kwargs)
    value = op.execute(make_context())
    expected = selection.select(lambda p: dc.list_dir(p, checksum=True, locality=True, labels=True), root,
                                selection.Criteria(name_glob="*.h5", max_size=1000), recursive=True)
    assert [f["path"] for f in value["files"]] == [f"{root}/a.h5", f"{root}/sub/d.h5"]
    assert value["files"] == expected
    assert value["schema"] == selection.SCHEMA
    assert [o["name"] for o in value["outputs"]] == ["file-list.json"]


def test_select_files_refuses_bad_criteria(dc: Any, area: str, alice_conn: str, make_context: Any) -> None:
    from airflow.exceptions import AirflowException

    op = DCacheFunctionOperator(task_id="select", function="select-files", inputs=f"{area}/in",
                                output_dir=f"{area}/out", input_activities=["LIST"],
                                parameters={"locality": "SOMEWHERE"}, dcache_conn_id=alice_conn)
    with pytest.raises(AirflowException, match=r"parameters\.locality"):
        op.execute(make_context())
