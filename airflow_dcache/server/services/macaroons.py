"""Minting and verifying macaroons with dCache's exact caveat semantics.

The rules mirror dCache's ``MacaroonRequestHandler`` (mint), ``ContextExtractingCaveatVerifier``,
``ClientIPCaveatVerifier`` and ``MacaroonContext`` (verify) because clients and attack tests must
see the same accept/reject decisions and the same reason texts as against a real dCache. Where
dCache's behaviour looks surprising (a later ``activity:`` that merely repeats ``READ_METADATA``
is an enlargement; a POST below an existing path restriction keeps the old restriction) it is
copied on purpose, and noted.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from airflow_dcache.macaroons import caveats as cv
from airflow_dcache.macaroons.codec import (
    MacaroonFormatError,
    add_first_party_caveat,
    create,
    deserialize,
    serialize,
    verify_signature,
)
from airflow_dcache.server.services.activity import ALL_ACTIVITIES, Activity
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated
from airflow_dcache.server.services.jsonbody import parse_json
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.storage.macaroon_secrets import MacaroonSecretStore

Parts = tuple[str, ...]
_JAVA_ACTIVITY = "org.dcache.auth.attributes.Activity"


class InvalidMacaroon(NotAuthenticated):
    """A token that parses as a macaroon but must not log anybody in."""

    def __init__(self, ref: str, why: str | None) -> None:
        super().__init__(f"Invalid macaroon [{ref}]" + (f": {why}" if why else ""))


class _Refused(Exception):
    """dCache's ``InvalidCaveatException``: this caveat fails, verification goes on."""


class _Abort(Exception):
    """dCache's unchecked exceptions (e.g. a second ``id``): verification stops at once."""


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


# --- FsPath arithmetic: paths are tuples of names, "/" is () ------------------------------------


def _walk(start: Parts, path: str, floor: int) -> Parts:
    parts = list(start)
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if len(parts) > floor:
                parts.pop()
            continue
        parts.append(name)
    return tuple(parts)


def _chroot(base: Parts, path: str) -> Parts:
    """``path`` below ``base`` even if absolute; ``..`` stops at ``base`` (FsPath.chroot)."""
    return _walk(base, path, len(base))


def _resolve(base: Parts, path: str) -> Parts:
    """Ordinary resolution: an absolute ``path`` ignores ``base`` (FsPath.resolve)."""
    return _walk(() if path.startswith("/") else base, path, 0)


def _str(parts: Parts) -> str:
    return "/" + "/".join(parts)


def _has_prefix(path: Parts, prefix: Parts) -> bool:
    return path[: len(prefix)] == prefix


def _java_long(text: str) -> int:
    """``Long.parseLong``: optional sign and ASCII digits only, 64-bit range."""
    digits = text[1:] if text[:1] in "+-" else text
    if digits.isascii() and digits.isdigit() and len(digits) <= 19:
        value = int(text)
        if -(2**63) <= value < 2**63:
            return value
    raise ValueError(f'For input string: "{text}"')


# --- verification -------------------------------------------------------------------------------


