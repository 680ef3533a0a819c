"""Stateful property test of issue 16's rules: a file *version* (pnfsid + checksum) is the unit of work.

A Hypothesis state machine uploads, overwrites, deletes and moves files on the bundled service (over
HTTP, as alice), collects work items the way an event or a manual selection would, marks them processed,
stages buffer replicas and cleans run areas, and checks each result against a small model of the
namespace. The paths are chosen to collide: the same names in two directories, ``.h5``, ``..h5``, ``a``
next to ``a.h5`` and a 255-byte name; the run ids include two manual runs that differ only in sub-seconds.

Rules checked:

* a new upload (or an overwrite) is a new version: a pnfsid never seen before;
* a marker counts only for the version it was set for (``current_state``/``already_processed`` of the new
  version after an overwrite say "not processed"); a moved file keeps its version and its marker;
* ``mark_processed(version=v)`` on a path that no longer holds ``v`` raises ``VersionChanged`` and changes
  no marker; marking one version twice returns ``False`` the second time;
* ``require_version`` passes iff the file at the path is the item's version;
* work items of distinct (run, version) pairs never share, nor nest inside one another, a ``buffer_dir``,
  ``buffer_path``, ``buffer_output_dir`` or ``output_dir``, and each ``buffer_dir`` lies strictly inside its
  run area, so ``clean_run_area`` of one run removes that run's replicas and nobody else's.

Bounded for CI (a few seconds); ``DCACHE_SOAK=1`` runs many more and longer sequences.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from airflow_dcache.events import StorageEvent
from airflow_dcache.events.version import FileVersion, parse_marker, require_version
from airflow_dcache.exceptions import VersionChanged
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import steps
from tests.pipelines.conftest import put

CONSUMER = "dcache_ingest_pipeline"
LONG_NAME = "r" * 252 + ".h5"  # 255 bytes, the longest name a dCache path component may have
NAMES = ("run001.h5", ".h5", "..h5", "a", "a.h5", LONG_NAME)
DIRS = ("x", "y/deeper")
PATHS = tuple(f"{d}/{n}" for d in DIRS for n in NAMES)  # relative to the watched root
CONTENTS = (b"\x89HDF\r\n\x1a\nfirst", b"\x89HDF\r\n\x1a\nsecond", b"\x89HDF\r\n\x1a\nthird-longer")
RUN_IDS = (
    "manual__2026-12-02T01:36:02.000001+00:00",
    "manual__2026-12-02T01:36:02.000002+00:00",  # the same second as the one above
    "asset_triggered__2026-12-02T01:36:02.368204+00:00_LDaLRoEa",
)
AREAS = ("buffer_dir", "buffer_path", "buffer_output_dir", "output_dir")

SOAK = os.environ.get("DCACHE_SOAK") == "1"
MACHINE_SETTINGS = settings(
    max_examples=300 if SOAK else 40, stateful_step_count=80 if SOAK else 30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _under(inner: str, outer: str) -> bool:
    a, b = inner.rstrip("/"), outer.rstrip("/")
    return a == b or a.startswith(b + "/")


class VersionMachine(RuleBasedStateMachine):
    """The model: which version (pnfsid) each path holds, each version's checksum, and which are marked."""

    hook: DCacheHook  # set by the test before the machine runs

    items = Bundle("items")

    def __init__(self) -> None:
        super().__init__()
        self.root = f"/home/alice/sm-{uuid.uuid4().hex[:12]}"
        self.source_root = f"{self.root}/in"
        self.buffer_root = f"{self.root}/work"
        self.output_root = f"{self.root}/out"
        for d in DIRS:
            self.hook.mkdir(f"{self.source_root}/{d}")
        self.files: dict[str, str] = {}  # relative path -> pnfsid there now
        self.checksum: dict[str, str] = {}  # pnfsid -> "adler32:…"
        self.marks: dict[str, str] = {}  # pnfsid -> run id that marked it
        self.collected: list[dict[str, Any]] = []
        self.staged: list[tuple[str, list[str]]] = []  # (run id, replica paths) still expected on the buffer

    def teardown(self) -> None:
        self.hook.delete(self.root, recursive=True, missing_ok=True)

    def _abs(self, rel: str) -> str:
        return f"{self.source_root}/{rel}"

    def _rel(self, path: str) -> str:
        return steps.relative_path(path, self.source_root)

    def _where(self, run_id: str) -> dict[str, Any]:
        return {"site": "main", "run_id": run_id, "buffer_root": self.buffer_root, "output_root": self.output_root,
                "source_root": self.source_root}

    # --- changes to the namespace -----------------------------------------------------------------------------

    @rule(rel=st.sampled_from(PATHS), content=st.sampled_from(CONTENTS))
    def upload(self, rel: str, content: bytes) -> None:
        """A new upload or an overwrite: always a new version, whatever the content."""
        put(self.hook, self._abs(rel), content)
        entry = self.hook.stat(self._abs(rel), checksum=True)
        assert entry.pnfsid and entry.pnfsid not in self.checksum, f"{rel}: pnfsid {entry.pnfsid} reused"
        self.checksum[entry.pnfsid] = FileVersion.of(entry).checksum or ""
        self.files[rel] = entry.pnfsid

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=st.sampled_from(CONTENTS))
    def overwrite(self, data: st.DataObject, content: bytes) -> None:
        """A re-upload to a path that holds a file (the same content too): a new version."""
        self.upload(data.draw(st.sampled_from(sorted(self.files)), label="overwrite"), content)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.files)), label="delete")
        self.hook.delete(self._abs(rel))
        del self.files[rel]

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        """A rename (onto an existing file too): the same version at another path, with its marker."""
        source = data.draw(st.sampled_from(sorted(self.files)), label="move from")
        target = data.draw(st.sampled_from([p for p in PATHS if p != source]), label="move to")
        self.hook.move(self._abs(source), self._abs(target), overwrite=True)
        self.files[target] = self.files.pop(source)

    # --- the pipeline's view ----------------------------------------------------------------------------------

    @precondition(lambda self: self.files)
    @rule(target=items, data=st.data(), run_id=st.sampled_from(RUN_IDS),
          via=st.sampled_from(("event", "event-completed", "selection")))
    def collect(self, data: st.DataObject, run_id: str, via: str) -> dict[str, Any]:
        """A work item for the version at a path now, as an event (raw or completed) or a manual run builds it."""
        rel = data.draw(st.sampled_from(sorted(self.files)), label="collect")
        path = self._abs(rel)
        if via == "selection":
            records = steps.select_records(self.hook, [path])
            (item,) = steps.work_items_from_selection(records, **self._where(run_id))
        else:
            entry = self.hook.stat(path)
            event = StorageEvent(kind="closed_after_write", path=path, name=entry.name, is_dir=False,
                                 time="2026-12-02T01:36:02.000Z", source="sse", cursor=f"ch#{entry.pnfsid}",
                                 pnfsid=entry.pnfsid, size=entry.size)
            (item,) = steps.work_items_from_events([event], **self._where(run_id))
            if via == "event-completed":
                state = steps.current_state(self.hook, item, CONSUMER, reprocess=True)
                assert isinstance(state, dict), state
                assert state["version"]["checksum"] == self.checksum[self.files[rel]]
                item = state
        pnfsid = self.files[rel]
        assert item["pnfsid"] == pnfsid and item["version"]["pnfsid"] == pnfsid and item["path"] == path
        run_area = steps.run_area(self.buffer_root, run_id)
        assert _under(item["buffer_dir"], run_area) and item["buffer_dir"].rstrip("/") != run_area, item
        assert item["buffer_path"] == f"{item['buffer_dir']}/in/{item['name']}"
        assert _under(item["buffer_output_dir"], item["buffer_dir"])
        out_run = f"{self.output_root}/{steps.run_folder(run_id)}"
        assert _under(item["output_dir"], out_run) and item["output_dir"] != out_run, item
        for area in AREAS:
            assert "/./" not in item[area] + "/" and "/../" not in item[area] + "/" and "//" not in item[area], item
        item = {**item, "_run": run_id}
        self._check_disjoint(item)
        self.collected.append(item)
        return item

    def _check_disjoint(self, new: dict[str, Any]) -> None:
        key = (steps.run_folder(new["_run"]), new["pnfsid"])
        for old in self.collected:
            if (steps.run_folder(old["_run"]), old["pnfsid"]) == key:
                continue  # the same version in the same run: the same work
            for a in AREAS:
                for b in AREAS:
                    assert not _under(new[a], old[b]), (new["path"], a, new[a], old["path"], b, old[b])
                    assert not _under(old[b], new[a]), (old["path"], b, old[b], new["path"], a, new[a])

    @rule(item=items)
    def mark(self, item: dict[str, Any]) -> None:
        self._mark(item)

    @precondition(lambda self: self.collected)
    @rule()
    def mark_latest(self) -> None:
        """The common case: a run marks the item it just collected (maybe after a change meanwhile)."""
        self._mark(self.collected[-1])

    def _mark(self, item: dict[str, Any]) -> None:
        rel, pnfsid = self._rel(item["path"]), item["pnfsid"]
        here = self.files.get(rel)
        before = self._markers(rel)
        value = f"{CONSUMER}/{item['_run']}"
        event(f"mark: {'refused' if here != pnfsid else 'again' if pnfsid in self.marks else 'new'}")
        if here != pnfsid:
            with pytest.raises(VersionChanged):
                steps.mark_processed(self.hook, item["path"], CONSUMER, value, version=item["version"])
            assert self._markers(rel) == before, f"a refused marker changed {rel}'s markers"
            return
        done = steps.mark_processed(self.hook, item["path"], CONSUMER, value, version=item["version"])
        if pnfsid in self.marks:
            # the run that holds the marker marking again is a retry (success); any other run is refused
            assert done is (self.marks[pnfsid] == item["_run"]), f"{rel}: version {pnfsid} marked twice"
            assert self._markers(rel) == before
        else:
            assert done is True
            self.marks[pnfsid] = item["_run"]
            version, dag_id, run_id = parse_marker(self._markers(rel)[steps.marker_name(CONSUMER)])
            assert version is not None and version.pnfsid == pnfsid and (dag_id, run_id) == (CONSUMER, item["_run"])

    def _markers(self, rel: str) -> dict[str, str]:
        if rel not in self.files:
            return {}
        xattrs = self.hook.stat(self._abs(rel), xattr=True).xattrs or {}
        return {k: v for k, v in xattrs.items() if k.startswith(steps.MARKER_PREFIX)}

    @rule(item=items)
    def check_state(self, item: dict[str, Any]) -> None:
        self._check_state(item)

    @precondition(lambda self: self.collected)
    @rule()
    def check_latest(self) -> None:
        self._check_state(self.collected[-1])

    def _check_state(self, item: dict[str, Any]) -> None:
        rel, pnfsid = self._rel(item["path"]), item["pnfsid"]
        state = steps.current_state(self.hook, item, CONSUMER)
        event(f"state: {state.split(':')[0].split(' by ')[0] if isinstance(state, str) else 'to process'}")
        if rel not in self.files:
            assert isinstance(state, str) and state.startswith("gone"), state
        elif self.files[rel] != pnfsid:
            assert isinstance(state, str) and state.startswith("superseded"), state
        elif pnfsid in self.marks:
            assert state == f"already processed by {CONSUMER}/{self.marks[pnfsid]}", state
        else:
            assert isinstance(state, dict), state
            assert state["pnfsid"] == pnfsid and state["version"]["checksum"] == self.checksum[pnfsid]
        assert steps.already_processed(self.hook, item, CONSUMER) is isinstance(state, str)

    @rule(item=items)
    def require(self, item: dict[str, Any]) -> None:
        rel = self._rel(item["path"])
        event(f"require: {'same' if self.files.get(rel) == item['pnfsid'] else 'changed'}")
        if self.files.get(rel) == item["pnfsid"]:
            entry = require_version(self.hook, item["path"], item["version"], step="test")
            assert entry.pnfsid == item["pnfsid"]
        else:
            with pytest.raises(VersionChanged):
                require_version(self.hook, item["path"], item["version"], step="test")

    # --- buffer areas -------------------------------------------------------------------------------------

    @rule(item=items)
    def stage(self, item: dict[str, Any]) -> None:
        """What a run leaves on the buffer for an item: the replica and a function output."""
        paths = [item["buffer_path"], f"{item['buffer_output_dir']}/preview.png"]
        for path in paths:
            put(self.hook, path, b"replica")
        self.staged.append((item["_run"], paths))

    @precondition(lambda self: self.staged)
    @rule(run_id=st.sampled_from(RUN_IDS))
    def clean(self, run_id: str) -> None:
        steps.clean_run_area(self.hook, self.buffer_root, run_id)
        kept = []
        for run, paths in self.staged:
            for path in paths:
                if run == run_id:
                    assert not self.hook.exists(path), f"clean-up of {run_id} left {path}"
                else:
                    assert self.hook.exists(path), f"clean-up of {run_id} removed {run}'s {path}"
            if run != run_id:
                kept.append((run, paths))
        self.staged = kept

    # --- the namespace is what the model says -------------------------------------------------------------

    @invariant()
    def namespace_matches_model(self) -> None:
        seen: dict[str, str] = {}
        for d in DIRS:
            for entry in self.hook.list_dir(f"{self.source_root}/{d}"):
                if entry.is_file:
                    seen[f"{d}/{entry.name}"] = entry.pnfsid or ""
        assert seen == self.files


@pytest.fixture
def machine_hook(pipe_main: DCacheHook) -> Iterator[DCacheHook]:
    yield pipe_main


def test_file_versions_markers_and_areas(machine_hook: DCacheHook) -> None:
    class Machine(VersionMachine):
        hook = machine_hook

    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)
