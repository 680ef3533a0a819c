"""MacaroonService: dCache's verification rules (table-driven), minting, and secret persistence."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.macaroons import codec
from airflow_dcache.macaroons.caveats import CaveatBuilder
from airflow_dcache.server.services.activity import ALL_ACTIVITIES, Activity
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated
from airflow_dcache.server.services.login import ANONYMOUS, Login
from airflow_dcache.server.services.macaroons import InvalidMacaroon, MacaroonService
from airflow_dcache.server.storage.macaroon_secrets import MacaroonSecretStore

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LATER = "before:2030-01-02T00:00:00.000Z"
IID = "iid:AbCd1234"
ALICE_ID = "id:1000;1000,2001;alice"
BASE = [IID, ALICE_ID, LATER]
CLIENT = "192.0.2.7"

ALICE = Login(uid=1000, gids=(1000, 2001), username="alice", home="/home/alice")

A = Activity


@pytest.fixture
def store(tmp_path: Path) -> MacaroonSecretStore:
    return MacaroonSecretStore(tmp_path / "secrets" / "macaroons.json")


@pytest.fixture
def service(store: MacaroonSecretStore) -> MacaroonService:
    return MacaroonService(store)


def issue(store: MacaroonSecretStore, caveats: list[str]) -> str:
    """A macaroon signed with a real server secret but with caveats the test chooses."""
    secret = store.secret_expiring_after(NOW + timedelta(days=2), lifetime=timedelta(days=7), now=NOW)
    m = codec.create(secret.secret, secret.identifier, "Optional.empty")
    for caveat in caveats:
        m = codec.add_first_party_caveat(m, caveat)
    return codec.serialize(m)


def attenuate(token: str, *caveats: str) -> str:
    """What a client does locally: add caveats with the codec, no secret involved."""
    m = codec.deserialize(token)
    for caveat in caveats:
        m = codec.add_first_party_caveat(m, caveat)
    return codec.serialize(m)


def acts(*names: Activity) -> frozenset[Activity]:
    return frozenset(names)


# --- table-driven verification -----------------------------------------------------------------

OK: dict[str, Any] = {}

CASES = [
    # (id, caveats, client, expected Login fields | the "why" of the error)
    ("plain", BASE, CLIENT, {"uid": 1000, "gids": (1000, 2001), "username": "alice", "root": "/",
                             "path_restriction": None, "activities": ALL_ACTIVITIES, "home": "/",
                             "macaroon_iid": "AbCd1234", "admin": False,
                             "expiry": datetime(2030, 1, 2, tzinfo=UTC)}),
    ("no-iid-is-accepted-like-dcache", [ALICE_ID, LATER], CLIENT, {"macaroon_iid": None}),
    ("iid-not-first", [ALICE_ID, IID, LATER], CLIENT, "iid not first caveat: iid:AbCd1234"),
    ("iid-duplicate", [*BASE, "iid:other"], CLIENT, "Multiple iid: iid:other"),
    ("ip-before-iid-does-not-count", ["ip:192.0.2.0/24", *BASE], CLIENT, {"macaroon_iid": "AbCd1234"}),
    ("id-missing", [IID, LATER], CLIENT, "uid not specified"),
    ("id-duplicate", [*BASE, "id:0;0;root"], CLIENT, "uid is already set"),
    ("id-username-empty", [IID, "id:1000;1000; ", LATER], CLIENT, "empty username not allowed: id:1000;1000; "),
    ("id-missing-elements", [IID, "id:1000;1000", LATER], CLIENT, "Missing elements: id:1000;1000"),
    ("id-bad-uid", [IID, "id:x;1;a", LATER], CLIENT, 'Badly formatted uid: For input string: "x": id:x;1;a'),
    ("id-bad-gid", [IID, "id:1;1,,2;a", LATER], CLIENT, 'Badly formatted gid: For input string: "": id:1;1,,2;a'),
    ("id-negative-uid", [IID, "id:-1;1;a", LATER], CLIENT, "invalid uid value"),
    ("id-username-may-contain-semicolon", [IID, "id:1;2;a;b", LATER], CLIENT, {"username": "a;b"}),
    ("before-expired", [IID, ALICE_ID, "before:2030-01-01T11:59:59.999Z"], CLIENT,
     "expired: before:2030-01-01T11:59:59.999Z"),
    ("before-earliest-applies", [*BASE, "before:2030-01-01T13:00:00Z", "before:2030-01-01T14:00:00Z"], CLIENT,
     {"expiry": datetime(2030, 1, 1, 13, tzinfo=UTC)}),
    ("before-offset-is-converted", [*BASE, "before:2030-01-01T15:00:00+02:00"], CLIENT,
     {"expiry": datetime(2030, 1, 1, 13, tzinfo=UTC)}),
    ("before-garbage", [*BASE, "before:tomorrow"], CLIENT,
     "Bad ISO 8601 timestamp: Text 'tomorrow' could not be parsed: before:tomorrow"),
    ("unknown-key", [*BASE, "foo:bar"], CLIENT, "Unknown caveat foo and Unknown caveat foo: foo:bar"),
    ("missing-colon", [*BASE, "nocolon"], CLIENT, "Missing ':' and Missing ':': nocolon"),
    ("activity-implies-read-metadata", [*BASE, "activity:DOWNLOAD"], CLIENT,
     {"activities": acts(A.DOWNLOAD, A.READ_METADATA)}),
    ("activity-narrowing", [*BASE, "activity:DOWNLOAD,LIST,UPLOAD", "activity:LIST"], CLIENT,
     {"activities": acts(A.LIST, A.READ_METADATA)}),
    ("activity-escalation", [*BASE, "activity:DOWNLOAD", "activity:DOWNLOAD,UPLOAD"], CLIENT,
     "attempt to enlarge activity set: activity:DOWNLOAD,UPLOAD"),
    ("activity-implied-read-metadata-is-not-grantable-later", [*BASE, "activity:DOWNLOAD",
     "activity:DOWNLOAD,READ_METADATA"], CLIENT, "attempt to enlarge activity set: activity:DOWNLOAD,READ_METADATA"),
    ("activity-unknown", [*BASE, "activity:FOO"], CLIENT,
     "Bad activity value: No enum constant org.dcache.auth.attributes.Activity.FOO: activity:FOO"),
    ("activity-case-sensitive", [*BASE, "activity:download"], CLIENT,
     "Bad activity value: No enum constant org.dcache.auth.attributes.Activity.download: activity:download"),
    ("activity-empty", [*BASE, "activity:"], CLIENT,
     "Bad activity value: No enum constant org.dcache.auth.attributes.Activity.: activity:"),
    ("activity-spaces-trimmed", [*BASE, "activity: LIST , DOWNLOAD"], CLIENT,
     {"activities": acts(A.LIST, A.DOWNLOAD, A.READ_METADATA)}),
    ("activity-all-but-read-metadata-is-all", [*BASE,
     "activity:LIST,DOWNLOAD,MANAGE,UPLOAD,DELETE,UPDATE_METADATA,STAGE"], CLIENT, {"activities": ALL_ACTIVITIES}),
    ("path-alone", [*BASE, "path:/data/run1"], CLIENT, {"path_restriction": "/data/run1", "root": "/"}),
    ("path-chained", [*BASE, "path:/data", "path:run1"], CLIENT, {"path_restriction": "/data/run1"}),
    ("path-widening-stays-narrow", [*BASE, "path:/data/run1", "path:/"], CLIENT, {"path_restriction": "/data/run1"}),
    ("path-absolute-second-is-relative", [*BASE, "path:/data", "path:/etc"], CLIENT,
     {"path_restriction": "/data/etc"}),
    ("path-dotdot-cannot-escape", [*BASE, "path:/data", "path:../../etc/passwd"], CLIENT,
     {"path_restriction": "/data/etc/passwd"}),
    ("root-alone-restricts-visibility", [*BASE, "root:/data"], CLIENT, {"root": "/data", "path_restriction": "/data"}),
    ("root-chained", [*BASE, "root:/data", "root:/run1"], CLIENT, {"root": "/data/run1"}),
    ("root-dotdot-cannot-escape", [*BASE, "root:/data", "root:/../etc"], CLIENT, {"root": "/data/etc"}),
    ("root-then-path", [*BASE, "root:/data", "path:/run1"], CLIENT,
     {"root": "/data", "path_restriction": "/data/run1"}),
    ("root-inside-path-rewrites-path", [*BASE, "path:/data/run1", "root:/data"], CLIENT,
     {"root": "/data", "path_restriction": "/data/run1"}),
    ("root-below-path-drops-path", [*BASE, "path:/data", "root:/data/run1/x"], CLIENT,
     {"root": "/data/run1/x", "path_restriction": "/data/run1/x"}),
    ("root-outside-path", [*BASE, "path:/data", "root:/home"], CLIENT, "root extends outside of path: root:/home"),
    ("home-resolved-against-root", [*BASE, "root:/data", "home:alice"], CLIENT, {"home": "/data/alice"}),
    ("home-last-wins", [*BASE, "home:/home/alice", "home:/home/bob"], CLIENT, {"home": "/home/bob"}),
    ("ip-match", [*BASE, "ip:192.0.2.0/24"], CLIENT, OK),
    ("ip-no-match", [*BASE, "ip:10.0.0.0/8"], CLIENT, "Client fails to match IP caveat ip:10.0.0.0/8"),
    ("ip-or-within-one-caveat", [*BASE, "ip:10.0.0.0/8, 192.0.2.0/24"], CLIENT, OK),
    ("ip-and-across-caveats", [*BASE, "ip:10.0.0.0/8", "ip:192.0.2.0/24"], CLIENT,
     "Client fails to match IP caveat ip:10.0.0.0/8"),
    ("ip-and-both-satisfied", [*BASE, "ip:192.0.0.0/8", "ip:192.0.2.7"], CLIENT, OK),
    ("ip-bad-subnet", [*BASE, "ip:192.0.2.0/24,not-an-ip"], CLIENT, "Invalid subnets: [not-an-ip]"),
    ("ip-mask-too-long", [*BASE, "ip:192.0.2.0/33"], CLIENT, "Invalid subnets: [192.0.2.0/33]"),
    ("ip-empty", [*BASE, "ip:"], CLIENT, "Client fails to match IP caveat ip:"),
    ("ip-dotted-netmask", [*BASE, "ip:192.0.0.0/255.255.0.0"], CLIENT, OK),
    ("ipv6-match", [*BASE, "ip:2001:638:700::/48"], "2001:638:700::1", OK),
    ("ipv6-subnet-ipv4-client", [*BASE, "ip:2001:638:700::/48"], CLIENT,
     "Client fails to match IP caveat ip:2001:638:700::/48"),
    ("ipv6-documentation-prefix-invalid", [*BASE, "ip:2001:db8::/32"], "2001:db8::1",
     "Invalid subnets: [2001:db8::/32]"),
    ("ipv4-mapped-client", [*BASE, "ip:192.0.2.0/24"], "::ffff:192.0.2.7", OK),
    ("ip-unknown-client", [*BASE, "ip:192.0.2.0/24"], "unix-socket", "client has unknown address"),
    ("max-upload-minimum", [*BASE, "max-upload:1000", "max-upload:100", "max-upload:500"], CLIENT,
     {"max_upload": 100}),
    ("max-upload-zero", [*BASE, "max-upload:0"], CLIENT, "max-upload must be a positive value: max-upload:0"),
    ("max-upload-garbage", [*BASE, "max-upload:1e3"], CLIENT,
     'Bad max-upload: For input string: "1e3": max-upload:1e3'),
    ("combined", [*BASE, "root:/data", "home:/data/alice", "path:/run1", "max-upload:10", "activity:DOWNLOAD,LIST",
                  "ip:192.0.2.0/24", "activity:DOWNLOAD"], CLIENT,
     {"root": "/data", "home": "/data/alice", "path_restriction": "/data/run1", "max_upload": 10,
      "activities": acts(A.DOWNLOAD, A.READ_METADATA)}),
]


@pytest.mark.parametrize(("caveats", "client", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_verification_rules(
    service: MacaroonService, store: MacaroonSecretStore, caveats: list[str], client: str, expected: Any
) -> None:
    token = issue(store, caveats)
    if isinstance(expected, str):
        with pytest.raises(InvalidMacaroon) as err:
            service.login(token, client, NOW)
        assert isinstance(err.value, NotAuthenticated)
        assert re.fullmatch(r"Invalid macaroon \[-:[A-Za-z0-9+/]{8}\]: (.*)", err.value.message)
        assert err.value.message.split("]: ", 1)[1] == expected
    else:
        login = service.login(token, client, NOW)
        for name, value in expected.items():
            assert getattr(login, name) == value, name


def _flip_last_byte(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[-2] ^= 0x01  # inside the signature, before the trailing newline
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def _edit_caveat(token: str) -> str:
    raw = base64.urlsafe_b64decode(token + "==").replace(b"path:/data/run1", b"path:/data/run2")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _other_secret(token: str) -> str:
    m = codec.deserialize(token)
    forged = codec.create(b"\x00" * 32, m.identifier, m.location)
    for caveat in m.first_party_caveats:
        forged = codec.add_first_party_caveat(forged, caveat)
    return codec.serialize(forged)


def _unknown_identifier(token: str) -> str:
    m = codec.deserialize(token)
    return codec.serialize(codec.Macaroon(m.location, "AAAAAAAA", m.caveats, m.signature))


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        pytest.param(_flip_last_byte, None, id="tampered-signature"),
        pytest.param(_edit_caveat, None, id="tampered-caveat-text"),
        pytest.param(lambda t: t[: len(t) // 2], "truncated", id="truncated-token"),
        pytest.param(lambda t: "garbage!", "not base64", id="garbage-token"),
        pytest.param(_other_secret, None, id="wrong-secret"),
        pytest.param(_unknown_identifier, "Unable to find corresponding secret", id="unknown-identifier"),
    ],
)
def test_forged_and_broken_tokens_are_refused(
    service: MacaroonService, store: MacaroonSecretStore, mutate: Any, why: str | None
) -> None:
    token = issue(store, [*BASE, "path:/data/run1"])
    assert service.login(token, CLIENT, NOW).path_restriction == "/data/run1"
    with pytest.raises(InvalidMacaroon) as err:
        service.login(mutate(token), CLIENT, NOW)
    assert err.value.message.startswith("Invalid macaroon [")
    if why is None:  # dCache adds no reason when only the HMAC chain is wrong
        assert re.fullmatch(r"Invalid macaroon \[-:[A-Za-z0-9+/]{8}\]", err.value.message)
    else:
        assert why in err.value.message


def test_third_party_caveat_is_refused_even_with_a_valid_chain(
    service: MacaroonService, store: MacaroonSecretStore
) -> None:
    secret = store.secret_expiring_after(NOW + timedelta(days=2), lifetime=timedelta(days=7), now=NOW)
    m = codec.deserialize(issue(store, BASE))
    cid, vid = b"who-am-i", b"\x01" * 72
    sig = m.signature
    bound = hmac.new(sig, _hmac(sig, vid) + _hmac(sig, cid), hashlib.sha256).digest()
    extra = codec.CaveatPacket(cid=cid, vid=vid, cl="https://auth.example")
    third = codec.Macaroon(m.location, m.identifier, (*m.caveats, extra), bound)
    assert codec.verify_signature(third, secret.secret), "the chain itself is intact"
    with pytest.raises(InvalidMacaroon, match=r"^Invalid macaroon \[-:[A-Za-z0-9+/]{8}\]$"):
        service.login(codec.serialize(third), CLIENT, NOW)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def test_corrupted_tokens_only_ever_raise_invalid_macaroon(
    service: MacaroonService, store: MacaroonSecretStore
) -> None:
    token = issue(store, [*BASE, "path:/data", "ip:192.0.2.0/24", "activity:LIST", "max-upload:9"])
    rng = random.Random(99)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for n in range(300):
        chars = list(token)
        for _ in range(1 + n % 3):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        candidate = "".join(chars)[: len(token) - (n % 7)]
        try:
            login = service.login(candidate, CLIENT, NOW)
        except InvalidMacaroon:
            continue
        assert login.path_restriction == "/data", "only an unchanged token may verify"


def test_unparsable_token_is_reported_with_question_mark(service: MacaroonService) -> None:
    with pytest.raises(InvalidMacaroon, match=r"^Invalid macaroon \[\?\]: empty token$"):
        service.login("", CLIENT, NOW)


def test_looks_like_macaroon(store: MacaroonSecretStore) -> None:
    assert MacaroonService.looks_like_macaroon(issue(store, BASE))
    assert not MacaroonService.looks_like_macaroon("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
    assert not MacaroonService.looks_like_macaroon("")
    assert not MacaroonService.looks_like_macaroon("dGhpcyBpcyBub3QgYSBtYWNhcm9vbg")


# --- client-side attenuation -------------------------------------------------------------------


def test_client_attenuation_narrows_but_cannot_broaden(service: MacaroonService) -> None:
    body = json.dumps({"caveats": ["activity:DOWNLOAD,LIST,UPLOAD"]}).encode()
    token = service.mint(ALICE, "/data", body, NOW)

    narrower = CaveatBuilder().activities("DOWNLOAD").path("run1").ip("192.0.2.0/24").build()
    login = service.login(attenuate(token, *narrower), CLIENT, NOW)
    assert login.path_restriction == "/data/run1"
    assert login.activities == acts(A.DOWNLOAD, A.READ_METADATA)

    with pytest.raises(InvalidMacaroon, match="attempt to enlarge activity set"):
        service.login(attenuate(token, "activity:DOWNLOAD,DELETE"), CLIENT, NOW)
    assert service.login(attenuate(token, "path:/"), CLIENT, NOW).path_restriction == "/data"
    assert service.login(attenuate(token, "path:/../../etc"), CLIENT, NOW).path_restriction == "/data/etc"
    with pytest.raises(InvalidMacaroon, match="root extends outside of path"):
        service.login(attenuate(token, "root:/home"), CLIENT, NOW)

    later = attenuate(token, "before:2030-06-01T00:00:00Z")
    assert service.login(later, CLIENT, NOW).expiry == NOW + timedelta(days=1), "earliest before wins"
    sooner = attenuate(token, *CaveatBuilder().validity(timedelta(minutes=5)).for_attenuation(NOW))
    assert service.login(sooner, CLIENT, NOW).expiry == NOW + timedelta(minutes=5)
    with pytest.raises(InvalidMacaroon, match="expired"):
        service.login(sooner, CLIENT, NOW + timedelta(minutes=6))


# --- minting -----------------------------------------------------------------------------------


def _caveats(token: str) -> list[str]:
    return codec.deserialize(token).first_party_caveats


def test_mint_caveat_order_and_location(service: MacaroonService) -> None:
    login = Login(uid=1002, gids=(1002, 3000), username="carol", home="/home/carol/work", root="/home/carol",
                  max_upload=4096, activities=acts(A.DOWNLOAD, A.LIST, A.UPLOAD))
    body = b'{"caveats": ["ip:192.0.2.0/24", "before:2030-01-01T13:00:00Z"], "validity": "PT2H"}'
    token = service.mint(login, "/inbox", body, NOW)
    caveats = _caveats(token)
    assert re.fullmatch(r"iid:[A-Za-z0-9+/]{8}", caveats[0])
    assert caveats[1:] == [
        "id:1002;1002,3000;carol",
        "before:2030-01-01T13:00:00.000Z",
        "root:/home/carol",
        "home:/home/carol/work",
        "path:/inbox",
        "max-upload:4096",
        "activity:LIST,DOWNLOAD,UPLOAD,READ_METADATA",
        "ip:192.0.2.0/24",
    ]
    m = codec.deserialize(token)
    assert m.location == "Optional[/inbox]"
    assert re.fullmatch(r"[A-Za-z0-9+/]{8}", m.identifier)
    login2 = service.login(token, CLIENT, NOW)
    assert login2.root == "/home/carol"
    assert login2.path_restriction == "/home/carol/inbox"
    assert login2.home == "/home/carol/work"
    assert login2.max_upload == 4096 and login2.expiry == datetime(2030, 1, 1, 13, tzinfo=UTC)


def test_mint_minimal_password_login(service: MacaroonService) -> None:
    login = Login(uid=0, gids=(0,), username="admin")
    token = service.mint(login, "/", b"", NOW)
    assert _caveats(token)[1:] == ["id:0;0;admin", "before:2030-01-02T12:00:00.000Z"]
    assert codec.deserialize(token).location == "Optional.empty"
    assert service.login(token, CLIENT, NOW).activities == ALL_ACTIVITIES


@pytest.mark.parametrize(
    ("body", "expiry"),
    [
        pytest.param(b"", NOW + timedelta(days=1), id="default-lifetime"),
        pytest.param(b"null", NOW + timedelta(days=1), id="json-null"),
        pytest.param(b'{"validity": "PT15M"}', NOW + timedelta(minutes=15), id="validity"),
        pytest.param(b'{"validity": "P1DT12H"}', NOW + timedelta(days=1, hours=12), id="validity-days"),
        pytest.param(b'{"caveats": ["before:2030-01-01T12:05:00.123456Z"], "validity": "PT15M"}',
                     NOW + timedelta(minutes=5, milliseconds=123), id="earliest-wins-millis"),
    ],
)
def test_mint_expiry(service: MacaroonService, body: bytes, expiry: datetime) -> None:
    token = service.mint(ALICE, "/", body, NOW)
    befores = [c for c in _caveats(token) if c.startswith("before:")]
    assert len(befores) == 1, "the user's before caveats are replaced by the computed one"
    assert service.login(token, CLIENT, NOW).expiry == expiry


def test_mint_uses_session_expiry_capped_at_maximum(service: MacaroonService) -> None:
    short = Login(uid=1, gids=(1,), username="u", expiry=NOW + timedelta(hours=3))
    assert service.login(service.mint(short, "/", b"", NOW), CLIENT, NOW).expiry == NOW + timedelta(hours=3)
    long = Login(uid=1, gids=(1,), username="u", expiry=NOW + timedelta(days=30))
    assert service.login(service.mint(long, "/", b"", NOW), CLIENT, NOW).expiry == NOW + timedelta(days=7)


@pytest.mark.parametrize(
    ("login", "path", "body", "message"),
    [
        pytest.param(ALICE, "/", b'{"validity": "PT-5M"}',
                     "Bad requested caveat: before: requested expiry in past", id="validity-negative"),
        pytest.param(ALICE, "/", b'{"caveats": ["before:2029-01-01T00:00:00Z"]}',
                     "Bad requested caveat: before: requested expiry in past", id="before-in-past"),
        pytest.param(ALICE, "/", b'{"validity": "P8D"}',
                     "Bad requested caveat: before: requested duration beyond maximum allowed (PT168H)",
                     id="beyond-maximum"),
        pytest.param(ALICE, "/", b'{"validity": "P7D"}',
                     "Bad requested caveat: before: requested duration beyond maximum allowed (PT168H)",
                     id="exactly-maximum"),
        pytest.param(Login(uid=1, gids=(1,), username="u", expiry=NOW + timedelta(hours=1)), "/",
                     b'{"validity": "PT2H"}', "Bad requested caveat: before: cannot extend session lifetime",
                     id="extend-session"),
        pytest.param(ALICE, "/", b'{"caveats": ["activity"]}', "Bad requested caveat: Missing ':'",
                     id="missing-colon"),
        pytest.param(ALICE, "/", b'{"caveats": ["foo:bar"]}', "Bad requested caveat: Unknown caveat foo",
                     id="unknown-caveat"),
        pytest.param(ALICE, "/", b'{"validity": "P1W"}',
                     "Bad validity value: Text cannot be parsed to a Duration", id="validity-weeks"),
        pytest.param(ALICE, "/", b'{"validity": "P1M"}',
                     "Bad validity value: Text cannot be parsed to a Duration", id="validity-months"),
        pytest.param(ALICE, "/", b'{"validity": "P1Y"}',
                     "Bad validity value: Text cannot be parsed to a Duration", id="validity-years"),
        pytest.param(ALICE, "/", b'{"caveats": ["before:soon"]}',
                     "Bad validity value: Text 'soon' could not be parsed", id="before-unparsable"),
        pytest.param(ALICE, "/", b"{not json", "Unable to parse JSON: ", id="bad-json"),
        pytest.param(ALICE, "/", b'["activity:LIST"]', "Unable to parse JSON: ", id="json-array"),
        pytest.param(ALICE, "/", b'{"caveats": "activity:LIST"}', "Unable to parse JSON: ", id="caveats-not-list"),
        pytest.param(ALICE, "/", b"\xff\xfe", "Unable to parse JSON: ", id="not-utf8"),
        pytest.param(ALICE, "/", b'{"caveats": ""}', "Unable to parse JSON: ", id="caveats-empty-string"),
        pytest.param(ALICE, "/", b'{"validity": 15}', "Bad validity value: Text cannot be parsed to a Duration",
                     id="validity-number-read-as-text"),
        pytest.param(ALICE, "/", b'{"validity": {"minutes": 15}}', "Unable to parse JSON: ", id="validity-object"),
        pytest.param(ALICE, "/", b'{"caveats": [null]}', "Unable to parse JSON: ", id="caveat-null"),
        pytest.param(ALICE, "/", b'{"validity": "PT' + b"9" * 5000 + b'S"}',
                     "Bad validity value: Text cannot be parsed to a Duration", id="validity-huge"),
        pytest.param(Login(uid=1, gids=(1,), username="u", path_restriction="/data/a"), "/data/b", b"",
                     "Bad request path: Desired path not within existing path", id="outside-restriction"),
        pytest.param(Login(uid=1, gids=(1,), username="u", path_restriction="/data/a"), "/data", b"",
                     "Bad request path: Desired path not within existing path", id="ancestor-of-restriction"),
    ],
)
def test_mint_errors(service: MacaroonService, login: Login, path: str, body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        service.mint(login, path, body, NOW)
    if message.endswith(": "):
        assert err.value.message.startswith(message)
    else:
        assert err.value.message == message


def test_mint_checks_keys_not_values(service: MacaroonService) -> None:
    token = service.mint(ALICE, "/", b'{"caveats": ["activity:FOO", "ip:nonsense"]}', NOW)
    with pytest.raises(InvalidMacaroon, match="Invalid subnets: \\[nonsense\\] and Bad activity value"):
        service.login(token, CLIENT, NOW)


def test_mint_refuses_anonymous(service: MacaroonService) -> None:
    with pytest.raises(NotAuthenticated, match="Authentication required"):
        service.mint(ANONYMOUS, "/", b"", NOW)


def test_server_side_attenuation_of_a_macaroon_login(service: MacaroonService) -> None:
    first = service.mint(ALICE, "/data", b'{"caveats": ["activity:DOWNLOAD,LIST"], "validity": "PT1H"}', NOW)
    via_macaroon = service.login(first, CLIENT, NOW)

    second = service.mint(via_macaroon, "/", b'{"caveats": ["activity:DOWNLOAD"]}', NOW)
    caveats = _caveats(second)
    assert caveats[1:] == [
        "id:1000;1000,2001;alice", "before:2030-01-01T13:00:00.000Z", "home:/home/alice", "path:/data",
        "activity:LIST,DOWNLOAD,READ_METADATA", "activity:DOWNLOAD",
    ]
    login = service.login(second, CLIENT, NOW)
    assert login.path_restriction == "/data"
    assert login.activities == acts(A.DOWNLOAD, A.READ_METADATA)
    assert login.expiry == NOW + timedelta(hours=1), "inherits the session expiry"

    # dCache keeps the existing restriction even for a deeper POST path; never broader.
    deeper = service.login(service.mint(via_macaroon, "/data/run1", b"", NOW), CLIENT, NOW)
    assert deeper.path_restriction == "/data"
    with pytest.raises(BadRequest, match="Desired path not within existing path"):
        service.mint(via_macaroon, "/home", b"", NOW)
    with pytest.raises(BadRequest, match="cannot extend session lifetime"):
        service.mint(via_macaroon, "/", b'{"validity": "PT2H"}', NOW)

    # Asking the server for more activities mints, but the result never verifies.
    broader = service.mint(via_macaroon, "/", b'{"caveats": ["activity:UPLOAD"]}', NOW)
    with pytest.raises(InvalidMacaroon, match="attempt to enlarge activity set: activity:UPLOAD"):
        service.login(broader, CLIENT, NOW)


def test_root_login_attenuation_keeps_root(service: MacaroonService) -> None:
    carol = Login(uid=1002, gids=(1002,), username="carol", root="/home/carol")
    via_macaroon = service.login(service.mint(carol, "/", b"", NOW), CLIENT, NOW)
    assert (via_macaroon.root, via_macaroon.path_restriction) == ("/home/carol", "/home/carol")
    again = service.mint(via_macaroon, "/", b"", NOW)
    assert [c for c in _caveats(again) if c.startswith(("root:", "path:"))] == ["root:/home/carol"]
    inbox = service.mint(via_macaroon, "/inbox", b"", NOW)
    assert [c for c in _caveats(inbox) if c.startswith(("root:", "path:"))] == ["root:/home/carol", "path:/inbox"]
    assert service.login(inbox, CLIENT, NOW).path_restriction == "/home/carol/inbox"


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_survive_a_new_store_instance(tmp_path: Path) -> None:
    path = tmp_path / "macaroons.json"
    token = MacaroonService(MacaroonSecretStore(path)).mint(ALICE, "/data", b"", NOW)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["macaroons.json"], "no temp files left behind"
    restarted = MacaroonService(MacaroonSecretStore(path))
    assert restarted.login(token, CLIENT, NOW).path_restriction == "/data"


def test_secret_reuse_rotation_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "macaroons.json"
    store = MacaroonSecretStore(path)
    week = timedelta(days=7)
    first = store.secret_expiring_after(NOW + timedelta(hours=1), lifetime=week, now=NOW)
    assert first.expiry == NOW + week
    assert first.identifier == base64.b64encode(hashlib.sha256(first.secret).digest()[:6]).decode()
    reused = store.secret_expiring_after(NOW + timedelta(days=6), lifetime=week, now=NOW + timedelta(hours=1))
    assert reused.identifier == first.identifier
    rotated = store.secret_expiring_after(NOW + timedelta(days=8), lifetime=week, now=NOW + timedelta(days=2))
    assert rotated.identifier != first.identifier
    assert store.find(first.identifier, NOW + timedelta(days=6)) == first.secret
    assert store.find(first.identifier, NOW + timedelta(days=7, seconds=1)) is None
    saved = json.loads(path.read_text())["secrets"]
    assert [s["identifier"] for s in saved] == [rotated.identifier], "expired secret removed from disk"


def test_corrupt_secret_file_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    path = tmp_path / "macaroons.json"
    path.write_text("{nope")
    with pytest.raises(RuntimeError, match="cannot read macaroon secrets"):
        MacaroonSecretStore(path)
