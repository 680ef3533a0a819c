"""The V1 codec, interoperability with pymacaroons, and the client-side caveat helpers."""

from __future__ import annotations

import base64
import contextlib
import random
import re
from datetime import UTC, datetime, timedelta

import pymacaroons
import pytest

from airflow_dcache.macaroons import caveats as cv
from airflow_dcache.macaroons import codec
from airflow_dcache.macaroons.caveats import CaveatBuilder
from airflow_dcache.macaroons.codec import MacaroonFormatError

SECRET = b"\x01" * 32


def _sample() -> codec.Macaroon:
    m = codec.create(SECRET, "hlCI+ziQ", "Optional.empty")
    for caveat in ("iid:pFM052rS", "id:2002;1001,2002,0;paul", "before:2019-04-17T09:51:22.840Z"):
        m = codec.add_first_party_caveat(m, caveat)
    return m


def _packet(key: bytes, value: bytes) -> bytes:
    return b"%04x%s %s\n" % (4 + len(key) + 1 + len(value) + 1, key, value)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_preserves_every_field() -> None:
    m = _sample()
    token = codec.serialize(m)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token), "URL-safe base64 without padding"
    assert codec.deserialize(token) == m
    assert codec.verify_signature(codec.deserialize(token), SECRET)


def test_signature_depends_on_secret_identifier_and_every_caveat() -> None:
    m = _sample()
    assert not codec.verify_signature(m, b"\x02" * 32)
    tampered = codec.Macaroon(m.location, m.identifier, m.caveats[:-1], m.signature)
    assert not codec.verify_signature(tampered, SECRET)
    renamed = codec.Macaroon(m.location, "hlCI+ziR", m.caveats, m.signature)
    assert not codec.verify_signature(renamed, SECRET)
    flipped = codec.Macaroon(m.location, m.identifier, m.caveats, bytes([m.signature[0] ^ 1]) + m.signature[1:])
    assert not codec.verify_signature(flipped, SECRET)


def test_location_is_not_signed_as_in_every_macaroon_library() -> None:
    m = _sample()
    moved = codec.Macaroon("Optional[/x]", m.identifier, m.caveats, m.signature)
    assert codec.verify_signature(moved, SECRET)


def test_attenuation_needs_no_secret_and_extends_the_chain() -> None:
    m = _sample()
    narrowed = codec.add_first_party_caveat(m, "path:/data")
    assert narrowed.first_party_caveats[-1] == "path:/data"
    assert codec.verify_signature(narrowed, SECRET)
    assert narrowed.signature != m.signature


def test_user_guide_example_layout_decodes() -> None:
    sig = bytes(range(32))
    raw = b"".join([
        b"001clocation Optional.empty\n",
        b"0018identifier hlCI+ziQ\n",
        b"0015cid iid:pFM052rS\n",
        b"0021cid id:2002;1001,2002,0;paul\n",
        b"0028cid before:2019-04-17T09:51:22.840Z\n",
        b"0019cid home:/Users/paul\n",
        b"002fsignature " + sig + b"\n",
    ])
    m = codec.deserialize(_encode(raw))
    assert m.location == "Optional.empty"
    assert m.identifier == "hlCI+ziQ" and len(m.identifier) == 8
    assert m.first_party_caveats == [
        "iid:pFM052rS", "id:2002;1001,2002,0;paul", "before:2019-04-17T09:51:22.840Z", "home:/Users/paul",
    ]
    assert m.signature == sig
    assert base64.urlsafe_b64decode(codec.serialize(m) + "==") == raw, "we write the same bytes back"


def test_padded_and_standard_alphabet_tokens_are_accepted() -> None:
    m = _sample()
    for _ in range(3):  # make sure the sample hits '+' or '/' in standard base64 at least once
        raw = base64.urlsafe_b64decode(codec.serialize(m) + "==")
        if b"+" in base64.b64encode(raw) or b"/" in base64.b64encode(raw):
            break
        m = codec.add_first_party_caveat(m, "path:/x")
    raw = base64.urlsafe_b64decode(codec.serialize(m) + "==")
    assert codec.deserialize(base64.b64encode(raw).decode()) == m
    assert codec.deserialize(base64.urlsafe_b64encode(raw).decode()) == m
    assert codec.deserialize("  " + codec.serialize(m) + "\n") == m


# --- interoperability with pymacaroons ---------------------------------------------------------


def test_our_token_verifies_in_pymacaroons() -> None:
    token = codec.serialize(_sample())
    theirs = pymacaroons.Macaroon.deserialize(token)
    assert theirs.identifier == "hlCI+ziQ"
    assert theirs.caveats[0].caveat_id == "iid:pFM052rS"
    verifier = pymacaroons.Verifier()
    verifier.satisfy_general(lambda _caveat: True)
    assert verifier.verify(theirs, SECRET)
    with pytest.raises(pymacaroons.exceptions.MacaroonInvalidSignatureException):
        verifier.verify(theirs, b"\x02" * 32)