@dataclass
class _Context:
    """What the caveats say so far; the methods copy MacaroonContext's update rules."""

    now: datetime
    root: Parts = ()
    home: Parts = ()
    path: Parts = ()  # relative to root
    uid: int | None = None
    gids: tuple[int, ...] | None = None
    username: str | None = None
    activities: frozenset[str] = frozenset(cv.ACTIVITY_NAMES)
    expiry: datetime | None = None
    max_upload: int | None = None
    iid: str | None = None
    have_caveats: bool = False
    error: str | None = field(default=None)

    def verify(self, text: str) -> bool:
        try:
            key, value = cv.parse_caveat(text)
            accepted = self._accept(key, value)
        except (cv.CaveatError, _Refused) as exc:
            self.error = f"{exc}: {text}"
            return False
        self.have_caveats |= accepted
        return accepted

    def _accept(self, key: str, value: str) -> bool:
        if key == cv.IP:
            return False  # the IP verifier's business
        handler = {
            cv.HOME: self._home, cv.ROOT: self._root, cv.PATH: self._path, cv.ID: self._identity,
            cv.ACTIVITY: self._activity, cv.BEFORE: self._before, cv.MAX_UPLOAD: self._max_upload,
            cv.IID: self._iid,
        }[key]
        handler(value)
        return True

    def _home(self, value: str) -> None:
        self.home = _resolve(self.root, value)

    def _root(self, value: str) -> None:
        delta = _chroot((), value)
        compare = delta[: len(self.path)]
        if not _has_prefix(self.path, compare):
            raise _Refused("root extends outside of path")
        self.path = self.path[len(compare) :]
        self.home = self.home[len(delta) :] if _has_prefix(self.home, delta) else ()
        self.root = self.root + delta

    def _path(self, value: str) -> None:
        self.path = _chroot(self.path, value)

    def _identity(self, value: str) -> None:
        elements = value.split(";", 2)
        if len(elements) != 3:
            raise _Refused("Missing elements")
        try:
            uid = _java_long(elements[0])
        except ValueError as exc:
            raise _Refused(f"Badly formatted uid: {exc}") from None
        if uid < 0:
            raise _Abort("invalid uid value")
        if self.uid is not None:
            raise _Abort("uid is already set")
        self.uid = uid
        try:
            gids = tuple(_java_long(g) for g in elements[1].split(","))
        except ValueError as exc:
            raise _Refused(f"Badly formatted gid: {exc}") from None
        if self.gids is not None:
            raise _Abort("gids are already set")
        self.gids = gids
        username = elements[2].strip("".join(chr(c) for c in range(33)))
        if not username:
            raise _Refused("empty username not allowed")
        if self.username is not None:
            raise _Abort("username is already set")
        self.username = username

    def _activity(self, value: str) -> None:
        wanted: set[str] = set()
        for name in (n.strip() for n in value.split(",")):
            if name not in cv.ACTIVITY_NAMES:
                raise _Refused(f"Bad activity value: No enum constant {_JAVA_ACTIVITY}.{name}")
            wanted.add(name)
        # Checked before READ_METADATA is implied, as dCache does.
        if not wanted <= self.activities:
            raise _Refused("attempt to enlarge activity set")
        self.activities = frozenset(wanted)

    def _before(self, value: str) -> None:
        try:
            expiry = cv.parse_instant(value)
        except ValueError as exc:
            raise _Refused(f"Bad ISO 8601 timestamp: {exc}") from None
        if self.now > expiry:
            raise _Refused("expired")
        if self.expiry is None or expiry < self.expiry:
            self.expiry = expiry

    def _max_upload(self, value: str) -> None:
        try:
            size = _java_long(value)
        except ValueError as exc:
            raise _Refused(f"Bad {cv.MAX_UPLOAD}: {exc}") from None
        if size <= 0:
            raise _Refused(f"{cv.MAX_UPLOAD} must be a positive value")
        self.max_upload = size if self.max_upload is None else min(self.max_upload, size)

    def _iid(self, value: str) -> None:
        if self.iid is not None:
            raise _Refused(f"Multiple {cv.IID}")
        if self.have_caveats:
            raise _Refused(f"{cv.IID} not first caveat")
        self.iid = value

    def allowed_activities(self) -> frozenset[Activity]:
        """MacaroonContext.getAllowedActivities: any activity implies READ_METADATA."""
        names = set(self.activities)
        if names and names != {"READ_METADATA"}:
            names.add("READ_METADATA")
        if len(names) == len(cv.ACTIVITY_NAMES):
            return ALL_ACTIVITIES
        return frozenset(Activity(n) for n in names)

    def to_login(self) -> Login:
        if self.uid is None:
            raise _Abort("uid not specified")
        if self.gids is None:
            raise _Abort("gid not specified")
        if self.username is None:
            raise _Abort("username not specified")
        root = _str(self.root)
        if self.path:
            restriction: str | None = _str(self.root + self.path)
        else:
            restriction = root if self.root else None
        return Login(
            uid=self.uid, gids=self.gids, username=self.username, home=_str(self.home), root=root,
            admin=False, path_restriction=restriction, activities=self.allowed_activities(),
            expiry=self.expiry, max_upload=self.max_upload, macaroon_iid=self.iid,
        )


def _client_bytes(client_ip: str) -> bytes | None:
    """The TCP peer as Java would hold it: IPv4-mapped IPv6 peers count as IPv4."""
    text = client_ip.strip().removeprefix("[").removesuffix("]").split("%")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


@dataclass
class _IpVerifier:
    """ClientIPCaveatVerifier: judges only ``ip:`` caveats; keeps the last problem it saw."""

    client: bytes | None
    error: str | None = None

    def verify(self, text: str) -> bool:
        try:
            key, value = cv.parse_caveat(text)
            if key != cv.IP:
                return False
            self._check(value)
            return True
        except (cv.CaveatError, _Refused) as exc:
            self.error = str(exc)
        return False

    def _check(self, value: str) -> None:
        if self.client is None:
            raise _Refused("client has unknown address")
        specs = [s.strip() for s in value.split(",") if s.strip()]
        subnets = [cv.parse_subnet(s) for s in specs]
        bad = [spec for spec, subnet in zip(specs, subnets, strict=True) if subnet is None]
        if bad:
            raise _Refused(f"Invalid subnets: [{', '.join(bad)}]")
        client = self.client
        if not any(subnet is not None and cv.subnet_contains(subnet, client) for subnet in subnets):
            raise _Refused(f"Client fails to match IP caveat {cv.IP}:{value}")


