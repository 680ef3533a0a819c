"""``GET /api/v1/swagger.json``: served without a login, valid Swagger 2.0, and true to the routes.

Every described operation is routed (an anonymous call reaches its handler, which answers 401 where
the description requires a login), and every route of the frontend under ``/api/v1`` is described.
"""

from __future__ import annotations

import re

import pytest
import requests

from airflow_dcache.server.http import swagger

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
# Routes registered once but described as dCache describes them (aiohttp template -> Swagger templates).
ROUTE_ALIASES = {
    "/namespace{tail}": ["/namespace/{path}"],
    "/qos-management/namespace{tail}": ["/qos-management/namespace/{path}"],
    "/qos-management/qos/{kind}/{qos}": ["/qos-management/qos/file/{qos}", "/qos-management/qos/directory/{qos}"],
}
NOT_DESCRIBED = {"/swagger.json"}  # dCache's ApiListingResource is hidden from its own listing too


def _operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
            if method in METHODS]


def _shape(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", template)


@pytest.fixture(scope="module")
def served(dcache_server) -> dict:
    r = requests.get(f"{dcache_server.api}/swagger.json", timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def test_served_without_login_and_credentials_are_still_checked(dcache_server, served):
    assert served == swagger.document()
    r = requests.get(f"{dcache_server.api}/swagger.json", auth=dcache_server.auth("alice"), timeout=30)
    assert r.status_code == 200 and r.json() == served
    r = requests.get(f"{dcache_server.api}/swagger.json", auth=("alice", "not-her-password"), timeout=30)
    assert r.status_code == 401 and r.json()["status"] == "401"


def test_is_valid_swagger_2(served):
    schemathesis = pytest.importorskip("schemathesis")
    jsonschema = pytest.importorskip("jsonschema")
    from schemathesis.specs.openapi.definitions import SWAGGER_20

    errors = [f"{list(e.path)}: {e.message[:200]}" for e in jsonschema.Draft4Validator(SWAGGER_20).iter_errors(served)]
    assert not errors, errors
    schema = schemathesis.openapi.from_dict(served)
    schema.validate()
    assert sum(1 for result in schema.get_all_operations() if result.ok()) == len(_operations(served))


def test_structure(served):
    """What the meta-schema cannot see: path parameters, references, unique ids, the base path."""
    assert served["swagger"] == "2.0" and served["basePath"] == "/api/v1" and "host" not in served
    ids = [op["operationId"] for _, _, op in _operations(served)]
    assert len(ids) == len(set(ids))
    for path, method, op in _operations(served):
        declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
        assert op["responses"] and all(code.isdigit() for code in op["responses"]), (method, path)
        assert sum(p["in"] == "body" for p in op["parameters"]) <= 1
        if any(p["in"] == "body" for p in op["parameters"]):
            assert op.get("consumes") == ["application/json"], (method, path)
    text = str(served)
    for ref in re.findall(r"#/definitions/([A-Za-z]+)", text):
        assert ref in served["definitions"], ref


def _url(api: str, path: str) -> str:
    return api + re.sub(r"\{[^}]+\}", "x", path)


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, m, _ in _operations(swagger.document())])
def test_every_described_operation_is_routed(dcache_server, path, method):
    """Anonymous, so nothing changes: the router's 404/405 would come before any handler's answer."""
    op = swagger.document()["paths"][path][method]
    kwargs = {}
    if op.get("consumes"):
        kwargs = {"data": b"{}", "headers": {"Content-Type": "application/json"}}
    r = requests.request(method.upper(), _url(dcache_server.api, path), timeout=30, allow_redirects=False,
                         **kwargs)
    assert r.status_code != 405, (method, path)
    assert str(r.status_code) in op["responses"], (method, path, r.status_code, r.text[:200])
    if {} not in op["security"]:
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        assert r.json()["status"] == "401" and r.headers["WWW-Authenticate"] == 'Basic realm="dCache"'


def test_every_route_is_described(tmp_path, served):
    """The frontend app's own routes under /api/v1 (built in-process, not served) against the paths."""
    from airflow_dcache.server.app import build_apps, build_services
    from airflow_dcache.server.config import ServerConfig

    config = ServerConfig(data_dir=tmp_path / "data")
    services = build_services(config)
    try:
        _, frontend = build_apps(config, services, {})
        routes = set()
        for route in frontend.router.routes():
            canonical = route.resource.canonical if route.resource is not None else ""
            if not canonical.startswith("/api/v1/") or route.method == "HEAD":
                continue
            template = canonical[len("/api/v1"):]
            if template in NOT_DESCRIBED:
                continue
            method = "get" if route.method == "*" else route.method.lower()  # the deprecated catch-all
            for described in ROUTE_ALIASES.get(template, [template]):
                routes.add((method, _shape(described)))
    finally:
        services.close()
    described = {(method, _shape(path)) for path, method, _ in _operations(served)}
    assert routes == described, {"routed, not described": routes - described,
                                 "described, not routed": described - routes}