def test_pymacaroons_token_verifies_here() -> None:
    theirs = pymacaroons.Macaroon(location="Optional.empty", identifier="abcdEFGH", key=SECRET)
    theirs.add_first_party_caveat("iid:12345678")
    theirs.add_first_party_caveat("activity:DOWNLOAD")
    m = codec.deserialize(theirs.serialize())
    assert m.first_party_caveats == ["iid:12345678", "activity:DOWNLOAD"]
    assert codec.verify_signature(m, SECRET)
    assert m.signature.hex() == theirs.signature
    assert codec.serialize(m) == theirs.serialize(), "byte-identical serialisation"


def test_attenuation_interoperates_in_both_directions() -> None:
    ours = codec.add_first_party_caveat(_sample(), "path:/a")
    theirs = pymacaroons.Macaroon.deserialize(codec.serialize(ours))
    theirs.add_first_party_caveat("path:/b")
    back = codec.deserialize(theirs.serialize())
    assert back.first_party_caveats[-2:] == ["path:/a", "path:/b"]
    assert codec.verify_signature(back, SECRET)


def test_third_party_caveats_parse_and_keep_the_chain() -> None:
    theirs = pymacaroons.Macaroon(location="here", identifier="abcdEFGH", key=SECRET)
    theirs.add_first_party_caveat("iid:12345678")
    theirs.add_third_party_caveat("https://auth.example", b"\x07" * 32, "who-am-i")
    token = theirs.serialize()
    m = codec.deserialize(token)
    assert m.has_third_party_caveats
    assert m.caveats[1].is_third_party and m.caveats[1].cl == "https://auth.example"
    assert m.first_party_caveats == ["iid:12345678"]
    assert codec.verify_signature(m, SECRET)
    assert codec.serialize(m) == token


# --- malformed input ---------------------------------------------------------------------------

_GOOD_RAW = base64.urlsafe_b64decode(codec.serialize(_sample()) + "==")
_HEAD = _packet(b"location", b"x") + _packet(b"identifier", b"id")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param("", "empty token", id="empty"),
        pytest.param("   ", "empty token", id="blank"),
        pytest.param("abc!def", "unexpected character '!'", id="bang"),
        pytest.param("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "unexpected character '.'", id="jwt"),
        pytest.param("ab=c", "'=' padding inside", id="inner-padding"),
        pytest.param("abcde", "cannot encode whole bytes", id="length-mod-4-is-1"),
        pytest.param("YWJj=", "padding does not complete", id="bad-padding"),
        pytest.param(_encode(b"hello world"), "bad packet length", id="not-packets"),
        pytest.param(_encode(_GOOD_RAW[:-10]), "truncated: packet at offset", id="truncated-signature"),
        pytest.param(_encode(_GOOD_RAW[:2]), "truncated: 2 stray byte(s)", id="truncated-header"),
        pytest.param(_encode(_HEAD), "truncated: missing signature packet", id="no-signature"),
        pytest.param(_encode(_packet(b"identifier", b"id")), "expected location packet", id="no-location"),
        pytest.param(_encode(_HEAD + _packet(b"signature", b"short")), "is 5 bytes, expected 32", id="short-sig"),
        pytest.param(
            _encode(_HEAD + _packet(b"signature", bytes(32)) + _packet(b"cid", b"a:b")),
            "unexpected data after the signature", id="trailing-packet",
        ),
        pytest.param(_encode(_HEAD + _packet(b"bogus", b"1")), "found 'bogus'", id="unknown-key"),
        pytest.param(_encode(_HEAD + _packet(b"vid", b"1")), "found 'vid'", id="vid-without-cid"),
        pytest.param(_encode(b"0004" + _HEAD), "impossible length 4", id="tiny-packet"),
        pytest.param(_encode(b"000dlocation\n" + _HEAD), "no space between key and value", id="no-space"),
        pytest.param(_encode(b"0008ab c" + _HEAD), "does not end with a newline", id="no-newline"),
        pytest.param(_encode(_packet(b"location", b"\xff") + _HEAD), "is not UTF-8", id="bad-utf8"),
    ],
)
def test_malformed_tokens_raise_precise_errors(token: str, message: str) -> None:
    with pytest.raises(MacaroonFormatError, match=re.escape(message)):
        codec.deserialize(token)


def test_non_string_token_is_a_format_error() -> None:
    with pytest.raises(MacaroonFormatError, match="must be a string"):
        codec.deserialize(b"abc")  # type: ignore[arg-type]


def test_every_truncation_and_random_corruption_raises_only_format_errors() -> None:
    token = codec.serialize(_sample())
    rng = random.Random(1234)
    candidates = [token[:n] for n in range(len(token))]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.!"
    for _ in range(500):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        candidates.append("".join(chars))
    candidates += [_encode(rng.randbytes(rng.randint(1, 120))) for _ in range(300)]
    for candidate in candidates:
        with contextlib.suppress(MacaroonFormatError):
            codec.deserialize(candidate)