# --- minting ------------------------------------------------------------------------------------


def _gson_string(value: object) -> object:
    """Gson reads a JSON number or boolean where it expects a string as that literal's text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _parse_request(body: bytes) -> tuple[list[str], str | None]:
    try:
        text = body.decode("utf-8")
    except ValueError as exc:
        raise BadRequest(f"Unable to parse JSON: {exc}") from None
    doc = parse_json(text, prefix="Unable to parse JSON") if text.strip() else None
    if doc is None:
        return [], None
    if not isinstance(doc, dict):
        raise BadRequest(f"Unable to parse JSON: expected an object, got {type(doc).__name__}")
    raw_caveats = doc.get("caveats")
    if raw_caveats is not None and not isinstance(raw_caveats, list):
        raise BadRequest("Unable to parse JSON: caveats must be a list of strings")
    caveats = [_gson_string(c) for c in raw_caveats or []]
    validity = _gson_string(doc.get("validity"))
    if not all(isinstance(c, str) for c in caveats):
        raise BadRequest("Unable to parse JSON: caveats must be a list of strings")
    if validity is not None and not isinstance(validity, str):
        raise BadRequest("Unable to parse JSON: validity must be a string")
    return [c for c in caveats if isinstance(c, str)], validity


def _activity_caveat(allowed: frozenset[Activity]) -> str | None:
    names = {a.value for a in allowed}
    everything = set(cv.ACTIVITY_NAMES)
    if names == everything or names == everything - {"READ_METADATA"}:
        return None
    if names:
        names.add("READ_METADATA")
    return f"{cv.ACTIVITY}:" + ",".join(a for a in cv.ACTIVITY_NAMES if a in names)


class MacaroonService:
    """Issues macaroons for a logged-in user and turns presented macaroons back into logins."""

    def __init__(
        self,
        secrets: MacaroonSecretStore,
        default_lifetime: timedelta = timedelta(days=1),
        max_lifetime: timedelta = timedelta(days=7),
    ) -> None:
        self._secrets = secrets
        self.default_lifetime = default_lifetime
        self.max_lifetime = max_lifetime

    @staticmethod
    def looks_like_macaroon(token: str) -> bool:
        """Lets the auth layer pass non-macaroon bearer tokens on, like MacaroonLoginStrategy."""
        try:
            deserialize(token)
        except MacaroonFormatError:
            return False
        return True

    # -- verify --

    def login(self, token: str, client_ip: str, now: datetime | None = None) -> Login:
        """The login a macaroon stands for, or :class:`InvalidMacaroon`.

        The bracketed reference is dCache's: ``-:`` plus the first 6 signature bytes in base64
        (``?`` when the token does not even parse), so logs can name a token without leaking it.
        ``client_ip`` is the TCP peer, never X-Forwarded-For, as dCache checks ``ip:`` caveats.
        The returned ``home`` and ``root`` are namespace paths, as dCache's login attributes are.
        """
        current = _utc(now)
        try:
            macaroon = deserialize(token)
        except MacaroonFormatError as exc:
            raise InvalidMacaroon("?", str(exc)) from None
        ref = "-:" + base64.b64encode(macaroon.signature[:6]).decode("ascii")
        secret = self._secrets.find(macaroon.identifier, current)
        if secret is None:
            raise InvalidMacaroon(ref, "Unable to find corresponding secret")
        context = _Context(now=current)
        ip = _IpVerifier(_client_bytes(client_ip))
        chain_intact = True
        try:
            for caveat in macaroon.caveats:
                if caveat.is_third_party:
                    chain_intact = False  # no discharge is ever supplied, so it cannot verify
                    break
                # Both verifiers see every caveat (jmacaroons ORs them without short-circuit).
                accepted = ip.verify(caveat.text)
                accepted = context.verify(caveat.text) or accepted
                chain_intact = chain_intact and accepted
            if not (chain_intact and verify_signature(macaroon, secret)):
                why = " and ".join(e for e in (ip.error, context.error) if e)
                raise InvalidMacaroon(ref, why or None)
            return context.to_login()
        except _Abort as exc:
            raise InvalidMacaroon(ref, str(exc)) from None

    # -- mint --

    def mint(self, login: Login, request_path: str, body: bytes, now: datetime | None = None) -> str:
        """Serialise a macaroon carrying ``login``'s identity and restrictions plus the requested ones.

        Only caveat keys are checked here, as in dCache: a bad value (``activity:FOO``) produces a
        macaroon that later fails to verify, which is what clients of a real dCache observe.
        """
        current = _utc(now)
        if login.anonymous:
            raise NotAuthenticated("Authentication required")
        if login.grants is not None:  # a scoped bearer token: per-path activities fit no macaroon caveat
            raise BadRequest("Cannot serialise restriction MultiTargetedRestriction")
        root = _chroot((), login.root)
        path = self._mint_path(login, root, _chroot((), request_path))
        if login.max_upload is not None and login.max_upload <= 0:
            raise BadRequest(f"Cannot add max-upload: {cv.MAX_UPLOAD} must be a positive value")

        requested, validity = _parse_request(body)
        user_caveats: list[str] = []
        befores: list[str] = []  # replaced by the one computed expiry, as dCache does
        for text in requested:
            try:
                key, value = cv.parse_caveat(text)
            except cv.CaveatError as exc:
                raise BadRequest(f"Bad requested caveat: {exc}") from None
            if key == cv.BEFORE:
                befores.append(value)
            else:
                user_caveats.append(text)
        expiry = self._expiry(login, befores, validity, current)

        stored = self._secrets.secret_expiring_after(expiry, lifetime=self.max_lifetime, now=current)
        location = f"Optional[{_str(path)}]" if path else "Optional.empty"
        gids = login.gids or (login.primary_gid,)
        ordered = [
            f"{cv.IID}:{base64.b64encode(secrets.token_bytes(6)).decode('ascii')}",
            f"{cv.ID}:{login.uid};{','.join(str(g) for g in gids)};{login.username}",
            f"{cv.BEFORE}:{cv.format_instant(expiry)}",
        ]
        if root:
            ordered.append(f"{cv.ROOT}:{_str(root)}")
        home = _resolve((), login.home)
        if home:
            ordered.append(f"{cv.HOME}:{_str(home)}")
        if path:
            ordered.append(f"{cv.PATH}:{_str(path)}")
        if login.max_upload is not None:
            ordered.append(f"{cv.MAX_UPLOAD}:{login.max_upload}")
        activity = _activity_caveat(login.activities)
        if activity is not None:
            ordered.append(activity)
        macaroon = create(stored.secret, stored.identifier, location)
        for text in ordered + user_caveats:
            macaroon = add_first_party_caveat(macaroon, text)
        return serialize(macaroon)

    @staticmethod
    def _mint_path(login: Login, root: Parts, request: Parts) -> Parts:
        """The ``path:`` value relative to root, from the POST path or the existing restriction.

        As in dCache, an existing restriction wins even when the POST names a deeper path: the
        new macaroon is never broader than the login, though not narrowed to the POST path.
        """
        desired = root + request
        prefix: Parts | None = None
        restriction = _chroot((), login.path_restriction or "/")
        # A restriction at or above the root adds nothing (a root-only macaroon login has one).
        if not _has_prefix(root, restriction):
            if request and not _has_prefix(desired, restriction):
                raise BadRequest("Bad request path: Desired path not within existing path")
            prefix = restriction
        elif request:
            prefix = desired
        if prefix is None or _has_prefix(root, prefix):
            return ()
        if not _has_prefix(prefix, root):
            raise BadRequest("Bad request path: Desired path not within existing path")
        return prefix[len(root) :]

    def _expiry(self, login: Login, befores: list[str], validity: str | None, now: datetime) -> datetime:
        candidates: list[datetime] = []
        try:
            if validity is not None:
                candidates.append(now + cv.parse_duration(validity))
            candidates.extend(cv.parse_instant(v) for v in befores)
        except (ValueError, OverflowError) as exc:
            raise BadRequest(f"Bad validity value: {exc}") from None
        maximum = now + self.max_lifetime
        session = None if login.expiry is None else _utc(login.expiry)
        if not candidates:
            if session is not None:
                return session if session < maximum else maximum
            return now + self.default_lifetime
        expiry = min(candidates)
        if not expiry > now:
            raise BadRequest("Bad requested caveat: before: requested expiry in past")
        if not expiry < maximum:
            raise BadRequest(
                "Bad requested caveat: before: requested duration beyond maximum allowed "
                f"({cv.format_duration(self.max_lifetime)})"
            )
        if session is not None and expiry > session:
            raise BadRequest("Bad requested caveat: before: cannot extend session lifetime")
        return expiry
