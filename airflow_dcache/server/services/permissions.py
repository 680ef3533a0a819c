"""Authorisation: POSIX mode bits on the namespace, then the credential's restrictions.

Both layers apply, as in dCache: a macaroon never grants more than its minting user has, and a
user's permissions never let a macaroon exceed its caveats.
"""

from __future__ import annotations

from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import NotAuthenticated, PermissionDenied
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.storage.namespace_db import Inode

READ, WRITE, EXECUTE = 4, 2, 1


def mode_allows(login: Login, node: Inode, want: int) -> bool:
    """Unix owner/group/other check; root, the asserted admin role and scoped tokens bypass it."""
    if login.superuser or login.exempt_from_namespace:
        return True
    if login.anonymous:
        bits = node.mode & 0o7
    elif node.uid == login.uid:
        bits = (node.mode >> 6) & 0o7
    elif node.gid in login.gids:
        bits = (node.mode >> 3) & 0o7
    else:
        bits = node.mode & 0o7
    return bits & want == want


def deny(login: Login, message: str) -> Exception:
    """Anonymous callers get 401 (log in and retry), authenticated ones 403."""
    return NotAuthenticated(message) if login.anonymous else PermissionDenied(message)


def require_mode(login: Login, node: Inode, want: int, path: str) -> None:
    if not mode_allows(login, node, want):
        raise deny(login, f"Permission denied: {path}")


def require_activity(login: Login, activity: Activity, path: str) -> None:
    if not login.allows(activity, path):
        raise deny(login, f"Permission denied: {activity.value} not allowed on {path}")


def require_within(login: Login, ns_path: str, shown: str) -> None:
    """The credential's path restriction must contain the target itself."""
    if not login.within_restriction(ns_path):
        raise deny(login, f"Permission denied: {shown} is outside the allowed path")


def require_visible(login: Login, ns_path: str, shown: str) -> None:
    """Ancestors of the path restriction may be looked at, nothing else outside it."""
    if not login.can_see(ns_path):
        raise deny(login, f"Permission denied: {shown} is outside the allowed path")
