"""Pure parts of the dCache view: path validation, lineage rows and the lag summary (no I/O)."""

from __future__ import annotations

import pytest

from airflow_dcache.plugins import lineage
from airflow_dcache.plugins.storage import markers
from airflow_dcache.plugins.validation import InvalidInput, clean_page, clean_path, clean_prefixes


@pytest.mark.parametrize(("raw", "clean"), [
    ("/", "/"), ("//data//x/", "/data/x"), ("/data/./x", "/data/x"), ("/data/x y", "/data/x y"),
])
def test_paths_normalise(raw: str, clean: str) -> None:
    assert clean_path(raw) == clean


@pytest.mark.parametrize("raw", ["", "data", "/data/../etc", "/..", "/a\x00b", "/a\nb", "/" + "a" * 5000])
def test_paths_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_path(raw)
    assert err.value.field == "path"


def test_prefixes_confine_paths() -> None:
    prefixes = clean_prefixes("/data/incoming, /data/processed/")
    assert clean_path("/data/incoming/a", prefixes=prefixes) == "/data/incoming/a"
    assert clean_path("/data/processed", prefixes=prefixes) == "/data/processed"
    for outside in ("/data", "/data/incomingX", "/home/alice"):
        with pytest.raises(InvalidInput, match="outside"):
            clean_path(outside, prefixes=prefixes)
    assert clean_prefixes("") == ("/",)


def test_paging_bounds() -> None:
    assert clean_page(None, None) == (0, 100)
    with pytest.raises(InvalidInput):
        clean_page(0, 501)


def test_markers_parse_dag_and_run() -> None:
    assert markers({"airflow_dcache.done.ingest": "ingest/manual__1", "other": "x"}) == [
        {"consumer": "ingest", "dag_id": "ingest", "run_id": "manual__1", "version": ""}]
    # the versioned form (contract §6): "<version id> <dag_id>/<run_id>"
    assert markers({"airflow_dcache.done.ingest": "0000AB;adler32:0a1b2c3d ingest/manual__2"}) == [
        {"consumer": "ingest", "dag_id": "ingest", "run_id": "manual__2", "version": "0000AB;adler32:0a1b2c3d"}]


def test_lineage_rows_match_site_and_path_and_merge_markers() -> None:
    record = {"schema": lineage.LINEAGE_SCHEMA, "input": {"site": "main", "path": "/d/f.h5"},
              "outputs": [{"site": "main", "path": "/p/f.png", "size": 3}], "function": {"name": "fn"},
              "dag_id": "ingest", "run_id": "r1"}
    events = [{"extra": record, "timestamp": "2026-01-01T00:00:01Z"},
              {"extra": {**record, "input": {"site": "buffer", "path": "/d/f.h5"}}, "timestamp": "t"},
              {"extra": {"schema": "other"}, "timestamp": "t"}]
    rows = lineage.runs_from_lineage(events, "main", "/d/f.h5")
    assert [(r["dag_id"], r["run_id"], r["function"]) for r in rows] == [("ingest", "r1", "fn")]
    merged = lineage.merge_runs(rows, [{"dag_id": "ingest", "run_id": "r1"}, {"dag_id": "x", "run_id": "r2"}])
    assert [(r["run_id"], r["source"]) for r in merged] == [("r1", "lineage"), ("r2", "marker")]


def test_lag_is_run_start_minus_first_upload_of_the_batch() -> None:
    batch = {"schema": lineage.BATCH_SCHEMA, "events": [{"time": "2026-01-01T00:00:02.000Z"},
                                                         {"time": "2026-01-01T00:00:01.000Z"}]}
    events = [{"timestamp": "2026-01-01T00:00:03Z", "extra": {"from_trigger": True, "payload": batch},
               "created_dagruns": [{"dag_id": "d", "run_id": "r", "start_date": "2026-01-01T00:00:04.500Z"}]}]
    row = lineage.lag_summary({"uri": "dcache://main/x", "id": 1, "watchers": [{"name": "w"}]}, events,
                              {"d": {"start_date": "2026-01-01T00:00:04.500Z"}})
    assert row["recent"][0]["lag_seconds"] == 3.5 and row["recent"][0]["files"] == 2
    assert row["median_lag_seconds"] == 3.5
    assert row["last_event"].startswith("2026-01-01T00:00:03")
    assert row["last_run_start"].startswith("2026-01-01T00:00:04.5")


def test_view_url_links_a_path_on_a_connection() -> None:
    from airflow_dcache.plugins.urls import view_url

    assert view_url("dcache_main", "//data/incoming/r 1.h5", base_url="https://af.example.org/") == (
        "https://af.example.org/dcache/ui/?conn=dcache_main&path=%2Fdata%2Fincoming%2Fr+1.h5")
    assert view_url("dcache_main", "/data", base_url="") == "/dcache/ui/?conn=dcache_main&path=%2Fdata"
    with pytest.raises(InvalidInput):
        view_url("dcache_main", "/data/../etc", base_url="")
