"""A file version: the unit of work of every pipeline (contract §4 and §6).

A path names a place, not a file: a beamline re-uploads ``run001.h5``, every run folder holds the same
names, and a file can be replaced while a run works on it. dCache gives every new file a new pnfsid
(an overwrite is a new file), and a checksum of its content; together they say which version a step
works on. :class:`FileVersion` holds them, :func:`require_version` checks that the file at a path is
still that version before a step changes anything, and :func:`version_marker` / :func:`parse_marker`
write and read the "processed" marker so that a marker for one version never hides another.

Pure Python like the rest of :mod:`airflow_dcache.events`: the hook is passed in, never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CHECKSUM_PREFERENCE", "FileVersion", "parse_marker", "require_version", "version_marker"]

#: The checksum that names a version when dCache knows several (adler32 is dCache's default).
CHECKSUM_PREFERENCE = ("adler32", "md5", "sha1", "sha256", "sha512")


def _preferred_checksum(checksums: Mapping[str, str] | None) -> str | None:
    """``"adler32:0a1b2c3d"``: the preferred algorithm dCache knows for the file, else the first by name."""
    if not checksums:
        return None
    known = {str(k).lower(): str(v).lower() for k, v in checksums.items() if v}
    for algo in (*CHECKSUM_PREFERENCE, *sorted(known)):
        if algo in known:
            return f"{algo}:{known[algo]}"
    return None


@dataclass(frozen=True)
class FileVersion:
    """One version of one file: its pnfsid, plus its checksum (else size and mtime) to tell versions apart.

    :param pnfsid: dCache's file id; a new upload to the same path gets a new one.
    :param checksum: ``"<algorithm>:<hex value>"``, lower case, where dCache knows one.
    :param size: bytes, where known.
    :param mtime: modification time in ms since the epoch, where known (used only without a checksum).
    """

    pnfsid: str
    checksum: str | None = None
    size: int | None = None
    mtime: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pnfsid, str) or not self.pnfsid or any(c in self.pnfsid for c in " /;"):
            raise ValueError(f"version field 'pnfsid' must be a dCache file id, got {self.pnfsid!r}")
        if self.checksum is not None:
            if not isinstance(self.checksum, str) or ":" not in self.checksum or " " in self.checksum:
                raise ValueError(f"version field 'checksum' must look like 'adler32:0a1b2c3d', got {self.checksum!r}")
            object.__setattr__(self, "checksum", self.checksum.lower())  # hex and algorithm names ignore case

    @classmethod
    def of(cls, entry: Any) -> FileVersion:
        """The version of a namespace entry: a ``stat`` result, or a selection record (a mapping with the
        same fields, as ``DCacheListOperator`` returns); ``ValueError`` if dCache gave no pnfsid."""
        def field(name: str) -> Any:
            return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)

        pnfsid = field("pnfsid")
        if not pnfsid:
            raise ValueError(f"{field('path') or '?'}: dCache reported no pnfsid, so its version is unknown")
        return cls(pnfsid=pnfsid, checksum=_preferred_checksum(field("checksums")), size=field("size"),
                   mtime=field("mtime"))

    @property
    def id(self) -> str:
        """``<pnfsid>;<algo>:<value>`` (or ``;size=…,mtime=…``): printable, without spaces, stable."""
        if self.checksum:
            return f"{self.pnfsid};{self.checksum}"
        if self.size is not None or self.mtime is not None:
            return f"{self.pnfsid};size={self.size},mtime={self.mtime}"
        return self.pnfsid

    @classmethod
    def parse(cls, text: str) -> FileVersion:
        """Inverse of :attr:`id`."""
        pnfsid, _, rest = str(text).strip().partition(";")
        if not rest:
            return cls(pnfsid=pnfsid)
        if rest.startswith("size="):
            fields = dict(part.partition("=")[::2] for part in rest.split(","))
            size, mtime = fields.get("size"), fields.get("mtime")
            return cls(pnfsid=pnfsid, size=int(size) if size and size != "None" else None,
                       mtime=int(mtime) if mtime and mtime != "None" else None)
        return cls(pnfsid=pnfsid, checksum=rest)

    def to_json(self) -> dict[str, Any]:
        return {"pnfsid": self.pnfsid, "checksum": self.checksum, "size": self.size, "mtime": self.mtime,
                "id": self.id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileVersion:
        if not isinstance(data, Mapping):
            raise ValueError(f"a file version must be an object, got {type(data).__name__}")
        return cls(pnfsid=data.get("pnfsid"), checksum=data.get("checksum"),  # type: ignore[arg-type]
                   size=data.get("size"), mtime=data.get("mtime"))

    def same_as(self, other: FileVersion) -> bool:
        """Whether both name the same version, comparing what both sides know.

        The pnfsid must match. Then the checksum, when both know one of the same algorithm; without
        checksums, the size when both know it. mtime alone is never compared: setting a file's
        attributes changes it without making a new version.
        """
        if self.pnfsid != other.pnfsid:
            return False
        if self.checksum and other.checksum:
            mine, theirs = self.checksum.split(":", 1), other.checksum.split(":", 1)
            if mine[0] == theirs[0]:
                return mine[1] == theirs[1]
        if self.size is not None and other.size is not None:
            return self.size == other.size
        return True

    def describe(self) -> str:
        return f"pnfsid {self.pnfsid}" + (f" ({self.checksum})" if self.checksum else "")


def require_version(hook: Any, path: str, expected: FileVersion | Mapping[str, Any] | str, *, step: str,
                    **stat_flags: Any) -> Any:
    """Stat ``path`` and return the entry if it is still ``expected``; else raise ``VersionChanged``.

    Every step that changes something about an input (copies it, sets its QoS, marks it processed)
    calls this first, so a file replaced during a run is never acted on in its predecessor's name:
    the step fails at once (the error is permanent, no retry), and the newer version's own event
    starts its own run. A file that is gone raises ``VersionChanged`` too.
    """
    from airflow_dcache.exceptions import NotFound, VersionChanged

    want = expected if isinstance(expected, FileVersion) else (
        FileVersion.parse(expected) if isinstance(expected, str) else FileVersion.from_json(expected))
    try:
        checksum = bool(stat_flags.pop("checksum", False)) or bool(want.checksum)
        entry = hook.stat(path, checksum=checksum, **stat_flags)
    except NotFound:
        raise VersionChanged(f"{path}: {step}: the file is gone since the event ({want.describe()})") from None
    if not entry.pnfsid or not FileVersion.of(entry).same_as(want):
        now = FileVersion.of(entry).describe() if entry.pnfsid else "a directory" if entry.is_dir else "unknown"
        raise VersionChanged(f"{path} changed since the event: {want.describe()} is now {now}; {step} refused "
                             "(the newer version is processed by its own run)")
    return entry


def version_marker(version: FileVersion, dag_id: str, run_id: str) -> str:
    """The value of a done-marker (contract §6): ``<version id> <dag_id>/<run_id>``."""
    return f"{version.id} {dag_id}/{run_id}"


def parse_marker(value: str) -> tuple[FileVersion | None, str, str]:
    """``(version, dag_id, run_id)`` of a marker value; version ``None`` for markers written before versions."""
    text = str(value)
    version: FileVersion | None = None
    head, sep, rest = text.partition(" ")
    if sep and head and "/" not in head:
        try:
            version = FileVersion.parse(head)
            text = rest
        except ValueError:
            version = None
    dag_id, _, run_id = text.partition("/")
    return version, dag_id, run_id
