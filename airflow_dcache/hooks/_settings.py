"""Turn an Airflow ``Connection`` into immutable, validated settings shared by both hooks.

Connections arrive from three places with different quirks: the UI form (typed extras, host may be a full
URL), ``AIRFLOW_CONN_*`` URIs (every extra is a string, the scheme of the door is either lost or encoded
as ``dcache://https://host``) and JSON. Normalising here, once, means the sync and async hooks cannot
disagree about what a connection means.
"""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_dcache.exceptions import InvalidConnection

DEFAULT_DOOR_PORT = 2880
DEFAULT_FRONTEND_PORT = 3880
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
API_SUFFIX = "/api/v1"

__all__ = ["AuthType", "ConnectionSettings", "InvalidConnection", "settings_from_connection"]


class AuthType(enum.StrEnum):
    """How requests authenticate; ``none`` is anonymous access (sites rarely allow more than READONLY)."""

    BASIC = "basic"
    BEARER = "bearer"
    TOKEN_FILE = "token_file"
    MACAROON = "macaroon"
    X509 = "x509"
    NONE = "none"


class ConnectionLike(Protocol):
    """The attributes of ``airflow.sdk.Connection`` we read; lets tests pass plain objects."""

    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to talk to one dCache instance; secrets are excluded from ``repr``."""

    door_url: str
    frontend_url: str
    auth_type: AuthType
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None
    verify: bool = True
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    roles: tuple[str, ...] = ()
    site: str = "dcache-default"
    #: The trees this identity may act on (extra ``allowed_roots``, narrowed by a hook's own); empty: all.
    allowed_roots: tuple[str, ...] = ()
    #: Extra ``assert_roles``: ``when_needed`` (default: only for a refused metadata change) or ``always``.
    roles_always: bool = False

    @property
    def api_url(self) -> str:
        """Base of the REST API (``…/api/v1``); kept separate so ``frontend_url`` stays user-facing."""
        return self.frontend_url + API_SUFFIX

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must be registered with the log masker as soon as the connection is loaded.

        The Basic header value is included: a debug log of request headers would otherwise carry a
        trivially decodable password.
        """
        values = [self.password, self.token]
        if self.auth_type is AuthType.BASIC and self.password:
            raw = f"{self.login or ''}:{self.password}".encode()
            values.append(base64.b64encode(raw).decode("ascii"))
        return tuple(v for v in values if v)


_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n", ""}


def _extra(extras: dict[str, Any], name: str) -> Any:
    """Read an extra, also under the pre-2.x ``extra__dcache__<name>`` spelling still found in old DBs."""
    value = extras.get(name)
    if value is None:
        value = extras.get(f"extra__dcache__{name}")
    if isinstance(value, str) and not value.strip():
        return None
    return value


def parse_bool(value: Any, name: str, default: bool) -> bool:
    """URI extras are strings, so ``verify=false`` must not be truthy."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidConnection(f"extra {name!r} must be a boolean, got {value!r}")


def parse_float(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InvalidConnection(f"extra {name!r} must be a number, got {value!r}") from None
    if result <= 0:
        raise InvalidConnection(f"extra {name!r} must be positive, got {value!r}")
    return result


def parse_int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        result = int(value)
    except (TypeError, ValueError):
        raise InvalidConnection(f"extra {name!r} must be an integer, got {value!r}") from None
    if result < 0:
        raise InvalidConnection(f"extra {name!r} must not be negative, got {value!r}")
    return result


_ROLE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # ASCII only: the names travel in an HTTP header


def parse_assert_roles(value: Any) -> bool:
    """Extra ``assert_roles``: ``when_needed`` (default) or ``always``; True for ``always``."""
    if value is None or value == "":
        return False
    text = str(value).strip().lower()
    if text not in ("when_needed", "always"):
        raise InvalidConnection(f"extra 'assert_roles' must be 'when_needed' or 'always', got {value!r}")
    return text == "always"


def parse_allowed_roots(value: Any) -> tuple[str, ...]:
    """Extra ``allowed_roots``: a list of absolute paths or a comma-separated string; empty means no limit."""
    from airflow_dcache.paths import InvalidPath, clean_roots

    if value is None or value == "":
        return ()
    if not isinstance(value, (str, list, tuple)):
        raise InvalidConnection(f"extra 'allowed_roots' must be a list of absolute paths, got {value!r}")
    try:
        return clean_roots(value, field="allowed_roots")
    except InvalidPath as exc:
        raise InvalidConnection(f"extra {exc}") from None


def parse_roles(value: Any) -> tuple[str, ...]:
    """``["admin"]`` from the form or JSON, ``"admin,observer"`` from a URI; each a plain token."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise InvalidConnection(f"extra 'roles' must be a list of names or a comma-separated string, got {value!r}")
    bad = [v for v in items if not _ROLE_NAME.fullmatch(v)]
    if bad:
        raise InvalidConnection(f"extra 'roles' has an invalid role name: {bad[0]!r}")
    return tuple(dict.fromkeys(items))


_SITE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def parse_site(value: Any, conn_id: str | None) -> str:
    """The site name used in ``dcache://<site>/<path>`` asset URIs (a DNS-label-like token).

    Default: the connection id, lower-cased with ``_`` as ``-`` (``dcache_main`` → ``dcache-main``), so
    assets stay stable when a connection is recreated under the same id.
    """
    if value is None:
        derived = (conn_id or "dcache_default").strip().lower().replace("_", "-")
        derived = re.sub(r"[^a-z0-9-]", "-", derived).strip("-")[:63].strip("-")
        return derived or "dcache-default"
    if not isinstance(value, str) or not _SITE.fullmatch(value.strip()):
        raise InvalidConnection(
            f"extra 'site' must be 1-63 lower-case letters, digits or '-' (not at the ends), got {value!r}"
        )
    return value.strip()


