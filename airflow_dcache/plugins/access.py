"""Who the dCache view acts as, and where: least privilege for every browse, details, live and status call.

The connections the view offers are the *site's* (often the pipeline's own, which holds dCache's
``admin`` role for its data management). A person looking through the view must never get those
rights, so for every request the view works out an :class:`Access`:

- **The person's own dCache identity** when ``[dcache] user_connections`` / ``user_connection_template``
  (:mod:`airflow_dcache.identity`) map the logged-in Airflow user to a connection *of the same site*
  as the connection picked in the view. Every dCache call then uses that connection and dCache
  decides what they may see (its 403 is passed on). ``[dcache] ui_path_prefixes``, when set, still
  narrows the view.
- **Otherwise the site connection, restricted**: the picked connection, *without* asserting its roles,
  and only inside the allowed roots, checked before any dCache call (403 outside). The allowed roots
  are ``[dcache] ui_path_prefixes`` when set; else the paths the DAGs' dCache storage-event watchers
  watch on that site (those on assets the user can see), plus ``[dcache] ui_extra_roots``. With
  neither, nothing is browsable.

The view's hooks never assert a connection's roles, for either kind of access
(``DCacheAsyncHook(conn_id, assert_roles=False)``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dcache.paths import InvalidPath, OutsideAllowedRoots, clean_path, clean_roots, within

log = logging.getLogger(__name__)
CACHE_SECONDS = 30.0
_site_cache: dict[str, tuple[float, str | None]] = {}
_roots_cache: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}


class ViewConfigError(RuntimeError):
    """The ``[dcache]`` options of the view cannot be used as configured (answered 500, naming the option)."""


def _conf(key: str) -> str:
    from airflow.configuration import conf

    return str(conf.get("dcache", key, fallback="") or "").strip()


def _roots_option(key: str) -> tuple[str, ...]:
    try:
        return clean_roots(_conf(key), field=f"[dcache] {key}")
    except InvalidPath as exc:
        raise ViewConfigError(f"{exc.field}: {exc.message}") from None


def configured_prefixes() -> tuple[str, ...] | None:
    """``[dcache] ui_path_prefixes`` (``None`` when unset: the roots then come from the watchers)."""
    return _roots_option("ui_path_prefixes") or None


def extra_roots() -> tuple[str, ...]:
    """``[dcache] ui_extra_roots``: browsable for users without an identity, besides the watched roots."""
    return _roots_option("ui_extra_roots")


def watched_roots(watchers: Iterable[Any], site: str) -> tuple[str, ...]:
    """The paths that the storage-event watchers of ``site`` watch (``Watcher`` objects of :mod:`.watchers`)."""
    paths: list[str] = []
    for w in watchers:
        if w.site != site:
            continue
        for p in w.trigger.paths:
            try:
                paths.append(clean_path(p, field="watcher"))
            except InvalidPath:  # a watcher the trigger itself would refuse: no root from it
                continue
    return clean_roots(paths)


def restricted_roots(prefixes: Sequence[str] | None, watched: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """Allowed roots of a user without a dCache identity: the setting, else watched + extra roots."""
    if prefixes:
        return tuple(prefixes)
    return clean_roots([*watched, *extra])


def personal_connection_ids(candidates: Iterable[str]) -> set[str]:
    """Which of ``candidates`` are somebody's own identity (mapping targets, or the template's pattern).

    The view never offers those in its connection picker: bob must not pick alice's connection.
    """
    from airflow_dcache import identity

    try:
        mapped = set(identity.user_connections().values())
    except identity.IdentityConfigError as exc:
        raise ViewConfigError(str(exc)) from None
    template = _conf("user_connection_template")
    pattern = None
    if "{username}" in template:
        before, _, after = template.partition("{username}")
        pattern = re.compile(re.escape(before) + r"[A-Za-z0-9_.-]+" + re.escape(after))
    return {c for c in candidates if c in mapped or (pattern is not None and pattern.fullmatch(c))}


def connection_site(conn_id: str) -> str | None:
    """The ``site`` of a connection (``None`` when it cannot be read); cached for 30 s."""
    cached = _site_cache.get(conn_id)
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    site: str | None
    try:
        from airflow.sdk import BaseHook

        from airflow_dcache.hooks.models import parse_site

        site = parse_site(BaseHook.get_connection(conn_id).extra_dejson.get("site"), conn_id)
    except Exception as exc:  # a missing or broken connection: no identity from it
        log.warning("dCache view: connection %s unusable: %s", conn_id, type(exc).__name__)
        site = None
    _site_cache[conn_id] = (time.monotonic(), site)
    return site


@dataclass(frozen=True)
class Access:
    """How the view reaches dCache for one user on one offered connection.

    :param conn_id: the connection picked in the view (names the site; offered to everyone).
    :param site: its site name.
    :param acting_conn: the connection every dCache call uses.
    :param own_identity: ``acting_conn`` is the user's own dCache identity (dCache decides).
    :param roots: where the user may look (``None``: no restriction by the view).
    :param user: the Airflow user name.
    """

    conn_id: str
    site: str
    acting_conn: str
    own_identity: bool
    roots: tuple[str, ...] | None
    user: str

    def hook(self) -> Any:
        """The async hook of every call the view makes for this user: roles are never asserted."""
        from airflow_dcache.hooks import DCacheAsyncHook

        return DCacheAsyncHook(self.acting_conn, assert_roles=False)

    def path(self, value: object, field: str = "path") -> str:
        """The clean path, or :class:`InvalidPath` (400) / :class:`OutsideAllowedRoots` (403, before dCache)."""
        path = clean_path(value, field=field)
        if self.roots is not None and not within(path, self.roots):
            raise OutsideAllowedRoots(field, path, self.roots)
        return path

    def view(self) -> dict[str, Any]:
        """What the page is told: which identity is used and where it may look (no credential)."""
        return {"conn_id": self.conn_id, "site": self.site,
                "identity": "own" if self.own_identity else "site",
                "roots": None if self.roots is None else list(self.roots)}


async def resolve(user: str, conn_id: str, site: str, load_watched: Callable[[str], Awaitable[tuple[str, ...]]]
                  ) -> Access:
    """The :class:`Access` of Airflow user ``user`` on the offered connection ``conn_id`` of ``site``.

    :param load_watched: ``site -> watched roots`` as this user may see them (only called when needed).
    """
    from airflow_dcache import identity

    prefixes = configured_prefixes()
    try:
        own = identity.user_connection(user)
    except identity.IdentityConfigError as exc:
        raise ViewConfigError(str(exc)) from None
    if own and connection_site(own) == site:
        return Access(conn_id, site, own, True, prefixes, user)
    if prefixes is not None:
        roots = prefixes
    else:
        key = (user, site)
        cached = _roots_cache.get(key)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            watched = cached[1]
        else:
            try:
                watched = await load_watched(site)
                _roots_cache[key] = (time.monotonic(), watched)
            except Exception as exc:  # fail closed: only the configured extra roots (not cached)
                log.warning("dCache view: watched roots unavailable for %s: %s", user, type(exc).__name__)
                watched = ()
        roots = restricted_roots(None, watched, extra_roots())
    return Access(conn_id, site, conn_id, False, roots, user)
