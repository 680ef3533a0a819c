"""credentials="token": a function gets per-file WLCG tokens from RFC 8693 token exchange, not macaroons.

The service trusts a served :class:`TokenIssuer` whose token endpoint only down-scopes. The pipeline's
connection carries a token for its working tree; each input reaches the function with a token for
that file alone, and the private output area with a ``storage.create`` token for that directory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from airflow.exceptions import AirflowException

from airflow_dcache.functions.token_exchange import TokenExchangeError, scope_label
from airflow_dcache.operators.function import DCacheFunctionOperator
from airflow_dcache.testing.token_issuer import TokenIssuer
from tests.conftest import DCacheServer, token_site
from tests.functions.support import *  # noqa: F403 - fixtures (make_context)
from tests.functions.support import FIXTURE_FUNCTIONS

PREFIX = "/tok"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path_factory.mktemp("issuer"), serve=True) as it:
        yield it


@pytest.fixture(scope="module")
def server(issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    with token_site(tmp_path_factory.mktemp("fntok"), issuer, PREFIX,
                    authz_id={"username": "pipeline", "uid": 2100, "gids": [2100]}) as srv:
        yield srv


@pytest.fixture
def tree(server: DCacheServer) -> str:
    """``/tok/fn-<id>/in/{allowed,private}.txt`` (namespace path of the tree), created by admin."""
    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    root = f"{PREFIX}/fn-{uuid.uuid4().hex[:10]}"
    for d in (root, f"{root}/in"):
        assert admin.request("MKCOL", server.webdav + d).status_code == 201
    for name in ("allowed", "private"):
        admin.put(f"{server.webdav}{root}/in/{name}.txt", data=name.encode()).raise_for_status()
    return root


@pytest.fixture
def pipeline_conn(monkeypatch: pytest.MonkeyPatch, server: DCacheServer, issuer: TokenIssuer,
                  tree: str) -> Callable[..., str]:
    def make(scope: str | None = None, **extra: Any) -> str:
        rel = tree[len(PREFIX):]
        token = issuer.mint(scope=scope or f"storage.read:{rel} storage.modify:{rel}")
        conn_id = f"fntok_{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
            "conn_type": "dcache", "host": server.webdav,
            "extra": {"frontend_url": server.frontend, "auth_type": "bearer", "token": token,
                      "function_credentials": "token", "token_prefix": PREFIX, **extra}}))
        return conn_id

    return make


def operator(conn_id: str, tree: str, **kwargs: Any) -> DCacheFunctionOperator:
    return DCacheFunctionOperator(task_id="t_tok", function="misbehave", functions_dir=str(FIXTURE_FUNCTIONS),
                                  inputs=[f"{tree}/in/allowed.txt"], output_dir=f"{tree}/out", dcache_conn_id=conn_id,
                                  timeout=120, **kwargs)


def test_the_function_gets_a_token_for_its_file_that_cannot_read_another(
        pipeline_conn: Callable[..., str], tree: str, issuer: TokenIssuer, make_context: Any) -> None:
    before = len(issuer.exchanges)
    op = operator(pipeline_conn(), tree, parameters={"mode": "read-outside", "other_path": f"{tree}/in/private.txt"})
    value = op.execute(make_context())
    assert value["refused"] is True and value["status"] == 403
    rel = tree[len(PREFIX):]
    scopes = [e["scope"] for e in issuer.exchanges[before:]]
    assert scopes[0] == f"storage.read:{rel}/in/allowed.txt"
    assert scopes[1].startswith(f"storage.create:{rel}/out/.tmp-") and len(scopes) == 2


def test_a_token_function_reads_its_input_and_uploads_its_outputs(
        pipeline_conn: Callable[..., str], tree: str, server: DCacheServer, make_context: Any) -> None:
    op = operator(pipeline_conn(), tree, parameters={"mode": "ok"})
    ctx = make_context()
    value = op.execute(ctx)
    assert [o["name"] for o in value["outputs"]] == ["copy/allowed.txt"]
    admin: requests.Session = server.info["admin"]  # type: ignore[assignment]
    assert admin.get(f"{server.webdav}{tree}/out/copy/allowed.txt").content == b"allowed"
    assert ctx["ti"].xcom["activation_record"]["status"] == "success"


def test_exchanged_tokens_stay_out_of_the_result_and_xcom(pipeline_conn: Callable[..., str], tree: str,
                                                         make_context: Any) -> None:
    op = operator(pipeline_conn(), tree, parameters={"mode": "leak"})
    ctx = make_context()
    value = op.execute(ctx)
    everything = json.dumps([value, ctx["ti"].xcom], default=str)
    assert "eyJ" not in everything  # no JWT (header base64 of '{"') anywhere


def test_the_issuer_refuses_a_scope_wider_than_the_pipeline_token(
        pipeline_conn: Callable[..., str], tree: str, make_context: Any) -> None:
    rel = tree[len(PREFIX):]
    conn_id = pipeline_conn(scope=f"storage.read:{rel}/in/private.txt storage.modify:{rel}")
    with pytest.raises(AirflowException, match="invalid_scope") as info:
        operator(conn_id, tree, parameters={"mode": "ok"}).execute(make_context())
    assert "eyJ" not in str(info.value)


def test_token_credentials_need_a_bearer_connection(monkeypatch: pytest.MonkeyPatch, server: DCacheServer,
                                                    tree: str, make_context: Any) -> None:
    conn_id = f"fnbasic_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "dcache", "host": server.webdav, "login": "admin", "password": server.passwords["admin"],
        "extra": {"frontend_url": server.frontend}}))
    with pytest.raises(AirflowException, match="auth_type bearer or token_file"):
        operator(conn_id, tree, credentials="token").execute(make_context())


def test_credentials_must_be_macaroon_or_token() -> None:
    with pytest.raises(ValueError, match="credentials"):
        DCacheFunctionOperator(task_id="x", function="misbehave", inputs="/a", output_dir="/b", credentials="jwt")


@pytest.mark.parametrize("activities, label", [
    (["DOWNLOAD"], "storage.read"), (["LIST"], "storage.read"), (["UPLOAD"], "storage.create"),
    (["STAGE", "DOWNLOAD"], "storage.stage"), (["DELETE"], "storage.modify"),
])
def test_activities_map_to_the_narrowest_scope(activities: list[str], label: str) -> None:
    assert scope_label(activities) == label


def test_activities_no_single_scope_covers_are_refused() -> None:
    with pytest.raises(TokenExchangeError):
        scope_label(["UPLOAD", "DOWNLOAD"])
