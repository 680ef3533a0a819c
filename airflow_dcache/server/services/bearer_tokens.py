"""JWT bearer tokens (WLCG and OIDC profiles) from configured issuers, as dCache's gPlazma oidc plugin.

A token is trusted only when its ``iss`` is a configured issuer, its signature verifies with a key
from that issuer's JWKS (asymmetric algorithms only, so a public key can never serve as an HMAC
secret), and ``exp``/``nbf``/``iat``/``aud`` hold. Its ``storage.*`` scopes then become
:class:`~airflow_dcache.server.services.login.Grant` s below the issuer's path prefix, with dCache's
activity sets; such a token is authorised by its scopes alone (dCache's ExemptFromNamespaceChecks).
A token without storage scopes is authorised by the identity its subject maps to, with group claims
adding gids. Refusals are :class:`InvalidBearerToken` (401); no message ever contains the token.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import NotAuthenticated
from airflow_dcache.server.services.login import PARENT_ACTIVITIES, Grant, Login, join_under, merge_grants
from airflow_dcache.server.storage.users import User

log = logging.getLogger(__name__)

#: Signature algorithms accepted: asymmetric only (``none`` and HS* are refused before any key is used).
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
#: The WLCG profile's audience meaning "any relying party"; a site accepts it by listing it.
WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"

A = Activity
#: dCache's WlcgProfileScope.Operation: which activities each scope allows (path-less compute.* allow none).
SCOPE_ACTIVITIES: dict[str, frozenset[Activity]] = {
    "storage.read": frozenset({A.LIST, A.READ_METADATA, A.DOWNLOAD}),
    "storage.create": frozenset({A.READ_METADATA, A.UPLOAD, A.MANAGE, A.UPDATE_METADATA}),
    "storage.modify": frozenset({A.LIST, A.READ_METADATA, A.UPLOAD, A.MANAGE, A.DELETE, A.UPDATE_METADATA}),
    "storage.stage": frozenset({A.LIST, A.READ_METADATA, A.DOWNLOAD, A.STAGE}),
    "storage.poll": frozenset({A.READ_METADATA}),
    "compute.read": frozenset(), "compute.modify": frozenset(), "compute.create": frozenset(),
    "compute.cancel": frozenset(),
}
_MAX_TOKEN = 16384
_MAX_JWKS = 1 << 20


class InvalidBearerToken(NotAuthenticated):
    """A JWT that must not log anybody in; answered with a Bearer ``invalid_token`` challenge."""

    challenge = 'Bearer error="invalid_token"'

    def __init__(self, why: str) -> None:
        super().__init__(f"Invalid bearer token: {why}")


class IssuerConfigError(ValueError):
    """The issuers file is unreadable or names a bad value; the message names the field."""


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A local identity a token maps to (dCache's ``authz-id``/``non-authz-id`` principals)."""

    username: str
    uid: int
    gids: tuple[int, ...]
    home: str = "/"
    root: str = "/"


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted issuer, from the ``--token-issuers`` file.

    ``prefix`` is the namespace directory scope paths are relative to (dCache's ``prefix``).
    ``authz_id`` is who a token *with* storage scopes acts as; ``non_authz_id`` who a token
    without them acts as, unless ``subjects`` maps its ``sub`` to a users-file account. ``groups``
    maps group-claim values to gids added to the login.
    """

    issuer: str
    jwks: str | None
    prefix: str = "/"
    audiences: tuple[str, ...] = ()
    audience_optional: bool = False
    profile: str = "wlcg"
    authz_id: Identity | None = None
    non_authz_id: Identity | None = None
    subjects: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)
    leeway: float = 30.0
    jwks_timeout: float = 5.0


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    value = doc.get(name, default)
    numeric = kind is int or kind == (int, float)
    if value is not None and (not isinstance(value, kind) or (numeric and isinstance(value, bool))):
        raise IssuerConfigError(f"{where}.{name} has the wrong type ({type(value).__name__})")
    return value


def _identity(doc: Any, where: str) -> Identity | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise IssuerConfigError(f"{where} must be an object with username, uid and gids")
    username = _field(doc, "username", str, where)
    uid = _field(doc, "uid", int, where)
    gids = _field(doc, "gids", list, where, [])
    if not username or uid is None or uid < 0:
        raise IssuerConfigError(f"{where} needs a username and a uid >= 0")
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gids):
        raise IssuerConfigError(f"{where}.gids must be a list of integers >= 0")
    home = _field(doc, "home", str, where, "/")
    root = _field(doc, "root", str, where, "/")
    if not home.startswith("/") or not root.startswith("/"):
        raise IssuerConfigError(f"{where}.home and .root must be absolute paths")
    return Identity(username, uid, tuple(gids) or (uid,), home, root)


def _issuer(doc: Any, index: int) -> IssuerConfig:
    where = f"issuers[{index}]"
    if not isinstance(doc, dict):
        raise IssuerConfigError(f"{where} must be an object")
    issuer = _field(doc, "issuer", str, where)
    if not issuer or urllib.parse.urlsplit(issuer).scheme not in ("http", "https"):
        raise IssuerConfigError(f"{where}.issuer must be the issuer's http(s) URL, exactly as in its tokens' iss")
    jwks = _field(doc, "jwks", str, where)
    prefix = _field(doc, "prefix", str, where, "/")
    if not prefix.startswith("/"):
        raise IssuerConfigError(f"{where}.prefix is not absolute: must start with '/'")
    audiences = _field(doc, "audiences", list, where, [])
    if not all(isinstance(a, str) and a for a in audiences):
        raise IssuerConfigError(f"{where}.audiences must be a list of strings")
    profile = _field(doc, "profile", str, where, "wlcg")
    if profile not in ("wlcg", "oidc"):
        raise IssuerConfigError(f"{where}.profile must be 'wlcg' or 'oidc'")
    subjects = _field(doc, "subjects", dict, where, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in subjects.items()):
        raise IssuerConfigError(f"{where}.subjects must map token subjects to user names")
    groups = _field(doc, "groups", dict, where, {})
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in groups.values()):
        raise IssuerConfigError(f"{where}.groups must map group names to gids >= 0")
    leeway = float(_field(doc, "leeway", (int, float), where, 30))
    timeout = float(_field(doc, "jwks_timeout", (int, float), where, 5))
    if not 0 <= leeway <= 300:
        raise IssuerConfigError(f"{where}.leeway must be between 0 and 300 seconds")
    if not 0 < timeout <= 60:
        raise IssuerConfigError(f"{where}.jwks_timeout must be between 0 and 60 seconds")
    optional = _field(doc, "audience_optional", bool, where, False)
    if not audiences and not optional:
        raise IssuerConfigError(f"{where}.audiences is empty: list this service's audiences "
                                "(and maybe https://wlcg.cern.ch/jwt/v1/any) or set audience_optional")
    return IssuerConfig(
        issuer=issuer, jwks=jwks, prefix=join_under("/", prefix), audiences=tuple(audiences),
        audience_optional=optional, profile=profile, authz_id=_identity(doc.get("authz_id"), f"{where}.authz_id"),
        non_authz_id=_identity(doc.get("non_authz_id"), f"{where}.non_authz_id"), subjects=dict(subjects),
        groups=dict(groups), leeway=leeway, jwks_timeout=timeout,
    )


def load_issuers(path: Path) -> list[IssuerConfig]:
    """Read the issuers file (JSON, or YAML when it ends in .yaml/.yml): ``{"issuers": [...]}``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise IssuerConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # json or yaml syntax: both name line and column
        raise IssuerConfigError(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                                f"{exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("issuers"), list) or not doc["issuers"]:
        raise IssuerConfigError(f"{path} must hold an object with a non-empty 'issuers' list")
    issuers = [_issuer(item, i) for i, item in enumerate(doc["issuers"])]
    seen: set[str] = set()
    for cfg in issuers:
        if cfg.issuer in seen:
            raise IssuerConfigError(f"issuer {cfg.issuer} is configured twice")
        seen.add(cfg.issuer)
    return issuers


# --- keys -----------------------------------------------------------------------------------------


def _fetch_json(url: str, timeout: float) -> Any:
    """GET a JSON document with a bounded time and size (a JWKS or OpenID discovery document)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(_MAX_JWKS + 1)
    if len(body) > _MAX_JWKS:
        raise ValueError("document too large")
    return json.loads(body)


class KeySource:
    """An issuer's signing keys by ``kid``: a JWKS file (re-read when it changes) or URL (cached).

    A URL is fetched again when a token names an unknown ``kid`` (the issuer rotated its keys), at
    most once per ``min_refresh`` seconds so forged kids cannot make the service hammer the issuer.
    Without ``jwks`` the URL comes from ``<iss>/.well-known/openid-configuration``.
    """

    def __init__(self, cfg: IssuerConfig, *, min_refresh: float = 10.0, max_age: float = 3600.0) -> None:
        self.cfg = cfg
        self.min_refresh = min_refresh
        self.max_age = max_age
        self._lock = threading.Lock()
        self._keys: dict[str | None, tuple[Any, str | None]] = {}
        self._stamp: object = None
        self._fetched = float("-inf")

    def key(self, kid: str | None) -> tuple[Any, str | None] | None:
        """The PyJWK for ``kid`` (or the only key when the token names none) and the ``alg`` its JWK
        declares; None when unknown."""
        with self._lock:
            self._refresh(force=False)
            found = self._lookup(kid)
            if found is None and time.monotonic() - self._fetched >= self.min_refresh:
                self._refresh(force=True)
                found = self._lookup(kid)
            return found

    def _lookup(self, kid: str | None) -> tuple[Any, str | None] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _refresh(self, *, force: bool) -> None:
        source = self.cfg.jwks
        try:
            if source is not None and not source.startswith(("http://", "https://")):
                st = os.stat(source)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp == self._stamp:
                    return
                with open(source, encoding="utf-8") as fh:
                    self._install(json.load(fh))
                self._stamp = stamp
                return
            since = time.monotonic() - self._fetched
            if since < self.min_refresh or (not force and self._keys and since < self.max_age):
                return  # at most one fetch per min_refresh, even while the issuer is down
            self._fetched = time.monotonic()
            url = source or self._discover()
            self._install(_fetch_json(url, self.cfg.jwks_timeout))
        except (OSError, ValueError) as exc:
            # keep the keys we had: an issuer briefly down must not log everybody out
            log.warning("cannot load the keys of issuer %s: %s", self.cfg.issuer, exc)

    def _discover(self) -> str:
        doc = _fetch_json(self.cfg.issuer.rstrip("/") + "/.well-known/openid-configuration", self.cfg.jwks_timeout)
        uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
            raise ValueError("the discovery document has no jwks_uri")
        return uri

    def _install(self, doc: Any) -> None:
        import jwt

        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("a JWKS must be an object with a 'keys' list")
        keys: dict[str | None, tuple[Any, str | None]] = {}
        for item in doc["keys"]:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK(item)
            except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError):
                continue  # unsupported key types are skipped, as in any JWKS client
            alg = item.get("alg") if isinstance(item.get("alg"), str) else None
            keys[item.get("kid") if isinstance(item.get("kid"), str) else None] = (jwk, alg)
        self._keys = keys


# --- verification ---------------------------------------------------------------------------------


def _scope_grants(scope: str, prefix: str) -> tuple[bool, tuple[Grant, ...]]:
    """Whether ``scope`` holds WLCG authorisation scopes, and the grants they make below ``prefix``.

    As dCache: unknown scopes are ignored; a storage scope needs a path starting with ``/``, taken
    relative to the issuer's prefix. Unlike dCache's FsPath.resolve, ``..`` never climbs above the prefix.
    """
    grants: list[Grant] = []
    found = False
    for item in (s.strip() for s in scope.split(" ")):
        label, colon, raw_path = item.partition(":")
        if label not in SCOPE_ACTIVITIES:
            continue
        found = True
        activities = SCOPE_ACTIVITIES[label]
        if not colon:
            if activities:
                raise InvalidBearerToken(f'Path must be specified for "{label}"')
            continue
        if not raw_path.startswith("/"):
            raise InvalidBearerToken(f"scope {label}: path does not start with /")
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        if activities:
            grants.append(Grant(join_under(prefix, path), activities))
    return found, merge_grants(grants)


def _claim_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class BearerTokenService:
    """Turns a JWT into a :class:`Login`, or refuses it with :class:`InvalidBearerToken`."""

    def __init__(self, issuers: list[IssuerConfig], users: Mapping[str, User]) -> None:
        self.issuers = {cfg.issuer: cfg for cfg in issuers}
        self.keys = {cfg.issuer: KeySource(cfg) for cfg in issuers}
        self.users = users
        for cfg in issuers:
            unknown = [name for name in cfg.subjects.values() if name not in users]
            if unknown:
                raise IssuerConfigError(f"issuer {cfg.issuer}: subjects map to unknown users {', '.join(unknown)}")

    @classmethod
    def from_file(cls, path: Path, users: Mapping[str, User]) -> BearerTokenService:
        return cls(load_issuers(path), users)

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and all(token.split("."))

    def login(self, token: str, now: datetime | None = None) -> Login:
        """The login ``token`` stands for; ``now`` only for tests of the time checks."""
        import jwt

        if len(token) > _MAX_TOKEN:
            raise InvalidBearerToken("too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.exceptions.PyJWTError:
            raise InvalidBearerToken("not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise InvalidBearerToken(f"signature algorithm {str(alg)[:16]!r} is not accepted")
        iss = unverified.get("iss")
        cfg = self.issuers.get(iss) if isinstance(iss, str) else None
        if cfg is None:
            raise InvalidBearerToken(f"untrusted issuer {str(iss)[:128]!r}")
        kid = header.get("kid")
        found = self.keys[cfg.issuer].key(kid if isinstance(kid, str) else None)
        if found is None:
            raise InvalidBearerToken(f"no key {str(kid)[:64]!r} is known for issuer {cfg.issuer}")
        key, declared = found
        if declared is not None and declared != alg:  # a JWK naming its algorithm allows only that one
            raise InvalidBearerToken(f"key {str(kid)[:64]!r} is for {str(declared)[:16]}, not {alg}")
        current = (now or datetime.now(UTC)).timestamp()
        try:
            # times and audience are checked below with dCache's rules; PyJWT checks signature and iss
            claims = jwt.decode(token, key.key, algorithms=[alg], issuer=cfg.issuer, options={
                "require": ["exp", "iss"], "verify_aud": False, "verify_exp": False, "verify_nbf": False,
                "verify_iat": False})
        except jwt.exceptions.InvalidSignatureError:
            raise InvalidBearerToken("signature verification failed") from None
        except jwt.exceptions.PyJWTError as exc:
            raise InvalidBearerToken(str(exc)[:200]) from None
        self._check_times(claims, current, cfg.leeway)
        self._check_audience(claims, cfg)
        return self._login(claims, cfg)

    @staticmethod
    def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
        def number(name: str) -> float | None:
            value = claims.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidBearerToken(f"claim {name} must be a number")
            return float(value)

        exp, nbf, iat = number("exp"), number("nbf"), number("iat")
        if exp is not None and now >= exp + leeway:
            raise InvalidBearerToken("has expired")
        if nbf is not None and now < nbf - leeway:
            raise InvalidBearerToken("is not yet valid")
        if iat is not None and now < iat - leeway:
            raise InvalidBearerToken("was issued in the future")

    @staticmethod
    def _check_audience(claims: Mapping[str, Any], cfg: IssuerConfig) -> None:
        if "aud" not in claims:
            if not cfg.audience_optional:
                raise InvalidBearerToken("has no audience (aud) claim")
            return
        audiences = _claim_list(claims["aud"])
        if not set(audiences) & set(cfg.audiences):
            raise InvalidBearerToken("is not intended for this service (aud)")

    def _login(self, claims: Mapping[str, Any], cfg: IssuerConfig) -> Login:
        scoped: bool = False
        grants: tuple[Grant, ...] = ()
        if cfg.profile == "wlcg":
            if claims.get("wlcg.ver") != "1.0":
                raise InvalidBearerToken('WLCG profile needs the claim "wlcg.ver": "1.0"')
            scope = claims.get("scope", "")
            if not isinstance(scope, str):
                raise InvalidBearerToken("'scope' claim has wrong type")
            scoped, grants = _scope_grants(scope, cfg.prefix)
        identity = self._identity(claims, cfg, scoped)
        group_gids = [cfg.groups[g] for g in self._groups(claims) if g in cfg.groups]
        gids = tuple(dict.fromkeys(identity.gids + tuple(group_gids)))
        exp = claims.get("exp")
        expiry = datetime.fromtimestamp(float(exp), UTC) if isinstance(exp, int | float) else None
        if not scoped:
            return Login(uid=identity.uid, gids=gids, username=identity.username, home=identity.home,
                         root=identity.root, expiry=expiry)
        union: frozenset[Activity] = frozenset().union(*(g.activities for g in grants))
        activities = union | PARENT_ACTIVITIES if grants else union
        return Login(uid=identity.uid, gids=gids, username=identity.username, expiry=expiry,
                     activities=activities, grants=grants, exempt_from_namespace=True)

    def _identity(self, claims: Mapping[str, Any], cfg: IssuerConfig, scoped: bool) -> Identity:
        sub = claims.get("sub")
        name = cfg.subjects.get(sub) if isinstance(sub, str) else None
        if name is not None:
            user = self.users[name]
            return Identity(user.username, user.uid, tuple(user.gids), user.home if not scoped else "/",
                            user.root if not scoped else "/")
        identity = cfg.authz_id if scoped else cfg.non_authz_id
        if identity is None:
            raise InvalidBearerToken("token subject is not mapped to a user"
                                     + ("" if scoped else " and the token has no storage scope"))
        return identity

    @staticmethod
    def _groups(claims: Mapping[str, Any]) -> list[str]:
        """``wlcg.groups`` (WLCG) and ``groups`` (OIDC) values; ``/atlas`` and ``atlas`` are one group."""
        names: list[str] = []
        for claim in ("wlcg.groups", "groups"):
            for value in _claim_list(claims.get(claim)):
                names.extend((value, value.lstrip("/"), "/" + value.lstrip("/")))
        return names
