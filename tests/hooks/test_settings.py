"""Connection parsing: UI form values, ``AIRFLOW_CONN_*`` URIs and JSON must all mean the same thing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import BaseHook, Connection

from airflow_dcache.hooks._settings import (
    AuthType,
    InvalidConnection,
    door_url_from,
    frontend_url_from,
    settings_from_connection,
)


def conn(**fields: Any) -> Any:
    base: dict[str, Any] = {"host": None, "port": None, "schema": None, "login": None, "password": None}
    base.update(fields)
    extra = base.pop("extra", {})
    return SimpleNamespace(**base, extra_dejson=extra)


@pytest.mark.parametrize(
    ("host", "port", "schema", "protocol", "expected"),
    [
        ("door.example.org", None, None, None, "https://door.example.org:2880"),
        ("door.example.org", 443, None, None, "https://door.example.org"),
        ("door.example.org", 2881, None, "http", "http://door.example.org:2881"),
        ("door.example.org:8443", None, None, None, "https://door.example.org:8443"),
        ("https://door.example.org", None, None, None, "https://door.example.org"),
        ("https://door.example.org", 2880, None, None, "https://door.example.org:2880"),
        ("http://127.0.0.1:4567", None, None, "https", "http://127.0.0.1:4567"),
        ("https://door.example.org:2880/", None, None, None, "https://door.example.org:2880"),
        ("https://proxy.example.org/webdav/", None, None, None, "https://proxy.example.org/webdav"),
        ("door.example.org", None, "webdav", None, "https://door.example.org:2880/webdav"),
        ("HTTPS://Door.Example.org:2880", None, None, None, "https://door.example.org:2880"),
        ("::1", 2880, None, "http", "http://[::1]:2880"),
    ],
)
def test_door_url(host: str, port: int | None, schema: str | None, protocol: str | None, expected: str) -> None:
    assert door_url_from(host, port, schema, protocol) == expected


@pytest.mark.parametrize(
    ("host", "protocol"),
    [(None, None), ("", None), ("ftp://door", None), ("door", "gopher"), ("door/path", None), ("https://u:p@h", None),
     ("door:²", None)],
)
def test_door_url_rejects(host: str | None, protocol: str | None) -> None:
    with pytest.raises(InvalidConnection):
        door_url_from(host, None, None, protocol)


@pytest.mark.parametrize(
    ("value", "door", "expected"),
    [
        (None, "https://door.example.org:2880", "https://door.example.org:3880"),
        (None, "http://127.0.0.1:5000", "http://127.0.0.1:3880"),
        ("https://fe.example.org:3880", "https://d", "https://fe.example.org:3880"),
        ("https://fe.example.org:3880/api/v1", "https://d", "https://fe.example.org:3880"),
        ("https://fe.example.org:3880/api/v1/", "https://d", "https://fe.example.org:3880"),
        ("https://proxy.example.org/dcache", "https://d", "https://proxy.example.org/dcache"),
    ],
)
def test_frontend_url(value: str | None, door: str, expected: str) -> None:
    assert frontend_url_from(value, door) == expected


def test_frontend_url_must_be_absolute() -> None:
    with pytest.raises(InvalidConnection):
        frontend_url_from("fe.example.org:3880", "https://d")


def test_api_url_appends_context_path() -> None:
    s = settings_from_connection(conn(host="https://d:2880", extra={"frontend_url": "https://f:3880/api/v1"}))
    assert s.api_url == "https://f:3880/api/v1"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"login": "alice", "password": "pw"}, AuthType.BASIC),
        ({"extra": {"token": "eyJ"}}, AuthType.BEARER),
        ({"login": "alice", "extra": {"token": "eyJ"}}, AuthType.BEARER),
        ({"extra": {"token_file": "/tmp/t"}}, AuthType.TOKEN_FILE),
        ({"extra": {"client_cert": "/tmp/proxy.pem"}}, AuthType.X509),
        ({}, AuthType.NONE),
        ({"login": "alice", "extra": {"auth_type": "NONE"}}, AuthType.NONE),
    ],
)
def test_auth_type_inferred(fields: dict[str, Any], expected: AuthType) -> None:
    assert settings_from_connection(conn(host="d", **fields)).auth_type is expected


def test_macaroon_may_live_in_password_field() -> None:
    s = settings_from_connection(conn(host="d", password="MDAxY2xv", extra={"auth_type": "macaroon"}))
    assert s.auth_type is AuthType.MACAROON
    assert s.token == "MDAxY2xv"


@pytest.mark.parametrize(
    "fields",
    [
        {"extra": {"auth_type": "kerberos"}},
        {"extra": {"auth_type": "bearer"}},
        {"extra": {"auth_type": "basic"}},
        {"extra": {"auth_type": "token_file"}},
        {"extra": {"auth_type": "x509"}},
        {"extra": {"verify": "maybe"}},
        {"extra": {"timeout": "soon"}},
        {"extra": {"timeout": "-1"}},
        {"extra": {"retries": "-1"}},
        {"extra": {"allowed_roots": "data/incoming"}},
        {"extra": {"allowed_roots": "/data/../home"}},
        {"extra": {"allowed_roots": 7}},
        {"extra": {"assert_roles": "sometimes"}},
    ],
)
def test_invalid_connections_fail_early(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidConnection):
        settings_from_connection(conn(host="d", **fields))


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("True", True), (False, False)])
def test_verify_strings_from_uris(raw: Any, expected: bool) -> None:
    assert settings_from_connection(conn(host="d", extra={"verify": raw})).verify is expected


def test_secrets_not_in_repr() -> None:
    s = settings_from_connection(conn(host="d", login="alice", password="hunter2-secret", extra={"token": "tok-1234"}))
    assert "hunter2-secret" not in repr(s)
    assert "tok-1234" not in repr(s)
    assert {"hunter2-secret", "tok-1234"} <= set(s.secrets)


def test_basic_header_value_is_a_secret_too() -> None:
    import base64

    s = settings_from_connection(conn(host="d", login="alice", password="hunter2-secret"))
    assert base64.b64encode(b"alice:hunter2-secret").decode() in s.secrets


def test_legacy_extra_prefix() -> None:
    s = settings_from_connection(conn(host="d", extra={"extra__dcache__frontend_url": "https://f:1"}))
    assert s.frontend_url == "https://f:1"


# ---- through Airflow's own connection parsing ---------------------------------------------------


def test_from_airflow_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = (
        "dcache://alice:p%40ss%2Fword@door.example.org:2880"
        "?frontend_url=https%3A%2F%2Ffe.example.org%3A3880%2Fapi%2Fv1&verify=false&timeout=30"
    )
    monkeypatch.setenv("AIRFLOW_CONN_DC_URI", uri)
    s = settings_from_connection(BaseHook.get_connection("dc_uri"))
    assert s.door_url == "https://door.example.org:2880"
    assert s.frontend_url == "https://fe.example.org:3880"
    assert (s.login, s.password, s.verify, s.timeout) == ("alice", "p@ss/word", False, 30.0)


def test_from_airflow_uri_with_protocol_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DC_HTTP", "dcache://alice:pw@127.0.0.1:8080?protocol=http")
    s = settings_from_connection(BaseHook.get_connection("dc_http"))
    assert s.door_url == "http://127.0.0.1:8080"
    assert s.frontend_url == "http://127.0.0.1:3880"


def test_from_airflow_uri_with_scheme_in_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow's own encoding of a host that carries a protocol: conn-type://protocol://host
    monkeypatch.setenv("AIRFLOW_CONN_DC_PROTO", "dcache://http://alice:pw@door.example.org:2880")
    s = settings_from_connection(BaseHook.get_connection("dc_proto"))
    assert s.door_url == "http://door.example.org:2880"


def test_connection_round_trips_through_get_uri() -> None:
    original = Connection(
        conn_id="x",
        conn_type="dcache",
        host="https://door.example.org",
        port=2880,
        login="alice",
        password="pw/with:chars",
        extra='{"frontend_url": "https://fe.example.org:3880", "verify": false}',
    )
    parsed = Connection.from_uri(original.get_uri(), conn_id="x")
    assert settings_from_connection(parsed) == settings_from_connection(original)


def test_from_airflow_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DC_JSON",
        '{"conn_type": "dcache", "host": "https://door.example.org:2880", '
        '"extra": {"auth_type": "bearer", "token": "abc.def.ghi", "verify": true, "timeout": 5}}',
    )
    s = settings_from_connection(BaseHook.get_connection("dc_json"))
    assert (s.auth_type, s.token, s.timeout) == (AuthType.BEARER, "abc.def.ghi", 5.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ()), ("", ()), ("admin", ("admin",)), ("admin, observer", ("admin", "observer")),
     (["admin", "admin"], ("admin",))],
)
def test_roles_extra(value: Any, expected: tuple[str, ...]) -> None:
    settings = settings_from_connection(conn(host="https://d", login="u", password="p", extra={"roles": value}))
    assert settings.roles == expected


@pytest.mark.parametrize("value", [["admin", 3], {"admin": True}, "admin,,x", "ad min", 7, "管理", "²", "a\r\nX: y"])
def test_roles_extra_rejects(value: Any) -> None:
    with pytest.raises(InvalidConnection, match="roles"):
        settings_from_connection(conn(host="https://d", login="u", password="p", extra={"roles": value}))


def test_roles_from_a_uri() -> None:
    uri = "dcache://u:p@door.example.org:2880/?roles=admin"
    settings = settings_from_connection(Connection.from_uri(uri, conn_id="r"))
    assert settings.roles == ("admin",)


def test_site_extra_default_and_validation() -> None:
    from airflow_dcache.hooks._settings import parse_site

    assert settings_from_connection(conn(host="d.example.org", extra={"site": "main"})).site == "main"
    named = SimpleNamespace(conn_id="dcache_Main", host="d.example.org", port=None, schema=None, login=None,
                            password=None, extra_dejson={})
    assert settings_from_connection(named).site == "dcache-main"
    assert settings_from_connection(conn(host="d.example.org")).site == "dcache-default"
    assert parse_site(None, "__x__") == "x"
    for bad in ("Main", "-main", "ma_in", "a" * 64, "main/x"):
        with pytest.raises(InvalidConnection, match="extra 'site'"):
            settings_from_connection(conn(host="d.example.org", extra={"site": bad}))


def test_allowed_roots_and_assert_roles_extras() -> None:
    s = settings_from_connection(conn(host="d", extra={"allowed_roots": "/data/incoming, /data//processed/",
                                                        "assert_roles": "always"}))
    assert s.allowed_roots == ("/data/incoming", "/data/processed") and s.roles_always
    assert settings_from_connection(conn(host="d")).roles_always is False
