"""File versions (issue 16): ``FileVersion`` ids, JSON, ``same_as``, ``of`` a stat result, and done-markers.

Pure: no service. ``require_version`` against the service is covered by
``tests/pipelines/test_versions_stateful.py`` and ``tests/pipelines/test_issue16_regressions.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_dcache.events.version import CHECKSUM_PREFERENCE, FileVersion, parse_marker, version_marker

PNFSID = "0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A"
OTHER = "0000DBD3BA317F814B8D9C24A2F4AE88F9EF"

pnfsids = st.text("0123456789ABCDEF", min_size=4, max_size=36)
checksums = st.builds(lambda algo, value: f"{algo}:{value}", st.sampled_from(CHECKSUM_PREFERENCE),
                      st.text("0123456789abcdef", min_size=8, max_size=64))
sizes = st.none() | st.integers(min_value=0, max_value=2**53)
versions = st.builds(FileVersion, pnfsid=pnfsids, checksum=st.none() | checksums, size=sizes, mtime=sizes)
# Airflow run ids: a type prefix, an ISO time with ':' and '+', an optional random suffix.
run_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=120)
dag_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=60)


def entry(pnfsid: str | None = PNFSID, checksums: dict[str, str] | None = None, size: int | None = 43502,
          mtime: int | None = 1796553921081, path: str = "/data/incoming/run001.h5") -> SimpleNamespace:
    """The fields of a ``NamespaceEntry`` that ``FileVersion.of`` reads."""
    return SimpleNamespace(path=path, pnfsid=pnfsid, checksums=checksums, size=size, mtime=mtime)


# --- ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version, text", [
    (FileVersion(PNFSID, "adler32:0a1b2c3d", 10, 5), f"{PNFSID};adler32:0a1b2c3d"),
    (FileVersion(PNFSID, size=10, mtime=5), f"{PNFSID};size=10,mtime=5"),
    (FileVersion(PNFSID, size=0), f"{PNFSID};size=0,mtime=None"),
    (FileVersion(PNFSID, mtime=7), f"{PNFSID};size=None,mtime=7"),
    (FileVersion(PNFSID), PNFSID),
])
def test_id_is_printable_and_parses_back(version: FileVersion, text: str) -> None:
    assert version.id == text and " " not in text and "/" not in text
    back = FileVersion.parse(text)
    assert back.id == text and back.same_as(version) and version.same_as(back)


def test_a_selection_record_has_the_version_of_its_entry() -> None:
    """``DCacheListOperator``'s records are mappings: their version carries the checksum, so a file rewritten
    under its pnfsid with as many bytes is another version (the reprocess DAG's work items rely on it)."""
    fields = {"checksums": {"adler32": "0A1B2C3D", "md5": "00" * 16}}
    record = dict(vars(entry(**fields)), name="run001.h5")
    assert FileVersion.of(record) == FileVersion.of(entry(**fields))
    assert FileVersion.of(record).id == f"{PNFSID};adler32:0a1b2c3d"
    rewritten = dict(record, checksums={"adler32": "ffffffff"})
    assert not FileVersion.of(rewritten).same_as(FileVersion.of(record))
    with pytest.raises(ValueError, match=r"/data/incoming/run001\.h5: dCache reported no pnfsid"):
        FileVersion.of(dict(record, pnfsid=None))


def test_parse_without_checksum_keeps_size_and_mtime() -> None:
    assert FileVersion.parse(f"{PNFSID};size=10,mtime=5") == FileVersion(PNFSID, size=10, mtime=5)
    assert FileVersion.parse(f" {PNFSID};size=0,mtime=None ") == FileVersion(PNFSID, size=0)
    assert FileVersion.parse(f"{PNFSID};adler32:0a1b2c3d") == FileVersion(PNFSID, "adler32:0a1b2c3d")


@settings(max_examples=300, deadline=None, database=None)
@given(versions)
def test_id_round_trip(version: FileVersion) -> None:
    back = FileVersion.parse(version.id)
    assert back.id == version.id
    assert back.same_as(version) and version.same_as(back)
    if version.checksum is None:
        assert back == version  # nothing is dropped without a checksum
    else:
        assert back == FileVersion(version.pnfsid, version.checksum)  # the checksum names the version


@settings(max_examples=300, deadline=None, database=None)
@given(versions)
def test_json_round_trip_is_exact(version: FileVersion) -> None:
    data = version.to_json()
    assert data["id"] == version.id
    assert FileVersion.from_json(data) == version


@pytest.mark.parametrize("kwargs", [
    {"pnfsid": ""}, {"pnfsid": "00AB CD"}, {"pnfsid": "00AB/CD"}, {"pnfsid": "00AB;CD"}, {"pnfsid": None},
    {"pnfsid": PNFSID, "checksum": "0a1b2c3d"}, {"pnfsid": PNFSID, "checksum": "adler32: 0a1b2c3d"},
])
def test_bad_fields_are_refused_naming_the_field(kwargs: dict) -> None:
    field = "checksum" if "checksum" in kwargs else "pnfsid"
    with pytest.raises(ValueError, match=f"'{field}'"):
        FileVersion(**kwargs)


@pytest.mark.parametrize("text", ["", ";adler32:0a1b2c3d", f"{PNFSID};garbage", f"{PNFSID};size=ten,mtime=5"])
def test_parse_refuses_what_is_not_a_version_id(text: str) -> None:
    with pytest.raises(ValueError):
        FileVersion.parse(text)


def test_from_json_refuses_non_objects() -> None:
    with pytest.raises(ValueError, match="object"):
        FileVersion.from_json(f"{PNFSID};adler32:0a1b2c3d")  # type: ignore[arg-type]


# --- same_as ------------------------------------------------------------------------------------------------


def test_same_as_needs_the_same_pnfsid() -> None:
    # an overwrite with identical content: same checksum, a new pnfsid -> another version
    assert not FileVersion(PNFSID, "adler32:02910143").same_as(FileVersion(OTHER, "adler32:02910143"))
    assert not FileVersion(PNFSID).same_as(FileVersion(OTHER))


def test_same_as_compares_what_both_sides_know() -> None:
    v = FileVersion(PNFSID, "adler32:0a1b2c3d", size=10, mtime=5)
    assert v.same_as(FileVersion(PNFSID, "adler32:0a1b2c3d", size=10, mtime=99))  # mtime alone never counts
    assert not v.same_as(FileVersion(PNFSID, "adler32:ffffffff", size=10))  # same algorithm, other value
    assert v.same_as(FileVersion(PNFSID))  # an event with only the pnfsid
    assert v.same_as(FileVersion(PNFSID, size=10)) and not v.same_as(FileVersion(PNFSID, size=11))
    # different algorithms cannot be compared: the size decides, where both know it
    assert v.same_as(FileVersion(PNFSID, "md5:00ff", size=10))
    assert not v.same_as(FileVersion(PNFSID, "md5:00ff", size=11))


@settings(max_examples=300, deadline=None, database=None)
@given(versions, versions)
def test_same_as_is_symmetric_and_reflexive(a: FileVersion, b: FileVersion) -> None:
    assert a.same_as(a)
    assert a.same_as(b) == b.same_as(a)
    if a.pnfsid != b.pnfsid:
        assert not a.same_as(b)


def test_same_as_ignores_the_case_of_the_checksum() -> None:
    """A version id typed or pasted in upper case (as some tools print adler32) names the same version."""
    lower = FileVersion.of(entry(checksums={"adler32": "0a1b2c3d"}))
    assert FileVersion.parse(f"{PNFSID};adler32:0A1B2C3D").same_as(lower)
    assert FileVersion.from_json({"pnfsid": PNFSID, "checksum": "ADLER32:0A1B2C3D"}).same_as(lower)


# --- of a stat result ---------------------------------------------------------------------------------------


def test_of_prefers_adler32_and_lowercases() -> None:
    v = FileVersion.of(entry(checksums={"MD5": "ABCDEF", "adler32": "0A1B2C3D"}))
    assert v == FileVersion(PNFSID, "adler32:0a1b2c3d", 43502, 1796553921081)


@pytest.mark.parametrize("checksums, expected", [
    ({"md5": "00ff", "sha256": "aa"}, "md5:00ff"),
    ({"sha512": "bb", "sha256": "aa"}, "sha256:aa"),
    ({"crc32c": "12", "blake3": "34"}, "blake3:34"),  # unknown algorithms: the first by name
    ({"adler32": "", "md5": "00ff"}, "md5:00ff"),  # an empty value is no checksum
    ({}, None),
    (None, None),
])
def test_of_picks_the_checksum_by_preference(checksums: dict | None, expected: str | None) -> None:
    assert FileVersion.of(entry(checksums=checksums)).checksum == expected


def test_of_refuses_an_entry_without_pnfsid() -> None:
    with pytest.raises(ValueError, match=r"/data/incoming/run001\.h5.*pnfsid"):
        FileVersion.of(entry(pnfsid=None))


def test_of_matches_the_version_dict_work_items_carry() -> None:
    """What tests/pipelines/test_issue16_regressions.py builds by hand from a stat result."""
    e = entry(checksums={"adler32": "02910143"}, size=3, mtime=1796553921081)
    assert FileVersion.of(e).to_json() == {"pnfsid": PNFSID, "checksum": "adler32:02910143", "size": 3,
                                           "mtime": 1796553921081, "id": f"{PNFSID};adler32:02910143"}


# --- markers ------------------------------------------------------------------------------------------------


def test_marker_names_the_version_and_the_run() -> None:
    v = FileVersion(PNFSID, "adler32:0a1b2c3d")
    run = "manual__2026-12-02T01:36:02.123456+00:00"
    value = version_marker(v, "dcache_ingest_pipeline", run)
    assert value == f"{PNFSID};adler32:0a1b2c3d dcache_ingest_pipeline/{run}"
    assert parse_marker(value) == (v, "dcache_ingest_pipeline", run)


def test_markers_from_before_versions_have_no_version() -> None:
    assert parse_marker("dcache_ingest_pipeline/manual__2026-12-02T01:36:02+00:00") == (
        None, "dcache_ingest_pipeline", "manual__2026-12-02T01:36:02+00:00")
    # a run id with a space in an old marker is still not read as a version
    assert parse_marker("dag/run with space") == (None, "dag", "run with space")


@settings(max_examples=300, deadline=None, database=None)
@given(versions, dag_ids, run_ids)
def test_marker_round_trip(version: FileVersion, dag_id: str, run_id: str) -> None:
    parsed, dag, run = parse_marker(version_marker(version, dag_id, run_id))
    assert parsed is not None and parsed.id == version.id and parsed.same_as(version)
    assert (dag, run) == (dag_id, run_id)


@settings(max_examples=300, deadline=None, database=None)
@given(versions, versions, dag_ids, run_ids)
def test_a_marker_counts_only_for_its_own_version(a: FileVersion, b: FileVersion, dag_id: str, run_id: str) -> None:
    parsed, _, _ = parse_marker(version_marker(a, dag_id, run_id))
    assert parsed is not None
    if a.pnfsid != b.pnfsid:
        assert not parsed.same_as(b)
    if a.checksum and b.checksum and a.checksum.split(":")[0] == b.checksum.split(":")[0] and a.checksum != b.checksum:
        assert not parsed.same_as(b)
