"""What a function gets instead of the pipeline's credential: one narrow credential per path.

A macaroon rides in the URL (``?authz=``) and carries the activities, the path, a validity and, where
the function's source address is known, an ``ip:`` caveat. An exchanged WLCG token goes in an
``Authorization`` value (dCache reads ``authz`` only as a macaroon); its lifetime is the issuer's choice
(never longer than the pipeline token's) and it has no ``ip:`` restriction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_dcache.functions.token_exchange import CREDENTIAL_KINDS, TokenExchangeError, TokenExchanger
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.urls import door_url


class CredentialError(Exception):
    """The credential for a function could not be had (bad setting, refused exchange)."""


@dataclass(frozen=True)
class Grant:
    """One path's credential as the function receives it."""

    url: str
    """Where the function reaches the path (a macaroon is in the URL)."""
    authorization: str | None
    """An ``Authorization`` value (exchanged tokens), or ``None``."""
    secret: str
    """The bare secret, so it can be scrubbed from logs and records."""
    target: str
    """The path's URL without any credential in it."""


CredentialSource = Callable[[str, Sequence[str], int, "list[str] | None"], Grant]
"""``(path, activities, validity seconds, ip caveat) -> Grant``."""


def credential_kind(chosen: str | None, extras: Mapping[str, Any]) -> str:
    """The operator's choice, else the connection extra ``function_credentials``, else ``macaroon``."""
    kind = chosen or extras.get("function_credentials") or "macaroon"
    if kind not in CREDENTIAL_KINDS:
        raise CredentialError(f"connection extra function_credentials must be one of "
                              f"{', '.join(CREDENTIAL_KINDS)}, got {kind!r}")
    return str(kind)


def connection_extras(hook: DCacheHook) -> dict[str, Any]:
    """The extras of ``hook``'s connection (one connection lookup: a secrets backend or the API server)."""
    return dict(hook.get_connection(hook.dcache_conn_id).extra_dejson or {})


def credential_source(hook: DCacheHook, kind: str | None, *, token_prefix: str | None = None,
                      extras: Mapping[str, Any] | None = None) -> CredentialSource:
    """The source of per-path credentials for ``hook``'s connection, by the chosen kind.

    :param extras: the connection's extras when already read (:func:`connection_extras`), so a chunk of
        files looks the connection up once, not once per file.
    """
    if extras is None:
        extras = connection_extras(hook)
    if credential_kind(kind, extras) == "macaroon":
        def macaroon(path: str, activities: Sequence[str], validity: int, ip: list[str] | None) -> Grant:
            minted = hook.mint_macaroon(path, activities=activities, validity=validity, ip=ip)
            return Grant(minted.target_with_macaroon, None, minted.macaroon, minted.target)

        return macaroon
    try:
        exchanger = TokenExchanger.from_connection(hook.settings, extras, prefix=token_prefix)
    except TokenExchangeError as exc:
        raise CredentialError(str(exc)) from None

    def token(path: str, activities: Sequence[str], validity: int, ip: list[str] | None) -> Grant:
        try:
            value = exchanger.token_for(path, activities)
        except TokenExchangeError as exc:
            raise CredentialError(str(exc)) from None
        url = door_url(hook.settings, path)
        return Grant(url, f"Bearer {value}", value, url)

    return token


def ip_restriction(ip_caveat: str | Sequence[str] | None, client_ip: Callable[[], str | None],
                   door: str) -> list[str] | None:
    """The ``ip:`` caveat: as given, or ``"auto"`` (the runtime's known address, else loopback for a
    loopback door, the only case where the function's source address is known), or none."""
    if ip_caveat is None:
        return None
    if ip_caveat != "auto":
        return [ip_caveat] if isinstance(ip_caveat, str) else list(ip_caveat)
    known = client_ip()  # the runtime's answer, asked only for "auto"
    if known:
        return [known]
    host = urlsplit(door).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    # Local subprocess and host-networked containers reach a loopback door from loopback.
    return ["127.0.0.0/8", "::1"] if loopback else None
