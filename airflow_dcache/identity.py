"""Which dCache identity acts for an Airflow user: the mapping behind "act on behalf of the person".

A pipeline's own connection may hold more rights than any one scientist (it processes everyone's
uploads). When a person chooses the files — a manual or REST trigger, a backfill, the dCache view —
dCache must decide with *that person's* rights, not the pipeline's. The site maps Airflow users to
dCache connections in the ``[dcache]`` section of the Airflow configuration:

``user_connections``
    JSON object, Airflow user name → dCache connection id, e.g. ``{"alice": "dcache_alice"}``.
``user_connection_template``
    a connection id pattern such as ``dcache_user_{username}``, used for users not in the mapping
    when that connection exists.

A user with no mapping gets no identity of their own (:func:`user_connection` returns ``None``); the
callers then restrict the person to the pipeline's allowed roots and never assert a role for them.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["IdentityConfigError", "user_connection", "user_connections"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class IdentityConfigError(ValueError):
    """``[dcache] user_connections`` / ``user_connection_template`` cannot be used as configured."""


def _conf_get(key: str) -> str:
    from airflow.sdk import conf

    return str(conf.get("dcache", key, fallback="") or "").strip()


def user_connections() -> dict[str, str]:
    """``[dcache] user_connections`` as a dict (empty when unset); a bad value is an error naming the option."""
    raw = _conf_get("user_connections")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise IdentityConfigError(f"[dcache] user_connections: not JSON ({exc})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise IdentityConfigError("[dcache] user_connections: expected a JSON object of user name -> connection id")
    return dict(value)


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException, or the lookup itself failed: no identity either way
        return False
    return True


def user_connection(username: Any) -> str | None:
    """The dCache connection that acts for Airflow user ``username``, or ``None`` if the site mapped none."""
    if not isinstance(username, str) or not username:
        return None
    mapped = user_connections().get(username)
    if mapped:
        return mapped
    template = _conf_get("user_connection_template")
    if template:
        if "{username}" not in template:
            raise IdentityConfigError("[dcache] user_connection_template: must contain {username}")
        candidate = template.replace("{username}", _SAFE_NAME.sub("_", username))
        if _connection_exists(candidate):
            return candidate
    return None
