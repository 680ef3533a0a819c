"""URL building, credentials, redirect policy and error mapping: the pure half of both hooks."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import pytest

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks._protocol import ResponseInfo, auth_headers, error_for, error_message, next_hop
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings
from airflow_dcache.hooks.token_file import TokenFileReader
from airflow_dcache.hooks.urls import api_url, door_url, mask_url, namespace_url, normalize_path, same_origin


def settings(**kw: object) -> ConnectionSettings:
    base: dict[str, object] = {
        "door_url": "https://door.example.org:2880",
        "frontend_url": "https://door.example.org:3880",
        "auth_type": AuthType.NONE,
    }
    base.update(kw)
    return ConnectionSettings(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/", "/"), ("data", "/data"), ("/data//x/", "/data/x"), ("/./a/./b", "/a/b")],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize("path", ["", "  ", "/a/../b"])
def test_normalize_path_rejects(path: str) -> None:
    with pytest.raises(ValueError):
        normalize_path(path)


def test_door_url_quotes_everything_but_slashes() -> None:
    url = door_url(settings(), "/data/a b/100%/ä?#&")
    assert url == "https://door.example.org:2880/data/a%20b/100%25/%C3%A4%3F%23&"


def test_door_url_keeps_prefix_and_adds_query() -> None:
    s = settings(door_url="https://proxy.example.org/webdav")
    assert door_url(s, "/f", {"xattr.origin": "air flow", "none": None}) == (
        "https://proxy.example.org/webdav/f?xattr.origin=air+flow"
    )


def test_namespace_and_api_urls() -> None:
    s = settings()
    assert namespace_url(s, "/") == "https://door.example.org:3880/api/v1/namespace"
    assert namespace_url(s, "/data/x y", {"children": True, "qos": False}) == (
        "https://door.example.org:3880/api/v1/namespace/data/x%20y?children=true&qos=false"
    )
    assert api_url(s, "/bulk-requests", {"status": ["queued", "started"]}) == (
        "https://door.example.org:3880/api/v1/bulk-requests?status=queued%2Cstarted"
    )


def test_mask_url_hides_authz_anywhere() -> None:
    url = "https://d/f?x=1&authz=MDAxY2xv.secret&y=2"
    assert mask_url(url) == "https://d/f?x=1&authz=***&y=2"
    text = "failed for https://d/f?AUTHZ=abc (Caused by x) and https://d/g?authz=def"
    assert "abc" not in mask_url(text) and "def" not in mask_url(text)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://d/x", "https://d:443/y", True),
        ("https://d:2880/x", "https://d:2880/y?q", True),
        ("https://d:2880/x", "https://pool:20000/y", False),
        ("https://d:2880/x", "http://d:2880/x", False),
        ("https://d:2880/x", "https://d:2881/x", False),
    ],
)
def test_same_origin(a: str, b: str, same: bool) -> None:
    assert same_origin(a, b) is same


# -------------------------------------------------------------------------------- credentials


def test_basic_auth_header() -> None:
    header = auth_headers(settings(auth_type=AuthType.BASIC, login="alice", password="pä:ss"))["Authorization"]
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]).decode() == "alice:pä:ss"


@pytest.mark.parametrize("kind", [AuthType.BEARER, AuthType.MACAROON])
def test_bearer_header(kind: AuthType) -> None:
    assert auth_headers(settings(auth_type=kind, token="tok")) == {"Authorization": "Bearer tok"}


@pytest.mark.parametrize("kind", [AuthType.X509, AuthType.NONE])
def test_no_header_for_tls_or_anonymous(kind: AuthType) -> None:
    assert auth_headers(settings(auth_type=kind)) == {}


def test_roles_header_goes_only_with_an_elevated_gplazma_login_never_a_macaroon() -> None:
    roles = ("admin", "observer")
    basic = settings(auth_type=AuthType.BASIC, login="a", password="p", roles=roles)
    assert "Roles" not in auth_headers(basic)  # plain by default (issue 17)
    assert auth_headers(basic, elevated=True)["Roles"] == "admin,observer"
    assert auth_headers(settings(auth_type=AuthType.BEARER, token="oidc", roles=roles), elevated=True)["Roles"] \
        == "admin,observer"
    assert auth_headers(settings(auth_type=AuthType.X509, roles=roles), elevated=True) == {"Roles": "admin,observer"}
    always = settings(auth_type=AuthType.X509, roles=roles, roles_always=True)
    assert auth_headers(always) == {"Roles": "admin,observer"}
    assert "Roles" not in auth_headers(settings(auth_type=AuthType.MACAROON, token="m", roles=roles), elevated=True)


def test_token_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    reader = TokenFileReader(str(token_file))
    assert reader.read() == ("first-token", True)
    assert reader.read() == ("first-token", False)
    token_file.write_text("second-token-longer\n")
    os.utime(token_file, (1, 1))
    assert reader.read() == ("second-token-longer", True)


def test_token_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(exc.DCacheError, match="cannot read token file"):
        TokenFileReader(str(tmp_path / "missing")).read()
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(exc.DCacheError, match="empty"):
        TokenFileReader(str(tmp_path / "empty")).read()


# ---------------------------------------------------------------------------------- redirects


def test_get_redirect_to_pool_drops_credentials() -> None:
    hop = next_hop("GET", "https://door:2880/f", 302, "https://pool:20000/f?dcache-http-uuid=1")
    assert (hop.method, hop.keep_credentials, hop.url) == ("GET", False, "https://pool:20000/f?dcache-http-uuid=1")


def test_directory_redirect_keeps_credentials() -> None:
    hop = next_hop("GET", "https://door:2880/dir?authz=x", 301, "/dir/?authz=x")
    assert hop.keep_credentials and hop.url == "https://door:2880/dir/?authz=x"


def test_put_307_keeps_method_and_body() -> None:
    hop = next_hop("PUT", "https://door:2880/f", 307, "https://pool:1/f")
    assert (hop.method, hop.keep_body, hop.keep_credentials) == ("PUT", True, False)


def test_post_303_becomes_get() -> None:
    hop = next_hop("POST", "https://d/x", 303, "https://d/y")
    assert (hop.method, hop.keep_body) == ("GET", False)


@pytest.mark.parametrize("location", [None, "", "ftp://pool/f"])
def test_bad_redirects(location: str | None) -> None:
    with pytest.raises(exc.UnexpectedResponse):
        next_hop("GET", "https://d/x", 302, location)


# ------------------------------------------------------------------------------------- errors


def info(status: int, reason: str = "", body: object = b"", headers: dict[str, str] | None = None) -> ResponseInfo:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ResponseInfo(status, reason, headers or {}, raw)


def test_frontend_rfc7807_body() -> None:
    body = {"status": "404", "title": "Not Found", "detail": "File not found: /data/x"}
    assert error_message(info(404, "Not Found", body)) == "Not Found: File not found: /data/x"


def test_frontend_detail_only_and_redundant_title() -> None:
    assert error_message(info(400, "", {"detail": "bad"})) == "bad"
    assert error_message(info(409, "", {"title": "Conflict", "detail": "Conflict"})) == "Conflict"


def test_frontend_legacy_errors_body() -> None:
    body = {"errors": [{"message": "Not Found", "status": "404"}, {"message": "really", "status": "404"}]}
    assert error_message(info(404, "Not Found", body)) == "Not Found; really"


def test_tape_cancel_title_detail_headers() -> None:
    headers = {"Title": "File missing from stage request", "detail": "/data/x"}
    assert error_message(info(400, "Bad Request", b"", headers)) == "File missing from stage request: /data/x"


def test_webdav_reason_phrase() -> None:
    reason = "macaroon login denied: Invalid macaroon [abc]: expired"
    assert error_message(info(401, reason, b"<html><body>ignored</body></html>")) == reason


def test_html_body_when_reason_is_empty() -> None:
    body = b"<html><head><title>Server is busy (internal timeout)</title></head></html>"
    assert error_message(info(503, "", body)) == "Server is busy (internal timeout)"


def test_empty_everything() -> None:
    assert error_message(info(500)) == "HTTP 500"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, exc.BadRequest),
        (401, exc.AuthenticationFailed),
        (403, exc.PermissionDenied),
        (404, exc.NotFound),
        (405, exc.MethodNotAllowed),
        (409, exc.Conflict),
        (412, exc.PreconditionFailed),
        (413, exc.PayloadTooLarge),
        (429, exc.LimitExceeded),
        (507, exc.QuotaExceeded),
        (500, exc.ServerError),
        (503, exc.ServerError),
        (418, exc.DCacheError),
    ],
)
def test_status_classes(status: int, cls: type[exc.DCacheError]) -> None:
    error = error_for(info(status, "why"), "GET", "https://d/f?authz=SECRET")
    assert type(error) is cls
    assert isinstance(error, exc.DCacheError)
    assert error.status == status and error.message == "why"
    assert "SECRET" not in str(error) and "SECRET" not in (error.url or "")


def test_known_exists_statuses_become_already_exists() -> None:
    assert isinstance(error_for(info(405, "exists"), "MKCOL", "https://d/x", exists=True), exc.AlreadyExists)
    error = error_for(info(412, "Destination exists"), "MOVE", "https://d/x", exists=True)
    assert isinstance(error, exc.AlreadyExists) and error.status == 412


def test_errors_are_airflow_exceptions_and_pickle() -> None:
    from airflow.sdk.exceptions import AirflowException

    error = exc.NotFound("gone", status=404, method="GET", url="https://d/x")
    assert isinstance(error, AirflowException)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is exc.NotFound and str(clone) == str(error) == "GET https://d/x: 404 gone"


def test_long_credentials_register_their_signature_tail_with_the_masker() -> None:
    """Registering whole macaroons made minting quadratic (the masker recompiles one regex per secret)."""
    from airflow.sdk.log import _secrets_masker, mask_secret

    from airflow_dcache.utils.masking import MASKED_TAIL, masked_part

    assert masked_part("s3cret-password") == "s3cret-password"  # short: whole
    macaroon = "MDAx" + "bG9jYXRpb24gT3B0aW9uYWwuZW1wdHkK" * 12 + "c2lnbmF0dXJlIK7dX0gGv2Qh3yB1jPqT8mN4rW6sZ0aL"
    part = masked_part(macaroon)
    assert part == macaroon[-MASKED_TAIL:] and len(part) == MASKED_TAIL
    mask_secret(part)
    logged = str(_secrets_masker().redact(f"GET https://door/f?authz={macaroon}"))
    assert macaroon not in logged and part not in logged  # the signature never reaches a log
