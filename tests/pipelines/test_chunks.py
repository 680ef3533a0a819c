"""Chunking and the per-file stage runner of the chunked ingest pipeline (pure logic, a real thread pool)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_dcache.pipelines import chunks as ck


def _items(n: int, size: int = 10) -> list[dict]:
    return [{"path": f"/data/incoming/f{i:03d}.h5", "size": size} for i in range(n)]


def test_chunks_respect_files_and_bytes_and_keep_the_order() -> None:
    chunks = ck.make_chunks(_items(7), max_files=3, max_bytes=10_000)
    assert [len(c["files"]) for c in chunks] == [3, 3, 1]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    paths = [e["item"]["path"] for c in chunks for e in c["files"]]
    assert paths == [i["path"] for i in _items(7)]
    assert all(e["failed"] is None and e["timings"] == {} for c in chunks for e in c["files"])
    by_bytes = ck.make_chunks(_items(5, size=40), max_files=50, max_bytes=100)
    assert [len(c["files"]) for c in by_bytes] == [2, 2, 1]


def test_a_file_larger_than_max_bytes_gets_its_own_chunk_and_unknown_size_counts_as_empty() -> None:
    items: list[dict[str, Any]] = [{"path": "/a", "size": 5}, {"path": "/big", "size": 500},
                                   {"path": "/b", "size": None}, {"path": "/c"}]
    chunks = ck.make_chunks(items, max_files=10, max_bytes=100)
    assert [[e["item"]["path"] for e in c["files"]] for c in chunks] == [["/a"], ["/big"], ["/b", "/c"]]
    assert ck.make_chunks([], max_files=3) == []
    # a burst beyond max_files x max_chunks makes bigger chunks, not more of them; bytes still split
    big = ck.make_chunks(_items(2000), max_files=50, max_bytes=10 ** 12)
    assert len(big) == 12 and {len(c["files"]) for c in big} == {167, 163}
    assert len(ck.make_chunks(_items(100), max_files=50, max_bytes=10 ** 12)) == 2
    assert len(ck.make_chunks(_items(100), max_files=50, max_bytes=10 ** 12, max_chunks=None)) == 2
    assert len(ck.make_chunks(_items(30, size=40), max_files=50, max_bytes=100, max_chunks=3)) == 15
    with pytest.raises(ValueError, match="chunk_max_count"):
        ck.make_chunks(_items(1), max_chunks=0)


def test_bad_limits_and_items_name_the_field() -> None:
    with pytest.raises(ValueError, match="chunk_max_files: expected a whole number >= 1, got 0"):
        ck.make_chunks(_items(1), max_files=0)
    with pytest.raises(ValueError, match="chunk_max_bytes"):
        ck.make_chunks(_items(1), max_bytes="lots")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_max_files"):
        ck.make_chunks(_items(1), max_files=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="/x: size must be a whole number"):
        ck.make_chunks([{"path": "/x", "size": -1}])
    with pytest.raises(ValueError, match="items: expected work items with a 'path'"):
        ck.make_chunks([{"name": "x"}])
    assert ck.whole("12", "f") == 12


def test_a_failed_file_is_carried_and_its_chunk_mates_go_on() -> None:
    (chunk,) = ck.make_chunks(_items(5), max_files=10)

    def first(entry: dict) -> dict:
        if entry["item"]["path"].endswith("f002.h5"):
            raise ValueError("no HDF5 signature")
        return {"checked": True}

    seen: list[str] = []

    def second(entry: dict) -> None:
        seen.append(entry["item"]["path"])

    out = ck.run_stages(chunk, [("validate", first), ("replicate", second)], concurrency=2)
    bad = out["files"][2]
    assert bad["failed"] == {"stage": "validate", "reason": "/data/incoming/f002.h5: no HDF5 signature"}
    assert "replicate" not in bad["timings"] and "validate" in bad["timings"]
    assert sorted(seen) == [i["path"] for i in _items(5) if not i["path"].endswith("f002.h5")]
    good = [e for e in out["files"] if not e["failed"]]
    assert len(good) == 4 and all(e["checked"] and set(e["timings"]) == {"validate", "replicate"} for e in good)
    assert all(s <= e for f in good for s, e in f["timings"].values())
    # the input is not changed; a later stage skips the failed file
    assert chunk["files"][2]["failed"] is None
    later = ck.run_stages(out, [("publish", lambda e: {"published": True})])
    assert "published" not in later["files"][2] and later["files"][2]["failed"]["stage"] == "validate"
    assert [e["item"]["path"] for e in ck.live(later)] == [e["item"]["path"] for e in good]


def test_a_message_that_names_the_file_is_kept_as_it_is() -> None:
    assert ck.failure(ValueError("/x.h5: empty file"), "/x.h5") == "/x.h5: empty file"
    assert ck.failure(RuntimeError(), "/x.h5") == "/x.h5: RuntimeError"
    assert len(ck.failure(ValueError("x" * 5000), "/x.h5")) == ck.MAX_REASON


def test_concurrency_is_bounded_and_used() -> None:
    (chunk,) = ck.make_chunks(_items(12), max_files=20)
    running, peak, lock = [0], [0], threading.Lock()

    def slow(entry: dict) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    ck.run_stages(chunk, [("s", slow)], concurrency=3)
    assert peak[0] == 3
    with pytest.raises(ValueError, match="concurrency"):
        ck.run_stages(chunk, [("s", slow)], concurrency=0)


def test_a_transient_error_fails_the_stage_not_the_files() -> None:
    (chunk,) = ck.make_chunks(_items(3), max_files=10)

    def down(entry: dict) -> None:
        if entry["item"]["path"].endswith("f001.h5"):
            raise ConnectionError("destination site 'buffer' is unreachable")

    with pytest.raises(ck.StageUnreachable, match=r"1 file\(s\) of chunk 0 .*f001.h5: destination site"):
        ck.run_stages(chunk, [("replicate", down)], transient=(ConnectionError,))


def test_a_step_with_nothing_to_do_records_no_timing() -> None:
    (chunk,) = ck.make_chunks(_items(2), max_files=10)
    out = ck.run_stages(chunk, [("resume", lambda e: {"resumed": True} if "f000" in e["item"]["path"] else ck.SKIP),
                                ("validate", lambda e: ck.SKIP if e.get("resumed") else {"checked": True}),
                                ("archive_rule", lambda e: None)])
    assert set(out["files"][0]["timings"]) == {"resume", "archive_rule"} and "checked" not in out["files"][0]
    assert set(out["files"][1]["timings"]) == {"validate", "archive_rule"} and out["files"][1]["checked"]


def test_qos_requests_are_grouped_while_one_is_in_flight_and_nobody_waits_for_later_files() -> None:
    from airflow_dcache.pipelines.chunk_steps import QosBatcher

    sent: list[list[str]] = []
    first_in_flight, release = threading.Event(), threading.Event()

    def submit(paths: list[str]) -> str:
        sent.append(paths)
        if len(sent) == 1:
            first_in_flight.set()
            assert release.wait(5)
        if "/bad" in paths:
            raise RuntimeError("bulk request refused")
        return f"r{len(sent)}"

    qos = QosBatcher(submit)
    results: dict[str, str] = {}

    def ask(path: str) -> None:
        try:
            results[path] = qos.request(path)
        except RuntimeError as exc:
            results[path] = f"error: {exc}"

    first = threading.Thread(target=ask, args=("/a",))
    first.start()
    assert first_in_flight.wait(5)  # the first file's request went at once, alone
    others = [threading.Thread(target=ask, args=(p,)) for p in ("/b", "/c")]
    for t in others:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert sent[0] == ["/a"] and sorted(sent[1]) == ["/b", "/c"] and len(sent) == 2 and qos.requests == 2
    assert results == {"/a": "r1", "/b": "r2", "/c": "r2"}
    ask("/bad")
    assert results["/bad"] == "error: bulk request refused"


def test_fail_live_and_outcomes() -> None:
    (chunk,) = ck.make_chunks(_items(3), max_files=10)
    step = ck.run_stages(chunk, [("validate", lambda e: (_ for _ in ()).throw(ValueError("bad"))
                                  if "f000" in e["item"]["path"] else None)])
    step["files"][2]["skipped"] = "processed by another run first"
    failed = ck.fail_live(step, "archive_rule", RuntimeError("bulk request refused"))
    assert failed["files"][0]["failed"]["stage"] == "validate"  # failed before: keeps its own reason
    assert failed["files"][1]["failed"] == {"stage": "archive_rule",
                                            "reason": "/data/incoming/f001.h5: bulk request refused"}
    report = ck.outcomes([step])
    assert report["counts"] == {"failed": 1, "processed": 1, "skipped": 1}
    assert report["failed"] == [{"path": "/data/incoming/f000.h5", "pnfsid": None, "stage": "validate",
                                 "reason": "/data/incoming/f000.h5: bad"}]
    assert ck.failure_summary(report["failed"]) == "/data/incoming/f000.h5 (validate): /data/incoming/f000.h5: bad"


def test_rerun_params_select_the_failed_files_of_a_run() -> None:
    from airflow_dcache.pipelines.chunk_steps import rerun_params

    failed = [{"path": "/data/incoming/b.h5", "stage": "validate", "reason": "x"},
              {"path": "/data/incoming/a.h5", "stage": "preview", "reason": "y"}]
    params = rerun_params({"only_failed_of": "manual__1", "paths": [], "reprocess": False}, failed)
    assert params["paths"] == ["/data/incoming/a.h5", "/data/incoming/b.h5"] and params["allow_empty"] is True
    assert rerun_params({"only_failed_of": "manual__1"}, [])["paths"] == []
    with pytest.raises(ValueError, match="only_failed_of: run 'nope' of this DAG has no report"):
        rerun_params({"only_failed_of": "nope"}, None)
    with pytest.raises(ValueError, match="only_failed_of, paths: give one of them"):
        rerun_params({"only_failed_of": "manual__1", "paths": ["/data/incoming/*.h5"]}, failed)


def test_final_chunk_reports_the_files_a_failed_stage_task_left_behind() -> None:
    from airflow_dcache.pipelines.chunk_steps import final_chunk

    (initial,) = ck.make_chunks(_items(2), max_files=10)
    processed = ck.run_stages(initial, [("publish", lambda e: {"published": {}})])
    xcoms = {("chunks.process", "return_value"): processed}
    state = final_chunk(lambda task, key: xcoms.get((task, key)), "chunks", initial)
    assert [e["failed"]["stage"] for e in state["files"]] == ["record_when_archived", "record_when_archived"]
    assert "chunks.record_when_archived (chunk 0) did not complete" in state["files"][0]["failed"]["reason"]
    nothing = final_chunk(lambda task, key: None, "chunks", initial)
    assert {e["failed"]["stage"] for e in nothing["files"]} == {"process"}
    assert "chunks.process (chunk 0) did not complete" in nothing["files"][0]["failed"]["reason"]
    done = {**processed, "files": [{**e, "lineage": {}} for e in processed["files"]]}
    xcoms[("chunks.record_when_archived", "outcome")] = done
    assert final_chunk(lambda task, key: xcoms.get((task, key)), "chunks", initial) == done


def test_a_rerun_path_that_selects_nothing_is_listed_as_skipped() -> None:
    from airflow_dcache.pipelines.chunk_steps import note_missing

    skipped = [{"path": "/c", "reason": "already processed by d/r"}]
    note_missing(["/a", "/b", "/c"], [{"path": "/a"}], skipped)
    assert skipped[1:] == [{"path": "/b", "pnfsid": None, "reason": "gone: no file at this path any more"}]


def test_a_rerun_names_exactly_the_failed_files_even_with_glob_characters(pipe_main: Any, pipe_workdir: str) -> None:
    """dCache names may contain ``*``: the re-run of ``a*.h5`` must not also pick up ``ab.h5``."""
    import io

    from airflow_dcache.pipelines import steps
    from airflow_dcache.pipelines.chunk_steps import rerun_params

    for name in ("a*.h5", "ab.h5"):
        pipe_main.upload(io.BytesIO(b"\x89HDF\r\n\x1a\n" + name.encode()), f"{pipe_workdir}/{name}")
    params = rerun_params({"only_failed_of": "manual__1"}, [{"path": f"{pipe_workdir}/a*.h5", "stage": "validate"}])
    items = steps.collect_work_items(pipe_main, params, None, consumer="rerun-test", site="main", run_id="r2",
                                     buffer_root="/tmp-buffer", output_root="/tmp-out")
    assert [i["path"] for i in items] == [f"{pipe_workdir}/a*.h5"]
    globbed = steps.collect_work_items(pipe_main, {"paths": [f"{pipe_workdir}/a*.h5"]}, None, consumer="rerun-test",
                                       site="main", run_id="r2", buffer_root="/tmp-buffer", output_root="/tmp-out")
    assert sorted(i["path"] for i in globbed) == [f"{pipe_workdir}/a*.h5", f"{pipe_workdir}/ab.h5"]  # a person's glob


def test_marking_a_version_again_in_the_same_run_is_success_not_anothers_win(pipe_main: Any,
                                                                               pipe_workdir: str) -> None:
    """A retried lineage task must not take its own marker for another run's and delete its outputs."""
    import io

    from airflow_dcache.events.version import FileVersion
    from airflow_dcache.pipelines import steps

    path = f"{pipe_workdir}/m.h5"
    pipe_main.upload(io.BytesIO(b"\x89HDF\r\n\x1a\nmark"), path)
    version = FileVersion.of(pipe_main.stat(path, checksum=True))
    assert steps.mark_processed(pipe_main, path, "dag_m", "dag_m/run_1", version=version)
    assert steps.mark_processed(pipe_main, path, "dag_m", "dag_m/run_1", version=version)  # the retry
    assert not steps.mark_processed(pipe_main, path, "dag_m", "dag_m/run_2", version=version)  # another run
    plain = f"{pipe_workdir}/plain.h5"
    pipe_main.upload(io.BytesIO(b"plain"), plain)
    assert steps.mark_processed(pipe_main, plain, "dag_m", "dag_m/run_1")
    assert steps.mark_processed(pipe_main, plain, "dag_m", "dag_m/run_1")
    assert not steps.mark_processed(pipe_main, plain, "dag_m", "dag_m/run_2")
