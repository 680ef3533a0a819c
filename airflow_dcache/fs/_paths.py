"""How a ``dcache://`` URL names a connection and a dCache path, and how entries are described to fsspec.

An fsspec name keeps the URL's authority as its first component, the way ``s3://bucket/key`` becomes
``bucket/key``: ``dcache://dcache_main/data/x.h5`` is the name ``dcache_main/data/x.h5``, i.e. the
dCache path ``/data/x.h5`` through the connection named by ``dcache_main``. Paths are taken literally
(no percent-decoding): a space or a non-ASCII letter in a name is just that character.
"""

from __future__ import annotations

import re
import stat as stat_module
from typing import Any

from airflow_dcache.hooks.models import NamespaceEntry

SCHEME = "dcache"
PREFIX = f"{SCHEME}://"
# The asset-URI site token, and what a connection id may additionally hold (``_``, upper case, ``.``).
_AUTHORITY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,248}[A-Za-z0-9])?")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def strip_protocol(path: str) -> str:
    """``dcache://[<conn>@]<authority>/<path>`` → ``<authority>/<path>``; trailing ``/`` dropped.

    The ``<conn>@`` user part (Airflow's spelling of an explicit connection) is removed here; fsspec
    hands it to the filesystem as ``conn_id`` through :func:`conn_id_from_url`. A name that starts
    with ``/`` has no authority: it is a dCache path on the filesystem's bound connection.
    """
    if path.startswith(PREFIX):
        authority, sep, rest = path[len(PREFIX):].partition("/")
        path = authority.rpartition("@")[2] + sep + rest
    if path not in ("", "/"):
        path = path.rstrip("/") or "/"
    return path


def conn_id_from_url(path: str) -> str | None:
    """The ``<conn>`` of ``dcache://<conn>@<site>/<path>``, if the URL has one."""
    if not path.startswith(PREFIX):
        return None
    authority = path[len(PREFIX):].partition("/")[0]
    user, at, _host = authority.rpartition("@")
    return user if at and user else None


def split_name(name: str) -> tuple[str | None, str]:
    """``(authority or None, absolute dCache path)`` of an fsspec name (already stripped)."""
    if name.startswith("/") or name == "":
        return None, name or "/"
    authority, _, rest = name.partition("/")
    if not _AUTHORITY.fullmatch(authority):
        raise ValueError(
            f"path: {authority!r} is not a connection id or site name; dcache:// URLs are "
            "dcache://<conn>/<path> (or dcache://<conn>@<site>/<path>)"
        )
    return authority, "/" + rest


def join_name(authority: str | None, dcache_path: str) -> str:
    """The fsspec name of ``dcache_path`` under ``authority`` (bare dCache path when there is none)."""
    if authority is None:
        return dcache_path
    return authority if dcache_path == "/" else authority + dcache_path


def entry_info(name: str, entry: NamespaceEntry) -> dict[str, Any]:
    """fsspec's info dict: ``name``/``size``/``type`` plus what dCache knows.

    ``mtime``/``created`` are POSIX seconds (what ``ObjectStoragePath.stat().st_mtime`` expects),
    ``mode`` carries the file-type bits like ``os.stat``, and each stored checksum is a key of its own
    (``adler32``, ``md5``) as lower-case hex.
    """
    kind = "directory" if entry.is_dir else "file" if entry.is_file else "other"
    info: dict[str, Any] = {"name": name, "size": 0 if entry.is_dir else int(entry.size or 0), "type": kind}
    if entry.mtime is not None:
        info["mtime"] = entry.mtime / 1000.0
    if entry.creation_time is not None:
        info["created"] = entry.creation_time / 1000.0
    if entry.mode is not None:
        kind_bits = stat_module.S_IFDIR if entry.is_dir else stat_module.S_IFREG if entry.is_file else 0
        info["mode"] = kind_bits | (int(entry.mode) & 0o7777)
    if entry.nlink is not None:
        info["nlink"] = entry.nlink
    if entry.pnfsid:
        info["pnfsid"] = entry.pnfsid
        if _HEX.fullmatch(entry.pnfsid):
            info["ino"] = int(entry.pnfsid, 16)
    for raw_key, key in (("owner", "uid"), ("group", "gid")):
        value = entry.raw.get(raw_key)
        if isinstance(value, int):
            info[key] = value
    if entry.locality:
        info["locality"] = entry.locality
    for algorithm, digest in (entry.checksums or {}).items():
        info.setdefault(algorithm, digest)
    return info
