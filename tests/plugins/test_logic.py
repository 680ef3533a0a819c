"""Pure parts of the dCache view: path rules and roots, safe echoes, lineage rows, the lag summary (no I/O)."""

from __future__ import annotations

import pytest

from airflow_dcache.paths import InvalidPath, OutsideAllowedRoots, clean_path
from airflow_dcache.plugins import lineage, live
from airflow_dcache.plugins.access import Access, restricted_roots
from airflow_dcache.plugins.storage import markers
from airflow_dcache.plugins.validation import InvalidInput, clean_page, echo, visible


def _access(roots: tuple[str, ...] | None) -> Access:
    return Access("dcache_main", "main", "dcache_main", roots is None, roots, "someone")


@pytest.mark.parametrize(("raw", "clean"), [
    ("/", "/"), ("//data//x/", "/data/x"), ("/data/./x", "/data/x"), ("/data/x y", "/data/x y"),
])
def test_paths_normalise(raw: str, clean: str) -> None:
    assert _access(None).path(raw) == clean


@pytest.mark.parametrize("raw", ["", "data", "/data/../etc", "/..", "/a\x00b", "/a\nb", "/" + "a" * 5000,
                                 " /data/x.h5", "/data/x.h5\t"])
def test_paths_refused(raw: str) -> None:
    with pytest.raises(InvalidPath) as err:
        _access(None).path(raw)
    assert err.value.field == "path"


@pytest.mark.parametrize("raw", ["/data/x.h5 ", "/data/ x.h5", "/data/x\u202e.h5", "/data//x/./", "/data/x\u00a0"])
def test_the_view_has_no_path_rule_of_its_own(raw: str) -> None:
    """Whatever ``airflow_dcache.paths.clean_path`` decides (keep or refuse), the view decides the same."""
    try:
        expected: object = clean_path(raw)
    except InvalidPath as exc:
        expected = (type(exc), exc.field, exc.message)
    try:
        got: object = _access(None).path(raw)
    except InvalidPath as exc:
        got = (type(exc), exc.field, exc.message)
    assert got == expected


def test_roots_confine_paths() -> None:
    acc = _access(("/data/incoming", "/data/processed"))
    assert acc.path("/data/incoming/a") == "/data/incoming/a"
    assert acc.path("/data/processed/") == "/data/processed"
    for outside in ("/", "/data", "/data/incomingX", "/home/alice"):
        with pytest.raises(OutsideAllowedRoots):
            acc.path(outside)
    with pytest.raises(OutsideAllowedRoots):  # no root at all: nothing, never everything
        _access(()).path("/data/incoming/a")


def test_restricted_roots_prefer_the_setting_else_watched_plus_extra() -> None:
    assert restricted_roots(("/a",), ["/w"], ["/x"]) == ("/a",)
    assert restricted_roots(None, ["/w", "/w/"], ["/x"]) == ("/w", "/x")
    assert restricted_roots(None, [], []) == ()


def test_access_never_asserts_roles() -> None:
    assert _access(("/data",)).hook().assert_roles is False
    assert _access(None).hook().assert_roles is False


def test_visible_escapes_bidi_and_invisible_characters() -> None:
    assert visible("x\u202egnp.h5") == "x\\u202egnp.h5"
    assert visible("a\u200bb\u00a0c\x07 d é 日本") == "a\\u200bb\\u00a0c\\u0007 d é 日本"
    assert visible("\U000e0041") == "\\U000e0041"  # a tag character


def test_echo_is_bounded_and_never_reflects_control_characters() -> None:
    shown = echo("k" * 10_000)
    assert len(shown) < 130 and "10000 characters" in shown
    assert echo("\x1b[2J") == "'\\u001b[2J'"


