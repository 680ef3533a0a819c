"""The authenticated caller as every service sees it, independent of how it logged in."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from airflow_dcache.server.services.activity import ALL_ACTIVITIES, Activity

#: Activities dCache's MultiTargetedRestriction allows on every ancestor of an authorised path.
PARENT_ACTIVITIES: frozenset[Activity] = frozenset({Activity.LIST, Activity.READ_METADATA})


@dataclass(frozen=True)
class Grant:
    """One authorisation of a multi-target restriction: ``activities`` on ``path`` and below.

    A bearer token's ``storage.*`` scopes become grants (dCache's ``MultiTargetedRestriction``):
    unlike a macaroon, one token may allow reading one tree and writing another.
    """

    path: str
    activities: frozenset[Activity]


def merge_grants(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    """Grants on the same path joined into one, as dCache combines scopes with equal paths."""
    by_path: dict[str, set[Activity]] = {}
    for grant in grants:
        by_path.setdefault(grant.path, set()).update(grant.activities)
    return tuple(Grant(path, frozenset(acts)) for path, acts in sorted(by_path.items()))


@dataclass(frozen=True)
class Login:
    """A user's identity plus the restrictions of the credential used.

    ``root`` is the chroot: request paths are resolved beneath it. ``path_restriction`` is an
    absolute namespace path (already joined with root) outside which nothing is visible except
    the ancestors of the restriction itself, as dCache's PrefixRestriction does. ``activities``
    is the set a macaroon allows; a password login allows everything.

    ``admin`` is the *asserted* admin role: as in dCache, a user who holds a role has it only when the
    login asks for it (``user#admin`` or a ``Roles: admin`` header); otherwise it is listed in
    ``unasserted_roles``. Root (uid 0) bypasses namespace permissions whatever its roles, as Chimera does.

    ``grants`` (a bearer token's scopes) replaces ``path_restriction`` and ``activities`` with
    per-path activity sets: an activity is allowed on a path inside a grant holding it, and LIST and
    READ_METADATA on every ancestor of a grant. ``activities`` then holds their union (for checks
    that name no path). ``exempt_from_namespace`` is dCache's ExemptFromNamespaceChecks: a scoped
    token is authorised by its scopes alone, not by POSIX mode bits.
    """

    uid: int
    gids: tuple[int, ...]
    username: str
    home: str = "/"
    root: str = "/"
    admin: bool = False
    roles: tuple[str, ...] = ()
    unasserted_roles: tuple[str, ...] = ()
    path_restriction: str | None = None
    activities: frozenset[Activity] = field(default=ALL_ACTIVITIES)
    expiry: datetime | None = None
    max_upload: int | None = None
    macaroon_iid: str | None = None
    anonymous: bool = False
    grants: tuple[Grant, ...] | None = None
    exempt_from_namespace: bool = False

    @property
    def superuser(self) -> bool:
        """Bypasses POSIX permission checks and ownership rules: the asserted admin role, or uid 0."""
        return self.admin or (self.uid == 0 and not self.anonymous)

    @property
    def primary_gid(self) -> int:
        return self.gids[0] if self.gids else self.uid

    def allows(self, activity: Activity, path: str | None = None) -> bool:
        """Whether the credential allows ``activity``; on ``path`` (the caller's view) when given.

        Only grants depend on the path; a macaroon's activities hold everywhere it can reach, and its
        path restriction is checked separately (:meth:`within_restriction`).
        """
        if self.grants is None or path is None:
            return activity in self.activities
        ns_path = join_under(self.root, path)
        for grant in self.grants:
            if activity in grant.activities and is_within(ns_path, grant.path):
                return True
            if activity in PARENT_ACTIVITIES and is_within(grant.path, ns_path):
                return True
        return False

    def can_see(self, ns_path: str) -> bool:
        """True when ``ns_path`` is inside the path restriction or is one of its ancestors."""
        if self.grants is not None:
            return any(is_within(ns_path, g.path) or is_within(g.path, ns_path) for g in self.grants)
        r = self.path_restriction
        if r is None or r == "/":
            return True
        return is_within(ns_path, r) or is_within(r, ns_path)

    def within_restriction(self, ns_path: str) -> bool:
        """True when ``ns_path`` is inside (not merely an ancestor of) the path restriction."""
        if self.grants is not None:
            return any(is_within(ns_path, g.path) for g in self.grants)
        r = self.path_restriction
        return r is None or r == "/" or is_within(ns_path, r)


ANONYMOUS = Login(uid=-1, gids=(), username="nobody", anonymous=True, activities=frozenset())


def is_within(path: str, prefix: str) -> bool:
    """True when ``path`` equals ``prefix`` or lies below it (both absolute, normalised)."""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def join_under(root: str, path: str) -> str:
    """Resolve ``path`` beneath ``root`` the way dCache chroots: ``..`` never escapes root."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    rel = "/".join(parts)
    return posixpath.join(root, rel).rstrip("/") or "/" if rel else root
