"""Checksum negotiation on the wire: RFC 3230 ``Want-Digest``/``Digest`` and RFC 9530 ``Want-Repr-Digest``.

dCache answers with the checksums a file already has (it does not compute one on a read), breaks
ties strongest first, and lets ``Want-Repr-Digest`` win when a request carries both headers. On an
upload the same headers choose which checksums the pool computes besides adler32.

Which request headers are answered is a server-wide setting (``--digest-headers``): ``both`` (dCache
12.0+, the default), ``rfc3230`` (dCache before 12.0, which ignores ``Want-Repr-Digest``) or ``rfc9530``
(a server that dropped the older header), so clients can be tested against either kind alone.

dCache never verifies an upload against a client-sent ``Repr-Digest``/``Content-Digest``/``Digest``
header (the door reads only ``Content-MD5`` and the ``Want-*`` headers), so neither does this service.
"""

from __future__ import annotations

from collections.abc import Mapping

from airflow_dcache.server.services import checksums
from airflow_dcache.server.services.checksums import Algorithm
from airflow_dcache.server.storage.namespace_db import Inode

# dCache breaks ties in this order (strongest first).
_PREFERENCE = [checksums.SHA512, checksums.SHA256, checksums.SHA1, checksums.MD5, checksums.ADLER32]
_REPR_ALGORITHMS = (checksums.SHA256, checksums.SHA512)  # the only ones dCache offers through RFC 9530
MODES = ("both", "rfc3230", "rfc9530")
_mode = "both"


def configure(mode: str) -> None:
    """Set which ``Want-*`` headers the server answers; one server process has one setting."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"digest headers mode must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode


def _wants(request_headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(Want-Digest, Want-Repr-Digest) as this server reads them: a header it does not speak is absent."""
    want = request_headers.get("Want-Digest") if _mode != "rfc9530" else None
    want_repr = request_headers.get("Want-Repr-Digest") if _mode != "rfc3230" else None
    return want, want_repr


def parse_want_digest(value: str) -> list[tuple[str, float]]:
    """``adler32, md5;q=0.5`` → [("adler32", 1.0), ("md5", 0.5)]; malformed q-values count as 0."""
    wanted: list[tuple[str, float]] = []
    for item in value.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.lower().startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if name:
            wanted.append((name.strip().lower(), q))
    return wanted


def parse_want_repr_digest(value: str) -> list[tuple[str, float]]:
    """``sha-256=10, sha-512=3`` → [("sha-256", 10), ("sha-512", 3)] (RFC 9530 preferences 0 to 10).

    Lenient where RFC 8941 is strict, as servers should be: member parameters are dropped, a bare
    name (``?1``) counts as preference 1, values are clamped to 0..10, and a value that is not an
    integer counts as 0 (not wanted).
    """
    wanted: list[tuple[str, float]] = []
    for item in value.split(","):
        member = item.split(";", 1)[0]
        name, sep, pref = member.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        try:
            weight = float(min(10, max(0, int(pref.strip())))) if sep else 1.0
        except ValueError:
            weight = 0.0
        wanted.append((name, weight))
    return wanted


def _best(wanted: list[tuple[str, float]], have: dict[Algorithm, str],
          allowed: tuple[Algorithm, ...] = checksums.ALL) -> tuple[Algorithm, str] | None:
    """The stored checksum with the highest weight, ties broken by dCache's preference."""
    choices = []
    for token, weight in wanted:
        algorithm = checksums.BY_TOKEN.get(token)
        if algorithm in have and algorithm in allowed and weight > 0:
            choices.append((weight, -_PREFERENCE.index(algorithm), algorithm))
    if not choices:
        return None
    _, _, algorithm = max(choices)
    return algorithm, have[algorithm]


def digest_header(want: str, node: Inode) -> str | None:
    """The ``Digest`` value for a ``Want-Digest`` request header, or None when nothing asked for is stored."""
    best = _best(parse_want_digest(want), checksums.stored(node))
    return None if best is None else f"{best[0].token}={best[0].header_value(best[1])}"


def repr_digest_header(want: str, node: Inode) -> str | None:
    """The ``Repr-Digest`` value (``sha-256=:<base64>:``) for a ``Want-Repr-Digest`` request header."""
    best = _best(parse_want_repr_digest(want), checksums.stored(node), _REPR_ALGORITHMS)
    return None if best is None else f"{best[0].token}=:{best[0].header_value(best[1])}:"


def response_headers(request_headers: Mapping[str, str], node: Inode,
                     default: str | None = None) -> dict[str, str]:
    """``Repr-Digest`` or ``Digest`` for a reply, from the request's wishes (``default`` when it has none).

    ``Want-Repr-Digest`` wins when both are sent, as in dCache; when it names nothing the file has,
    the reply falls back to ``Want-Digest`` (or the default) rather than carrying no checksum at all.
    """
    want, want_repr = _wants(request_headers)
    if want_repr and (repr_value := repr_digest_header(want_repr, node)):
        return {"Repr-Digest": repr_value}
    if _mode == "rfc9530":
        return {}
    want = want or default
    value = digest_header(want, node) if want else None
    return {"Digest": value} if value else {}


def upload_algorithms(request_headers: Mapping[str, str]) -> list[Algorithm]:
    """The checksums an upload must compute besides adler32: everything its Want-(Repr-)Digest names."""
    want, want_repr = _wants(request_headers)
    tokens = [t for t, q in parse_want_digest(want or "") if q > 0]
    tokens += [t for t, w in parse_want_repr_digest(want_repr or "") if w > 0
               and checksums.BY_TOKEN.get(t) in _REPR_ALGORITHMS]
    return checksums.optional_for_tokens(tokens)


def checksums_property(node: Inode) -> str:
    """dCache's ``Checksums`` WebDAV property: ``md5=…,adler32=…`` (RFC 3230 syntax, md5 first)."""
    have = checksums.stored(node)
    order = sorted(have, key=lambda a: a is checksums.ADLER32)
    return ",".join(f"{a.token}={a.header_value(have[a])}" for a in order)
