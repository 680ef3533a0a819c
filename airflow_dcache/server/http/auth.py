"""Authentication shared by the door and the frontend, in dCache's order of login strategies.

Macaroons are tried first for any bearer credential; a bearer token that is not a macaroon is a
JWT from a configured issuer (``--token-issuers``), or refused when none is configured. Basic
checks the users file. No credential yields the
anonymous login, which every operation refuses with 401 unless anonymous access is enabled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from aiohttp import web

from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated
from airflow_dcache.server.services.login import ANONYMOUS, Login
from airflow_dcache.server.storage.users import User, verify_password

_CACHE_SIZE = 256

#: One JSON line per authenticated request when enabled (``--access-log``).
ACCESS_LOG = logging.getLogger("airflow_dcache.server.access")


class MacaroonLogin(Protocol):
    def login(self, token: str, client_ip: str) -> Login: ...


class BearerLogin(Protocol):
    def login(self, token: str) -> Login: ...


def subject_dn(cert: dict[str, Any]) -> str:
    """The certificate subject in OpenSSL's one-line form, as grid sites write DNs."""
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"/{_DN_KEYS.get(key, key)}={value}")
    return "".join(parts)


_DN_KEYS = {"countryName": "C", "stateOrProvinceName": "ST", "localityName": "L", "organizationName": "O",
            "organizationalUnitName": "OU", "commonName": "CN", "domainComponent": "DC", "emailAddress": "emailAddress"}


def desired_roles(request: web.Request, from_username: str = "") -> set[str]:
    """Roles the request asks for: ``user#role1,role2`` in a Basic username and the ``Roles`` header."""
    wanted = {r.strip() for r in from_username.split(",") if r.strip()}
    for header in request.headers.getall("Roles", []):
        wanted.update(r.strip() for r in header.split(",") if r.strip())
    return wanted


def login_for_user(user: User, wanted: AbstractSet[str] = frozenset()) -> Login:
    """The login of a users-file account, with the roles it asked for asserted (as gPlazma's roles plugin).

    Asking for a role the account does not hold fails the login; holding one without asking for it
    leaves it unasserted, so an admin account works with ordinary rights unless it says otherwise.
    """
    missing = sorted(wanted - set(user.roles))
    if missing:
        raise NotAuthenticated(f"User {user.username} is not authorised to assert role {', '.join(missing)}")
    asserted = tuple(r for r in user.roles if r in wanted)
    return Login(uid=user.uid, gids=user.gids, username=user.username, home=user.home, root=user.root,
                 admin="admin" in asserted, roles=asserted,
                 unasserted_roles=tuple(r for r in user.roles if r not in wanted))


class Authenticator:
    def __init__(self, users: dict[str, User], macaroons: MacaroonLogin, *, looks_like_macaroon,
                 tls: bool, allow_insecure_macaroons: bool, bearer: BearerLogin | None = None) -> None:
        self.users = users
        self.bearer = bearer
        self.users_by_dn = {u.dn: u for u in users.values() if u.dn}
        self.macaroons = macaroons
        self.looks_like_macaroon = looks_like_macaroon
        self.tls = tls
        self.allow_insecure_macaroons = allow_insecure_macaroons
        # PBKDF2 is deliberately slow; remember recent successes so each request doesn't pay it.
        self._verified: OrderedDict[bytes, User] = OrderedDict()

    def authenticate(self, request: web.Request) -> Login:
        login = self._authenticate(request)
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            # who did what with which asserted roles: lets a site (and the tests) see that a client
            # asserts a role only for the calls that need it; no credential is logged
            ACCESS_LOG.info(json.dumps({"method": request.method, "path": request.path, "user": login.username,
                                        "roles": list(login.roles), "macaroon": login.macaroon_iid is not None}))
        return login

    def _authenticate(self, request: web.Request) -> Login:
        header = request.headers.getall("Authorization", [])
        authz = request.query.getall("authz", [])
        if len(header) > 1 or len(authz) > 1:
            raise BadRequest("More than one credential supplied")
        if header and authz:
            raise BadRequest("Both an Authorization header and an authz query parameter were supplied")
        if authz:
            if not (self.tls or self.allow_insecure_macaroons):
                raise NotAuthenticated("not allowed to send pre-authorized URL unencrypted")
            return self._bearer(authz[0], request)
        if not header:
            return self._certificate(request)
        scheme, _, value = header[0].strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return self._basic(value.strip(), request)
        if scheme == "bearer":
            if not (self.tls or self.allow_insecure_macaroons):
                raise NotAuthenticated("not allowed to send bearer token unencrypted")
            return self._bearer(value.strip(), request)
        raise NotAuthenticated(f"Unsupported authorization scheme: {scheme[:32]}")

    def _certificate(self, request: web.Request) -> Login:
        """A verified client certificate, used (as in dCache) only when no other credential came."""
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return ANONYMOUS
        dn = subject_dn(cert)
        user = self.users_by_dn.get(dn)
        if user is None:
            raise NotAuthenticated(f"Certificate subject is not mapped to a user: {dn}")
        return login_for_user(user, desired_roles(request))

    def _bearer(self, token: str, request: web.Request) -> Login:
        if not token:
            raise NotAuthenticated("Empty bearer token")
        if self.looks_like_macaroon(token):
            return self.macaroons.login(token, request.remote or "")
        if self.bearer is None:
            raise NotAuthenticated("Bearer token is not a macaroon; no other token types are accepted")
        return self.bearer.login(token)

    def _basic(self, value: str, request: web.Request) -> Login:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise NotAuthenticated("Malformed Basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise NotAuthenticated("Malformed Basic credentials: missing ':'")
        username, _, roles = username.partition("#")  # dCache's user#role1,role2 form
        key = hashlib.sha256(decoded.encode()).digest()
        user = self._verified.get(key)
        if user is None:
            candidate = self.users.get(username)
            if candidate is None or not verify_password(password, candidate.password_hash):
                raise NotAuthenticated("Invalid username or password")
            user = candidate
            self._verified[key] = user
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return login_for_user(user, desired_roles(request, roles))
