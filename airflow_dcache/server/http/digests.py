"""RFC 3230 ``Want-Digest`` negotiation and ``Digest`` values from stored checksums."""

from __future__ import annotations

import base64

from airflow_dcache.server.storage.namespace_db import Inode

# dCache breaks ties in this order (strongest first).
_PREFERENCE = ["sha-512", "sha-256", "sha", "md5", "adler32"]


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


def available(node: Inode) -> dict[str, str]:
    """Stored checksums as RFC 3230 values: adler32 in hex, md5 as base64 of the raw digest."""
    values = {}
    if node.adler32:
        values["adler32"] = node.adler32
    if node.md5:
        values["md5"] = base64.b64encode(bytes.fromhex(node.md5)).decode()
    return values


def digest_header(want: str, node: Inode) -> str | None:
    """The best stored checksum the client asked for, by q-value then dCache's preference."""
    have = available(node)
    choices = [(q, -_PREFERENCE.index(n), n) for n, q in parse_want_digest(want) if n in have and q > 0]
    if not choices:
        return None
    _, _, name = max(choices)
    return f"{name}={have[name]}"


def checksums_property(node: Inode) -> str:
    """dCache's ``Checksums`` WebDAV property: ``md5=…,adler32=…``."""
    return ",".join(f"{k}={v}" for k, v in sorted(available(node).items(), key=lambda kv: kv[0] != "md5"))