def test_oversized_packet_cannot_be_serialised() -> None:
    m = codec.add_first_party_caveat(_sample(), "path:/" + "x" * 70000)
    with pytest.raises(MacaroonFormatError, match="exceeds the V1 limit"):
        codec.serialize(m)


# --- caveat vocabulary and client-side builder -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT15M", timedelta(minutes=15)),
        ("PT1H", timedelta(hours=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("pt1.5s", timedelta(seconds=1.5)),
        ("PT-5M", timedelta(minutes=-5)),
        ("-PT5M", timedelta(minutes=-5)),
        ("P2D", timedelta(days=2)),
    ],
    ids=lambda v: str(v),
)
def test_java_duration_syntax(text: str, expected: timedelta) -> None:
    assert cv.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P1W", "P1M", "P1Y", "PT", "P", "15m", "PT15", "P1H", ""])
def test_durations_java_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="Text cannot be parsed to a Duration"):
        cv.parse_duration(text)


def test_duration_formatting_matches_java() -> None:
    assert cv.format_duration(timedelta(days=7)) == "PT168H"
    assert cv.format_duration(timedelta(minutes=15)) == "PT15M"
    assert cv.format_duration(timedelta(hours=1, minutes=30, seconds=1.5)) == "PT1H30M1.5S"
    assert cv.format_duration(timedelta(0)) == "PT0S"


def test_instants_follow_java_instant_parse() -> None:
    assert cv.parse_instant("2024-05-14T10:36:07.512Z") == datetime(2024, 5, 14, 10, 36, 7, 512000, tzinfo=UTC)
    assert cv.parse_instant("2024-05-14T12:36:07+02:00") == datetime(2024, 5, 14, 10, 36, 7, tzinfo=UTC)
    for bad in ("2024-05-14", "2024-05-14T10:36Z", "2024-05-14T10:36:07", "2024-13-01T00:00:00Z", "soon"):
        with pytest.raises(ValueError, match="could not be parsed"):
            cv.parse_instant(bad)
    assert cv.format_instant(datetime(2024, 5, 14, 10, 36, 7, 512999, tzinfo=UTC)) == "2024-05-14T10:36:07.512Z"


def test_parse_caveat_splits_at_first_colon_and_checks_the_key() -> None:
    assert cv.parse_caveat("ip:2001:638:700::/48") == ("ip", "2001:638:700::/48")
    with pytest.raises(cv.CaveatError, match=r"^Missing ':'$"):
        cv.parse_caveat("path")
    with pytest.raises(cv.CaveatError, match=r"^Unknown caveat Path$"):
        cv.parse_caveat("Path:/x")


def test_builder_produces_caveats_and_request_body() -> None:
    b = (
        CaveatBuilder()
        .activities("download", "LIST")
        .path("/data/run1")
        .root("/data")
        .ip("192.0.2.0/24", "2001:638:700::/48")
        .max_upload(1024)
        .before(datetime(2030, 1, 1, tzinfo=UTC))
        .validity(timedelta(minutes=15))
    )
    assert b.build() == [
        "activity:LIST,DOWNLOAD", "path:/data/run1", "root:/data", "ip:192.0.2.0/24,2001:638:700::/48",
        "max-upload:1024", "before:2030-01-01T00:00:00.000Z",
    ]
    assert b.validity_iso == "PT15M"
    assert b.request_body() == {"caveats": b.build(), "validity": "PT15M"}
    now = datetime(2029, 12, 31, 23, 0, tzinfo=UTC)
    assert b.for_attenuation(now)[-1] == "before:2029-12-31T23:15:00.000Z"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        pytest.param(lambda b: b.activities(), "activity", id="no-activity"),
        pytest.param(lambda b: b.activities("FLY"), "activity", id="unknown-activity"),
        pytest.param(lambda b: b.path(""), "path", id="empty-path"),
        pytest.param(lambda b: b.path("/a/../b"), "path", id="dotdot-path"),
        pytest.param(lambda b: b.root("/a\nb"), "root", id="control-root"),
        pytest.param(lambda b: b.ip(), "ip", id="no-subnet"),
        pytest.param(lambda b: b.ip("example.org"), "ip", id="hostname"),
        pytest.param(lambda b: b.ip("10.0.0.0/33"), "ip", id="mask-too-long"),
        pytest.param(lambda b: b.ip("2001:db8::/32"), "ip", id="documentation-prefix"),
        pytest.param(lambda b: b.ip("1.2.3.4,5.6.7.8"), "ip", id="comma-in-one-arg"),
        pytest.param(lambda b: b.before(datetime(2030, 1, 1)), "before", id="naive-before"),
        pytest.param(lambda b: b.validity(timedelta(0)), "validity", id="zero-validity"),
        pytest.param(lambda b: b.max_upload(0), "max-upload", id="zero-upload"),
        pytest.param(lambda b: b.max_upload(True), "max-upload", id="bool-upload"),
    ],
)
def test_builder_rejects_bad_values_naming_the_field(build, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        build(CaveatBuilder())
