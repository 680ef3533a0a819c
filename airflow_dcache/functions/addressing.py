"""Site addresses as a function's container sees them: ``$AIRFLOW_DCACHE_FUNCTION_SITE_ADDRESSES``.

The task document a function gets holds pre-authorised URLs of its inputs and its output area, built
from the Airflow connection's host — the address of the site *as the worker sees it*. The ``docker``
runtime starts the function's container with ``--network host`` on the engine the worker talks to. When
the worker itself runs in a container (docker compose, a Celery worker image), that engine's host
network is not the worker's network: a compose service name such as ``dcache-main`` does not resolve
there, and the site is reached through the port the stack publishes on the host instead
(``127.0.0.1:2880``). On Kubernetes the same happens with a pod launched next to the worker.

So a worker can say, per site origin, which origin its function containers must use::

    AIRFLOW_DCACHE_FUNCTION_SITE_ADDRESSES="http://dcache-main:2880=http://127.0.0.1:2880,
                                            http://dcache-main:3880=http://127.0.0.1:3880"

(commas or whitespace between pairs; a JSON object ``{"http://dcache-main:2880": "http://127.0.0.1:2880"}``
is accepted too). :func:`for_container` rewrites every URL in a task document whose origin (scheme,
host, port) is a key to the mapped origin, keeping path and query — the macaroons in the query or the
``Authorization`` value are bound to paths and activities, not to a host name, so they stay valid. A
worker on the same network as its engine (this repository's tests, the native topology of
:mod:`airflow_dcache.testing.topology`) sets nothing and the document is passed unchanged.

With HTTPS, map to a name that the host resolves and the site's certificate names (an ``/etc/hosts``
entry or the site's real FQDN), not to a bare IP: the function verifies the certificate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SITE_ADDRESSES_ENV = "AIRFLOW_DCACHE_FUNCTION_SITE_ADDRESSES"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, lower-cased, the default port filled in.

    :raises ValueError: not an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]


def _origin_only(url: str, what: str) -> tuple[str, str, int]:
    parts = urlsplit(url.strip())
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{SITE_ADDRESSES_ENV}: {what} {url!r} must be scheme://host[:port] only")
    return origin(url)


def parse_site_addresses(value: str | Mapping[str, str] | None) -> dict[tuple[str, str, int], tuple[str, str, int]]:
    """The mapping ``origin as the worker sees it → origin for the container``; empty for an unset value.

    :param value: ``from=to`` pairs separated by commas or whitespace, a JSON object, or a mapping.
    :raises ValueError: a malformed pair or URL, naming the variable and the offending text.
    """
    if value is None:
        return {}
    pairs: list[tuple[str, str]]
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{SITE_ADDRESSES_ENV}: not valid JSON: {exc}") from None
            if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
                raise ValueError(f"{SITE_ADDRESSES_ENV}: expected a JSON object of URL strings")
            pairs = [(str(k), v) for k, v in doc.items()]
        else:
            pairs = []
            for item in text.replace(",", " ").split():
                source, sep, target = item.partition("=")
                if not sep or not source or not target:
                    raise ValueError(f"{SITE_ADDRESSES_ENV}: expected from=to, got {item!r}")
                pairs.append((source, target))
    mapping: dict[tuple[str, str, int], tuple[str, str, int]] = {}
    for source, target in pairs:
        try:
            mapping[_origin_only(source, "address")] = _origin_only(target, "target")
        except ValueError as exc:
            msg = str(exc)
            raise ValueError(msg if msg.startswith(SITE_ADDRESSES_ENV) else f"{SITE_ADDRESSES_ENV}: {msg}") from None
    return mapping


def rewrite_url(url: str, mapping: Mapping[tuple[str, str, int], tuple[str, str, int]]) -> str:
    """``url`` with its origin replaced when the mapping has it; any other string unchanged."""
    try:
        key = origin(url)
    except ValueError:
        return url
    target = mapping.get(key)
    if target is None:
        return url
    scheme, host, port = target
    netloc = host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if ":" in host:  # an IPv6 literal
        netloc = f"[{host}]" if port == _DEFAULT_PORTS[scheme] else f"[{host}]:{port}"
    parts = urlsplit(url.strip())
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def _rewrite(value: Any, mapping: Mapping[tuple[str, str, int], tuple[str, str, int]]) -> Any:
    if isinstance(value, str):
        return rewrite_url(value, mapping) if "://" in value else value
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, mapping) for k, v in value.items()}
    return value


def rewrite_task_document(document: bytes, mapping: Mapping[tuple[str, str, int], tuple[str, str, int]]) -> bytes:
    """The task document with every site URL (inputs' ``url``/``frontend_url``, the output's ``url_prefix``)
    moved to the container's origin; byte-identical when nothing is mapped."""
    if not mapping:
        return document
    doc = json.loads(document)
    rewritten = _rewrite(doc, mapping)
    if rewritten == doc:
        return document
    return json.dumps(rewritten, separators=(",", ":"), sort_keys=True).encode()


def for_container(document: bytes, env: Mapping[str, str] | None = None) -> bytes:
    """The document as the function's container must get it, per ``$AIRFLOW_DCACHE_FUNCTION_SITE_ADDRESSES``.

    The one call the container runtime makes before it sends a document (cold run or warm instance).
    """
    value = (os.environ if env is None else env).get(SITE_ADDRESSES_ENV)
    return rewrite_task_document(document, parse_site_addresses(value))
