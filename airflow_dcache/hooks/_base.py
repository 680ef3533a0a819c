"""What the sync and async hooks have in common apart from I/O: identity, settings, credentials, secret masking."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_dcache.hooks._protocol import auth_headers
from airflow_dcache.hooks._settings import AuthType, ConnectionSettings, settings_from_connection
from airflow_dcache.hooks.token_file import TokenFileReader
from airflow_dcache.paths import clean_roots, within
from airflow_dcache.utils.masking import masked_part


def narrow_roots(connection: Sequence[str], hook: Sequence[str]) -> tuple[str, ...]:
    """Roots allowed by both the connection and the hook (the deeper one of each overlapping pair).

    With no overlap at all the result is a root that names nothing (``/\u2205``): nothing is allowed,
    rather than everything.
    """
    if not connection:
        return tuple(hook)
    out = [h if within(h, [c]) else c for h in hook for c in connection if within(h, [c]) or within(c, [h])]
    return tuple(dict.fromkeys(out)) or ("/\u2205",)


class DCacheHookBase(BaseHook):
    """Holds only the connection id, so hooks are cheap to create and nothing secret is serialisable."""

    conn_name_attr = "dcache_conn_id"
    default_conn_name = "dcache_default"
    conn_type = "dcache"
    hook_name = "dCache"

    def __init__(
        self,
        dcache_conn_id: str = default_conn_name,
        *,
        settings: ConnectionSettings | None = None,
        assert_roles: bool = True,
        allowed_roots: Sequence[str] | None = None,
        mask_settings: bool = True,
        **kwargs: Any,
    ) -> None:
        """``mask_settings=False`` leaves the secrets of the given ``settings`` out of the log masker: only for
        a hook around a credential minted with ``mint_macaroon(mask=False)`` (a third-party copy's)."""
        super().__init__(**kwargs)
        self.dcache_conn_id = dcache_conn_id
        self.assert_roles = assert_roles
        self.allowed_roots = clean_roots(allowed_roots or ())
        self._settings = self._roles_applied(settings) if settings is not None else None
        self._token_reader: TokenFileReader | None = None
        if settings is not None and mask_settings:
            self._mask(settings)

    def _roles_applied(self, settings: ConnectionSettings) -> ConnectionSettings:
        """The connection's settings as this hook may use them.

        ``assert_roles=False`` logs in plainly: the connection's roles (``admin``) are never asserted,
        for callers acting for someone other than the pipeline (the dCache view, a user's manual
        trigger). ``allowed_roots`` narrows the trees every request may name (a pipeline's roots):
        a path outside raises :class:`~airflow_dcache.paths.OutsideAllowedRoots` before any request.
        """
        if not self.assert_roles and settings.roles:
            settings = dataclasses.replace(settings, roles=())
        if self.allowed_roots:
            settings = dataclasses.replace(settings, allowed_roots=narrow_roots(settings.allowed_roots,
                                                                                self.allowed_roots))
        return settings

    @staticmethod
    def _mask(settings: ConnectionSettings) -> None:
        """Register secrets before any request can put them in a log line or an error.

        Long ones by their tail (:func:`~airflow_dcache.utils.masking.masked_part`), as minted macaroons
        are: a hook made around a per-file macaroon would otherwise add the whole macaroon as a second
        pattern, and the masker's cost grows with the square of its patterns.
        """
        for secret in settings.secrets:
            mask_secret(masked_part(secret))

    @property
    def settings(self) -> ConnectionSettings:
        """Settings of the connection, loaded and validated on first use."""
        if self._settings is None:
            conn = self.get_connection(self.dcache_conn_id)
            settings = settings_from_connection(conn)
            self._mask(settings)
            self._settings = self._roles_applied(settings)
        return self._settings

    def _auth_headers(self, settings: ConnectionSettings, elevated: bool) -> tuple[dict[str, str], str | None]:
        """Credential headers for one request, and the token when it was just read anew from the token
        file: the caller masks it (sync or async) before the request can log it. OIDC agents rotate the
        file while long tasks run, so it is checked on every request."""
        if settings.auth_type is not AuthType.TOKEN_FILE:
            return auth_headers(settings, elevated=elevated), None
        if self._token_reader is None:
            self._token_reader = TokenFileReader(settings.token_file or "")
        token, changed = self._token_reader.read()
        return auth_headers(settings, token, elevated=elevated), token if changed else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dcache_conn_id={self.dcache_conn_id!r})"


def door_check_message(error: Exception) -> str:
    return f"WebDAV door check failed: {error}"


def frontend_check_message(error: Exception) -> str:
    return f"frontend check (GET /api/v1/user) failed: {error}"


def identity_message(status: str, username: str | None, door: str, api: str) -> tuple[bool, str]:
    """Turn the ``/user`` status into the UI's (ok, message); ANONYMOUS means the credential was ignored."""
    if status != "AUTHENTICATED":
        return False, (
            f"frontend {api} answered status {status or 'missing'}: the credentials were not accepted "
            "(dCache ignores Basic auth and bearer tokens over plain HTTP unless configured otherwise)"
        )
    return True, f"connected to door {door} and frontend {api} as {username or 'unknown user'}"
