"""The authenticated caller as every service sees it, independent of how it logged in."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime

from airflow_dcache.server.services.activity import ALL_ACTIVITIES, Activity


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

    @property
    def superuser(self) -> bool:
        """Bypasses POSIX permission checks and ownership rules: the asserted admin role, or uid 0."""
        return self.admin or (self.uid == 0 and not self.anonymous)

    @property
    def primary_gid(self) -> int:
        return self.gids[0] if self.gids else self.uid

    def allows(self, activity: Activity) -> bool:
        return activity in self.activities

    def can_see(self, ns_path: str) -> bool:
        """True when ``ns_path`` is inside the path restriction or is one of its ancestors."""
        r = self.path_restriction
        if r is None or r == "/":
            return True
        return is_within(ns_path, r) or is_within(r, ns_path)

    def within_restriction(self, ns_path: str) -> bool:
        """True when ``ns_path`` is inside (not merely an ancestor of) the path restriction."""
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