def _origin(scheme: str, host: str, port: int | None, path: str = "") -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 literal
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}{path.rstrip('/')}"


def door_url_from(host: str | None, port: int | None, schema: str | None, protocol: str | None) -> str:
    """Build the door base URL from the connection's host, port, schema and ``protocol`` extra.

    ``host`` may be a bare name (scheme from ``protocol``, default https; port default 2880) or a full
    URL, which keeps its own scheme and port. ``schema``, the URI path, is an optional path prefix for
    doors published behind a reverse proxy.
    """
    if not host or not host.strip():
        raise InvalidConnection("the connection has no host: set it to the WebDAV door URL")
    host = host.strip()
    proto = protocol.strip().lower() if protocol else None
    if proto not in (None, "http", "https"):
        raise InvalidConnection(f"extra 'protocol' must be 'http' or 'https', got {protocol!r}")
    if "://" in host:
        parts = urlsplit(host)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise InvalidConnection(f"host {host!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise InvalidConnection("put credentials in login/password, not in the host URL")
        try:
            url_port = parts.port
        except ValueError:
            raise InvalidConnection(f"host {host!r} has an invalid port") from None
        path = parts.path
        if schema:
            path = path.rstrip("/") + "/" + schema.strip("/")
        return _origin(scheme, parts.hostname, url_port or port, path)
    if "/" in host:
        raise InvalidConnection(f"host {host!r} has a path but no scheme; use a full URL")
    name, _, maybe_port = host.rpartition(":") if host.count(":") == 1 else ("", "", "")
    if name and not (maybe_port.isascii() and maybe_port.isdigit()):
        raise InvalidConnection(f"host {host!r} has an invalid port")
    if name:
        host, port = name, port or int(maybe_port)
    path = "/" + schema.strip("/") if schema and schema.strip("/") else ""
    return _origin(proto or "https", host, port or DEFAULT_DOOR_PORT, path)


def frontend_url_from(value: str | None, door_url: str) -> str:
    """The frontend base without ``/api/v1``; defaults to the door's host on port 3880.

    Users paste either ``https://host:3880`` or ``https://host:3880/api/v1``; both mean the same.
    """
    if value is None:
        parts = urlsplit(door_url)
        return _origin(parts.scheme, parts.hostname or "", DEFAULT_FRONTEND_PORT)
    value = value.strip()
    if "://" not in value:
        raise InvalidConnection(f"frontend_url {value!r} must be a full http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConnection(f"frontend_url {value!r} must be a full http(s) URL")
    path = parts.path.rstrip("/")
    if path.endswith(API_SUFFIX):
        path = path[: -len(API_SUFFIX)]
    return _origin(parts.scheme, parts.hostname, parts.port, path)


def resolve_auth_type(
    value: Any, *, login: str | None, token: str | None, token_file: str | None, client_cert: str | None
) -> AuthType:
    """Explicit ``auth_type`` wins; otherwise guess from which fields are filled, most specific first."""
    if value is not None:
        try:
            return AuthType(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(a.value for a in AuthType)
            raise InvalidConnection(f"auth_type must be one of {allowed}; got {value!r}") from None
    if token:
        return AuthType.BEARER
    if token_file:
        return AuthType.TOKEN_FILE
    if client_cert:
        return AuthType.X509
    if login:
        return AuthType.BASIC
    return AuthType.NONE


def settings_from_connection(conn: ConnectionLike) -> ConnectionSettings:
    """Validate a connection up front so misconfiguration fails with a message, not a 401 later."""
    extras = conn.extra_dejson or {}
    door = door_url_from(conn.host, conn.port, conn.schema, _extra(extras, "protocol") or _extra(extras, "scheme"))
    token = _extra(extras, "token")
    token_file = _extra(extras, "token_file")
    client_cert = _extra(extras, "client_cert")
    auth = resolve_auth_type(
        _extra(extras, "auth_type"),
        login=conn.login,
        token=token,
        token_file=token_file,
        client_cert=client_cert,
    )
    if auth in (AuthType.BEARER, AuthType.MACAROON) and not token:
        # The password field is the UI's only masked input that is always present, so accept it there too.
        token = conn.password or None
        if not token:
            raise InvalidConnection(f"auth_type {auth.value} needs the 'token' extra (or the password field)")
    if auth is AuthType.BASIC and not conn.login:
        raise InvalidConnection("auth_type basic needs a login")
    if auth is AuthType.TOKEN_FILE and not token_file:
        raise InvalidConnection("auth_type token_file needs the 'token_file' extra")
    if auth is AuthType.X509 and not client_cert:
        raise InvalidConnection("auth_type x509 needs the 'client_cert' extra")
    return ConnectionSettings(
        door_url=door,
        frontend_url=frontend_url_from(_extra(extras, "frontend_url"), door),
        auth_type=auth,
        login=conn.login or None,
        password=conn.password or None,
        token=token,
        token_file=token_file,
        client_cert=client_cert,
        client_key=_extra(extras, "client_key"),
        ca_bundle=_extra(extras, "ca_bundle"),
        verify=parse_bool(_extra(extras, "verify"), "verify", True),
        timeout=parse_float(_extra(extras, "timeout"), "timeout", DEFAULT_TIMEOUT),
        retries=parse_int(_extra(extras, "retries"), "retries", DEFAULT_RETRIES),
        roles=parse_roles(_extra(extras, "roles")),
        site=parse_site(_extra(extras, "site"), getattr(conn, "conn_id", None)),
        allowed_roots=parse_allowed_roots(_extra(extras, "allowed_roots")),
        roles_always=parse_assert_roles(_extra(extras, "assert_roles")),
    )
