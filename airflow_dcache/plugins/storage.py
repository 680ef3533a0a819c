"""What the view shows of dCache, read with the provider's hooks only.

Which connections are offered: ``[dcache] ui_connections`` (comma-separated ids) when set, else every
connection of type ``dcache`` (metadata DB and ``AIRFLOW_CONN_*`` variables), never one that is a
person's own identity (:func:`.access.personal_connection_ids`). Every call goes through the user's
:class:`~.access.Access` (its hook never asserts roles). Only ids and site names leave this module;
a connection's host, login, password or token never does, and error messages are the hook's own
(masked URL, the server's message).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.hooks.models import NamespaceEntry
from airflow_dcache.plugins.access import Access, personal_connection_ids
from airflow_dcache.plugins.validation import visible

MARKER_PREFIX = "airflow_dcache.done."
_CACHE: dict[str, tuple[float, list[dict[str, str]]]] = {}
CACHE_SECONDS = 30.0


def _env_connection_type(value: str) -> str | None:
    value = value.strip()
    if value.startswith("{"):
        try:
            return str(json.loads(value).get("conn_type") or "") or None
        except ValueError:
            return None
    return value.split(":", 1)[0].replace("-", "_") if "://" in value else None


def discover_connection_ids() -> list[str]:
    """Connection ids of type ``dcache`` (config list first; else env variables and the metadata DB)."""
    from airflow.configuration import conf

    configured = [c.strip() for c in (conf.get("dcache", "ui_connections", fallback="") or "").split(",")]
    if any(configured):
        listed = {c for c in configured if c}
        return sorted(listed - personal_connection_ids(listed))
    ids = {k[len("AIRFLOW_CONN_"):].lower() for k, v in os.environ.items()
           if k.startswith("AIRFLOW_CONN_") and _env_connection_type(v) == "dcache"}
    try:
        from airflow.models import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            ids.update(session.scalars(select(Connection.conn_id).where(Connection.conn_type == "dcache")))
    except Exception:  # no DB (unit tests): env connections only
        pass
    return sorted(ids - personal_connection_ids(ids))


def offered_connections() -> list[dict[str, str]]:
    """``[{"conn_id", "site"}]`` of the connections the view offers (cached for 30 s)."""
    from airflow_dcache.hooks.models import parse_site

    cached = _CACHE.get("conns")
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    result = []
    for conn_id in discover_connection_ids():
        try:
            from airflow.sdk import BaseHook

            extra = BaseHook.get_connection(conn_id).extra_dejson
            site = parse_site(extra.get("site"), conn_id)
        except Exception:  # a broken connection is listed without a site, never explained
            site = ""
        result.append({"conn_id": conn_id, "site": site})
    _CACHE["conns"] = (time.monotonic(), result)
    return result


def entry_view(entry: NamespaceEntry) -> dict[str, Any]:
    """The JSON the page renders for one namespace entry (no raw server document).

    ``name`` and ``path`` are the raw values (for links and requests); ``display`` and
    ``display_path`` are what a person is shown, with bidi and invisible characters escaped.
    """
    raw = entry.raw or {}
    return {
        "path": entry.path, "name": entry.name, "display": visible(entry.name or ""),
        "display_path": visible(entry.path or ""), "type": entry.file_type, "is_dir": entry.is_dir,
        "size": entry.size, "mtime": entry.mtime, "owner": raw.get("owner"), "group": raw.get("group"),
        "mode": entry.mode, "pnfsid": entry.pnfsid, "locality": entry.locality,
        "current_qos": entry.current_qos, "target_qos": entry.target_qos,
        "checksums": entry.checksums or {}, "labels": entry.labels or [],
    }


async def browse(access: Access, path: str, offset: int, limit: int) -> dict[str, Any]:
    """One page of a directory (``limit + 1`` asked for, to know whether there is a next page)."""
    async with access.hook() as h:
        entry = await h.stat(path, children=True, offset=offset, limit=limit + 1, locality=True, qos=True,
                             checksum=True, labels=True, optional=True)
    if not entry.is_dir:
        return {"path": path, "display_path": visible(path), "is_dir": False, "entry": entry_view(entry),
                "children": [], "offset": 0, "limit": limit, "has_more": False}
    children = entry.children or []
    return {
        "path": path, "display_path": visible(path), "is_dir": True, "entry": entry_view(entry),
        "children": [entry_view(c) for c in children[:limit]],
        "offset": offset, "limit": limit, "has_more": len(children) > limit,
    }


async def details(access: Access, path: str) -> dict[str, Any]:
    """Everything about one file or directory: locations, QoS, checksums, xattrs, done-markers."""
    async with access.hook() as h:
        entry = await h.stat(path, locality=True, locations=True, qos=True, checksum=True, xattr=True,
                             labels=True, optional=True)
    view = entry_view(entry)
    xattrs = entry.xattrs or {}
    view.update({
        "locations": entry.locations or [],
        "xattrs": xattrs,
        "access_latency": (entry.raw or {}).get("accessLatency"),
        "retention_policy": (entry.raw or {}).get("retentionPolicy"),
        "markers": markers(xattrs),
    })
    return view


def markers(xattrs: dict[str, str]) -> list[dict[str, str]]:
    """The contract §6 done-markers: ``airflow_dcache.done.<consumer>`` = ``<version id> <dag_id>/<run_id>``."""
    from airflow_dcache.events.version import parse_marker

    found = []
    for name, value in sorted(xattrs.items()):
        if name.startswith(MARKER_PREFIX):
            version, dag_id, run_id = parse_marker(str(value))
            found.append({"consumer": name[len(MARKER_PREFIX):], "dag_id": dag_id, "run_id": run_id,
                          "version": version.id if version else ""})
    return found


def error_status(exc: DCacheError) -> int:
    """HTTP status the view answers for a hook error (the dCache status where it is a client error)."""
    code = getattr(exc, "status", None)
    if isinstance(code, int) and code in (400, 403, 404, 409):
        return code
    return 502
