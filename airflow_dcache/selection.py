"""File selection (the "file-list service"): criteria, a bounded directory walk and the output schema.

Shared by :class:`~airflow_dcache.operators.namespace.DCacheListOperator` and the ``select-files``
container function, so both return exactly the same records. The module does no I/O of its own: the
walk takes a ``list_dir`` callable (a hook's bound method), which keeps the logic testable without a
server.

Output schema (one JSON object per selected file, in path order)::

    {
        "path": "/data/run1/f.h5",        # absolute dCache path
        "name": "f.h5",                   # last path component
        "pnfsid": "0000A1B2...",          # dCache file id, or null when the server sent none
        "size": 1048576,                  # bytes, or null
        "mtime": "2026-01-02T03:04:05.678Z",  # ISO-8601 UTC with milliseconds, or null
        "checksums": {"adler32": "0a1b2c3d"},  # lowercase hex by RFC 3230 name; {} when none known
        "locality": "ONLINE"              # ONLINE | NEARLINE | ONLINE_AND_NEARLINE | ... or null
    }

The schema name, for documents that carry it, is :data:`SCHEMA` (``airflow-dcache/file-list/v1``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_dcache.hooks.models import NamespaceEntry

SCHEMA = "airflow-dcache/file-list/v1"
LOCALITY_PARTS = frozenset({"ONLINE", "NEARLINE"})
LOCALITY_VALUES = frozenset({"ONLINE", "NEARLINE", "ONLINE_AND_NEARLINE", "LOST", "UNAVAILABLE", "NONE"})
DEFAULT_MAX_FILES = 100_000
DEFAULT_MAX_DIRS = 10_000

ListDir = Callable[[str], Sequence[NamespaceEntry]]


def parse_time(value: Any, field_name: str) -> datetime | None:
    """A point in time from a datetime, epoch seconds, or an ISO-8601 string (rendered templates give strings).

    Naive values are taken as UTC. ``None`` and ``""`` mean "no bound".
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field_name}: {value!r} is not an ISO-8601 time") from None
    else:
        raise ValueError(f"{field_name}: expected a datetime, epoch seconds or ISO-8601 string, got {value!r}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result


def iso_ms(epoch_ms: int | None) -> str | None:
    """dCache's epoch milliseconds as ``2026-01-02T03:04:05.678Z``."""
    if epoch_ms is None:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def locality_parts(value: str | Iterable[str] | None, field_name: str = "locality") -> frozenset[str]:
    """Required locality as a set of ONLINE/NEARLINE; ``ONLINE_AND_NEARLINE`` means both.

    A file matches when its own locality includes every required part, so ``"NEARLINE"`` matches
    ``NEARLINE`` and ``ONLINE_AND_NEARLINE`` (a file that is archived, whether or not it is also on disk).
    """
    if value is None or value == "" or value == []:
        return frozenset()
    items = [value] if isinstance(value, str) else list(value)
    parts: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{field_name}: {item!r} is not a string")
        for part in item.strip().upper().split("_AND_"):
            if part not in LOCALITY_PARTS:
                raise ValueError(
                    f"{field_name}: {item!r} is not a locality (use ONLINE, NEARLINE or ONLINE_AND_NEARLINE)"
                )
            parts.add(part)
    return frozenset(parts)


def has_locality(actual: str | None, required: frozenset[str]) -> bool:
    """Whether a file's ``fileLocality`` includes every required part."""
    if not required:
        return True
    if not actual:
        return False
    return required <= set(actual.upper().split("_AND_"))


@dataclass(frozen=True)
class Criteria:
    """What to select; validated at construction, so bad input fails at DAG parse naming the field.

    :param name_glob: shell pattern on the file name (``*.h5``).
    :param path_glob: shell pattern on the full path (``/data/*/raw/*.h5``; ``*`` also crosses ``/``).
    :param path_regex: regular expression searched in the full path.
    :param min_size: smallest size in bytes (inclusive).
    :param max_size: largest size in bytes (inclusive).
    :param mtime_after: only files modified at or after this time (e.g. ``{{ data_interval_start }}``).
    :param mtime_before: only files modified before this time (exclusive, e.g. ``{{ data_interval_end }}``).
    :param locality: required locality parts (``ONLINE``, ``NEARLINE``, ``ONLINE_AND_NEARLINE``).
    :param labels: labels every selected file must carry.
    """

    name_glob: str | None = None
    path_glob: str | None = None
    path_regex: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    mtime_after: Any = None
    mtime_before: Any = None
    locality: str | Sequence[str] | None = None
    labels: Sequence[str] = ()
    _regex: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)
    _after: datetime | None = field(init=False, default=None, repr=False, compare=False)
    _before: datetime | None = field(init=False, default=None, repr=False, compare=False)
    _locality: frozenset[str] = field(init=False, default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path_regex:
            try:
                object.__setattr__(self, "_regex", re.compile(self.path_regex))
            except re.error as exc:
                raise ValueError(f"path_regex: {self.path_regex!r} is not a valid regular expression: {exc}") from None
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name}: expected a non-negative integer number of bytes, got {value!r}")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is larger than max_size ({self.max_size})")
        after = parse_time(self.mtime_after, "mtime_after")
        before = parse_time(self.mtime_before, "mtime_before")
        if after and before and after >= before:
            raise ValueError(f"mtime_after ({after.isoformat()}) is not before mtime_before ({before.isoformat()})")
        object.__setattr__(self, "_after", after)
        object.__setattr__(self, "_before", before)
        object.__setattr__(self, "_locality", locality_parts(self.locality))
        labels = [self.labels] if isinstance(self.labels, str) else list(self.labels or ())
        if not all(isinstance(label, str) and label for label in labels):
            raise ValueError(f"labels: expected a list of non-empty strings, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(labels))

    @property
    def needs_locality(self) -> bool:
        return bool(self._locality)

    @property
    def needs_labels(self) -> bool:
        return bool(self.labels)

    def matches(self, entry: NamespaceEntry) -> bool:
        """Whether a regular file passes every criterion (directories never do)."""
        if not entry.is_file:
            return False
        if self.name_glob and not fnmatch.fnmatchcase(entry.name, self.name_glob):
            return False
        if self.path_glob and not fnmatch.fnmatchcase(entry.path, self.path_glob):
            return False
        if self._regex is not None and not self._regex.search(entry.path):
            return False
        if self.min_size is not None and (entry.size is None or entry.size < self.min_size):
            return False
        if self.max_size is not None and (entry.size is None or entry.size > self.max_size):
            return False
        if self._after or self._before:
            if entry.mtime is None:
                return False
            moment = datetime.fromtimestamp(entry.mtime / 1000, tz=UTC)
            if self._after and moment < self._after:
                return False
            if self._before and moment >= self._before:
                return False
        if not has_locality(entry.locality, self._locality):
            return False
        return not self.labels or set(self.labels) <= set(entry.labels or ())


def record(entry: NamespaceEntry) -> dict[str, Any]:
    """One file in the output schema (module docstring)."""
    return {
        "path": entry.path,
        "name": entry.name,
        "pnfsid": entry.pnfsid,
        "size": entry.size,
        "mtime": iso_ms(entry.mtime),
        "checksums": dict(sorted((entry.checksums or {}).items())),
        "locality": entry.locality,
    }


def walk(
    list_dir: ListDir,
    root: str,
    *,
    recursive: bool = False,
    max_dirs: int = DEFAULT_MAX_DIRS,
) -> Iterable[NamespaceEntry]:
    """Breadth-first entries below ``root``; at most ``max_dirs`` directories are listed.

    Bounded because a mistaken root (``/``) would otherwise list a whole site; exceeding the bound is
    an error, not a silent truncation, so a DAG never processes a partial list unknowingly.
    """
    queue = [root.rstrip("/") or "/"]
    listed = 0
    while queue:
        directory = queue.pop(0)
        listed += 1
        if listed > max_dirs:
            raise ValueError(f"max_dirs: more than {max_dirs} directories below {root}; narrow the root or raise it")
        children = sorted(list_dir(directory), key=lambda e: e.name)
        for child in children:
            if child.is_dir:
                if recursive:
                    queue.append(child.path)
            else:
                yield child


def select(
    list_dir: ListDir,
    root: str,
    criteria: Criteria,
    *,
    recursive: bool = False,
    max_files: int = DEFAULT_MAX_FILES,
    max_dirs: int = DEFAULT_MAX_DIRS,
) -> list[dict[str, Any]]:
    """Records of the files below ``root`` matching ``criteria``, sorted by path.

    More than ``max_files`` matches raise ``ValueError`` (an XCom that large would not be usable).
    """
    if max_files < 1:
        raise ValueError(f"max_files: must be at least 1, got {max_files!r}")
    selected: list[dict[str, Any]] = []
    for entry in walk(list_dir, root, recursive=recursive, max_dirs=max_dirs):
        if criteria.matches(entry):
            selected.append(record(entry))
            if len(selected) > max_files:
                raise ValueError(f"max_files: more than {max_files} files match below {root}")
    selected.sort(key=lambda r: r["path"])
    return selected
