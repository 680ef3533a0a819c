"""What pymacaroons 0.13 gets right and wrong for dCache's V1 tokens, and how ``parse_token`` closes the gaps.

Right: every well-formed token dCache writes (the User Guide's example layout included) reads and
re-serialises byte for byte, and attenuation by pymacaroons verifies in our codec. Wrong: its V1 parser
accepts damaged tokens (a truncated or missing signature, caveats after the signature), raises
``IndexError`` or a late ``UnicodeDecodeError`` on others, and its V1 writer turns a third-party caveat
without a location into a first-party one. Each case below asserts pymacaroons' own behaviour (so a
fixed release shows up here) and that :func:`airflow_dcache.macaroons.tokens.parse_token` refuses it.
"""

from __future__ import annotations

import base64

import pymacaroons
import pytest

from airflow_dcache.macaroons import codec
from airflow_dcache.macaroons.tokens import parse_token

SECRET = b"\x01" * 32


def _packet(key: bytes, value: bytes) -> bytes:
    return b"%04x%s %s\n" % (4 + len(key) + 1 + len(value) + 1, key, value)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dcache_like() -> str:
    m = codec.create(SECRET, "hlCI+ziQ", "Optional.empty")
    for caveat in ("iid:pFM052rS", "id:2002;1001,2002,0;paul", "before:2019-04-17T09:51:22.840Z", "home:/Users/paul"):
        m = codec.add_first_party_caveat(m, caveat)
    return codec.serialize(m)


_HEAD = _packet(b"location", b"Optional.empty") + _packet(b"identifier", b"hlCI+ziQ")
_RAW = base64.urlsafe_b64decode(_dcache_like() + "==")


def test_well_formed_dcache_tokens_are_read_exactly() -> None:
    token = _dcache_like()
    theirs = parse_token(token)
    assert theirs.location == "Optional.empty" and theirs.identifier == "hlCI+ziQ"
    assert [c.caveat_id for c in theirs.caveats][-1] == "home:/Users/paul"
    assert theirs.serialize() == token
    assert parse_token(base64.b64encode(_RAW).decode()).serialize() == token, "standard alphabet, padded"
    assert parse_token(f"  {token}\n").serialize() == token, "whitespace around the token is ignored"


@pytest.mark.parametrize(
    ("token", "pymacaroons_does", "we_say"),
    [
        pytest.param(_encode(_RAW[:-10]), "accepts", "not 32 bytes", id="truncated-signature"),
        pytest.param(_encode(_HEAD), "accepts", "signature missing", id="no-signature"),
        pytest.param(_encode(_HEAD + _packet(b"signature", b"short")), "accepts", "not 32 bytes", id="short-signature"),
        pytest.param(
            _encode(_HEAD + _packet(b"signature", bytes(32)) + _packet(b"cid", b"path:/")),
            "accepts", "re-serialise", id="caveat-after-signature",
        ),
        pytest.param(_encode(_HEAD + _packet(b"vid", b"x")), IndexError, "not a macaroon", id="vid-before-cid"),
        pytest.param(
            _encode(_HEAD + _packet(b"cid", b"path:/\xff") + _packet(b"signature", bytes(32))),
            "accepts", "not UTF-8", id="non-utf8-caveat",
        ),
    ],
)
def test_pymacaroons_is_lax_where_parse_token_is_not(token: str, pymacaroons_does: object, we_say: str) -> None:
    if pymacaroons_does == "accepts":
        pymacaroons.Macaroon.deserialize(token)  # no error: a damaged token looks like a macaroon
    else:
        with pytest.raises(pymacaroons_does):  # type: ignore[call-overload]
            pymacaroons.Macaroon.deserialize(token)
    with pytest.raises(ValueError, match=f"^macaroon: .*{we_say}"):
        parse_token(token)
    if "UTF-8" in we_say:  # jmacaroons (and so our server codec) decode it with U+FFFD instead
        assert "\ufffd" in codec.deserialize(token).first_party_caveats[0]
    else:
        with pytest.raises(codec.MacaroonFormatError):
            codec.deserialize(token)  # the server's strict codec refuses the others too


def test_non_utf8_caveat_fails_only_when_read() -> None:
    token = _encode(_HEAD + _packet(b"cid", b"path:/\xff") + _packet(b"signature", bytes(32)))
    theirs = pymacaroons.Macaroon.deserialize(token)
    with pytest.raises(UnicodeDecodeError):
        _ = theirs.caveats[0].caveat_id


def test_v1_writer_drops_a_third_party_caveat_without_location() -> None:
    theirs = pymacaroons.Macaroon(location="", identifier="abcdEFGH", key=SECRET)
    theirs.add_third_party_caveat("", b"\x07" * 32, "who-am-i")
    assert not theirs.caveats[0].first_party()
    assert pymacaroons.Macaroon.deserialize(theirs.serialize()).caveats[0].first_party(), "silently first-party"


@pytest.mark.parametrize("token", ["", "   ", "abc!def", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "YWJj=", 42])
def test_garbage_is_a_value_error_naming_the_field(token: object) -> None:
    with pytest.raises(ValueError, match=r"^macaroon: "):
        parse_token(token)  # type: ignore[arg-type]


def test_v2_tokens_are_refused_because_dcache_writes_v1() -> None:
    theirs = pymacaroons.Macaroon(location="x", identifier="abcdEFGH", key=SECRET, version=pymacaroons.MACAROON_V2)
    with pytest.raises(ValueError, match="V1"):
        parse_token(theirs.serialize())
