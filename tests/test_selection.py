"""The pure selection logic shared with the select-files function: criteria, walk bounds, schema."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_dcache.hooks.models import NamespaceEntry
from airflow_dcache.selection import Criteria, has_locality, locality_parts, parse_time, record, select

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000


def f(path: str, size: int = 10, mtime: int = T0, locality: str = "ONLINE", labels: list[str] | None = None,
      checksums: dict[str, str] | None = None) -> NamespaceEntry:
    return NamespaceEntry(path=path, name=path.rsplit("/", 1)[-1], file_type="REGULAR", size=size, mtime=mtime,
                          pnfsid="ID" + path, locality=locality, labels=labels, checksums=checksums)


def d(path: str) -> NamespaceEntry:
    return NamespaceEntry(path=path, name=path.rsplit("/", 1)[-1], file_type="DIR")


TREE = {
    "/data": [f("/data/b.h5", size=100), f("/data/a.txt", size=5), d("/data/sub")],
    "/data/sub": [f("/data/sub/c.h5", size=1000, mtime=T0 + 2 * HOUR, locality="ONLINE_AND_NEARLINE",
                    labels=["raw"], checksums={"adler32": "0a"})],
}


def list_dir(path: str) -> list[NamespaceEntry]:
    return TREE[path]


def paths(criteria: Criteria, recursive: bool = True) -> list[str]:
    return [r["path"] for r in select(list_dir, "/data", criteria, recursive=recursive)]


def test_record_schema() -> None:
    rec = record(TREE["/data/sub"][0])
    assert rec == {"path": "/data/sub/c.h5", "name": "c.h5", "pnfsid": "ID/data/sub/c.h5", "size": 1000,
                   "mtime": "2026-01-01T02:00:00.000Z", "checksums": {"adler32": "0a"},
                   "locality": "ONLINE_AND_NEARLINE"}


def test_criteria_combinations() -> None:
    assert paths(Criteria()) == ["/data/a.txt", "/data/b.h5", "/data/sub/c.h5"]
    assert paths(Criteria(), recursive=False) == ["/data/a.txt", "/data/b.h5"]
    assert paths(Criteria(name_glob="*.h5")) == ["/data/b.h5", "/data/sub/c.h5"]
    assert paths(Criteria(path_glob="/data/sub/*")) == ["/data/sub/c.h5"]
    assert paths(Criteria(path_regex=r"/[ab]\.")) == ["/data/a.txt", "/data/b.h5"]
    assert paths(Criteria(min_size=50, max_size=500)) == ["/data/b.h5"]
    assert paths(Criteria(mtime_after="2026-01-01T01:00:00Z")) == ["/data/sub/c.h5"]
    assert paths(Criteria(mtime_before="2026-01-01 01:00:00+00:00")) == ["/data/a.txt", "/data/b.h5"]
    assert paths(Criteria(locality="NEARLINE")) == ["/data/sub/c.h5"]
    assert paths(Criteria(labels=["raw"])) == ["/data/sub/c.h5"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"path_regex": "("}, "path_regex"),
    ({"min_size": -1}, "min_size"),
    ({"min_size": 10, "max_size": 1}, "min_size"),
    ({"mtime_after": "yesterday"}, "mtime_after"),
    ({"mtime_after": "2026-01-02", "mtime_before": "2026-01-01"}, "mtime_after"),
    ({"locality": "TAPE"}, "locality"),
    ({"labels": [""]}, "labels"),
])
def test_bad_criteria_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Criteria(**kwargs)


def test_bounds_are_errors_not_truncation() -> None:
    with pytest.raises(ValueError, match="max_files"):
        select(list_dir, "/data", Criteria(), recursive=True, max_files=2)
    with pytest.raises(ValueError, match="max_dirs"):
        select(list_dir, "/data", Criteria(), recursive=True, max_dirs=1)


def test_locality_semantics() -> None:
    assert locality_parts("ONLINE_AND_NEARLINE") == {"ONLINE", "NEARLINE"}
    assert has_locality("ONLINE_AND_NEARLINE", frozenset({"NEARLINE"}))
    assert not has_locality("ONLINE", frozenset({"NEARLINE"}))
    assert not has_locality(None, frozenset({"ONLINE"}))
    assert parse_time(0, "x") == datetime(1970, 1, 1, tzinfo=UTC)