def test_live_slots_per_user_within_the_process_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "_active", 0)
    monkeypatch.setattr(live, "_per_user", {})
    for _ in range(live.MAX_STREAMS_PER_USER):
        live._acquire("viewer")
    with pytest.raises(live.TooManyStreams, match="per user"):
        live._acquire("viewer")
    for i in range(live.MAX_STREAMS - live.MAX_STREAMS_PER_USER):
        live._acquire(f"user{i}")
    with pytest.raises(live.TooManyStreams, match="per API server"):
        live._acquire("late")
    live._release("viewer")
    assert live.usage() == (live.MAX_STREAMS - 1, {"viewer": 3, **{f"user{i}": 1 for i in range(12)}})


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
    from airflow_dcache.events import LINEAGE_SCHEMA, lineage_chunk

    record = {"schema": LINEAGE_SCHEMA, "input": {"site": "main", "path": "/d/f.h5"},
              "outputs": [{"site": "main", "path": "/p/f.png", "size": 3}], "function": {"name": "fn"},
              "dag_id": "ingest", "run_id": "r1"}
    events = [{"extra": record, "timestamp": "2026-01-01T00:00:01Z"},
              {"extra": {**record, "input": {"site": "buffer", "path": "/d/f.h5"}}, "timestamp": "t"},
              {"extra": {"schema": "other"}, "timestamp": "t"}]
    rows = lineage.runs_from_lineage(events, "main", "/d/f.h5")
    assert [(r["dag_id"], r["run_id"], r["function"]) for r in rows] == [("ingest", "r1", "fn")]
    merged = lineage.merge_runs(rows, [{"dag_id": "ingest", "run_id": "r1"}, {"dag_id": "x", "run_id": "r2"}])
    assert [(r["run_id"], r["source"]) for r in merged] == [("r1", "lineage"), ("r2", "marker")]
    # a chunked run's asset event: one event, the records of all its files
    other = {**record, "input": {"site": "main", "path": "/d/g.h5"}, "run_id": "r3"}
    chunk = {"extra": lineage_chunk([other, {**record, "run_id": "r3"}], dag_id="ingest", run_id="r3", chunk=0),
             "timestamp": "2026-01-01T00:00:02Z"}
    rows = lineage.runs_from_lineage([*events, chunk], "main", "/d/f.h5")
    assert [(r["run_id"], r["time"]) for r in rows] == [("r3", "2026-01-01T00:00:02Z"), ("r1", "2026-01-01T00:00:01Z")]


def test_lag_is_run_start_minus_first_upload_of_the_batch() -> None:
    batch = {"schema": "airflow-dcache/storage-events/v1", "events": [{"time": "2026-01-01T00:00:02.000Z"},
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
    for bad in ("/data/../etc", "/data/x\x00.h5"):
        with pytest.raises(InvalidPath):
            view_url("dcache_main", bad, base_url="")


def test_runs_rows_from_the_report_and_in_flight() -> None:
    from airflow_dcache.plugins import runs

    outcomes = {"files": [
        {"path": "/d/a.h5", "pnfsid": "A", "chunk": 0, "outcome": "processed", "failed": None, "reason": None,
         "timings": {"preview": [10.0, 12.5], "bogus": "x"}},
        {"path": "/d/b\u202e.h5", "pnfsid": "B", "chunk": 0, "outcome": "failed",
         "failed": {"stage": "validate", "reason": "/d/b.h5: no HDF5 signature"}, "timings": {}},
        "garbage"]}
    rows = runs.rows_from_report(outcomes)
    assert [(r["outcome"], r["stage"]) for r in rows] == [("processed", "done"), ("failed", "validate")]
    assert rows[0]["durations"] == {"preview": 2.5} and rows[1]["name"] == "b\\u202e.h5"
    assert runs.counts(rows) == {"processed": 1, "failed": 1}
    units = [{"index": 0, "files": [{"item": {"path": "/d/a.h5"}}, {"item": {"path": "/d/b.h5"}}]},
             {"index": 1, "files": [{"item": {"path": "/d/c.h5"}}]}]
    tis = [{"task_id": "chunks.process", "map_index": 0, "state": "success"},
           {"task_id": "chunks.record_when_archived", "map_index": 0, "state": "deferred"},
           {"task_id": "chunks.process", "map_index": 1, "state": "upstream_failed"}]
    flight = runs.rows_in_flight(units, tis)
    assert [(r["path"], r["chunk"], r["stage"], r["outcome"]) for r in flight] == [
        ("/d/a.h5", 0, "record_when_archived", "deferred"), ("/d/b.h5", 0, "record_when_archived", "deferred"),
        ("/d/c.h5", 1, "process", "failed")]
    assert runs.rows_in_flight(None, tis) == []


def test_run_ids_are_checked() -> None:
    from airflow_dcache.plugins.validation import InvalidInput, clean_run_id

    assert clean_run_id("manual__2026-12-06T20:06:00.1+00:00") == "manual__2026-12-06T20:06:00.1+00:00"
    for bad in ("", "a/b", " x", "x\u202e", "x" * 251, None):
        with pytest.raises(InvalidInput, match="run_id"):
            clean_run_id(bad)


def test_the_page_names_each_element_once_and_the_script_finds_each_name() -> None:
    """Ids are the script's handles: a second ``id="run-files"`` once made *Run a function* write its file
    list over the Runs tab's file table, which then stayed empty."""
    import re
    from collections import Counter
    from pathlib import Path

    import airflow_dcache.plugins as plugins

    static = Path(plugins.__file__).parent / "static"
    ids = Counter(re.findall(r'\bid="([^"]+)"', (static / "index.html").read_text()))
    assert [name for name, n in ids.items() if n > 1] == []
    wanted = set(re.findall(r'\$\("#([\w-]+)', (static / "app.js").read_text()))
    assert wanted <= set(ids), sorted(wanted - set(ids))
