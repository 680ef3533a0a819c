"""Follow sample files through the pipelines with Airflow's REST API, and print what a newcomer should see.

A pipeline run covers the files of its triggering events; one task (``collect``, or ``chunk`` in the
chunked design) returns its mapped units in map-index order — one file each, or a chunk of files —
so every later mapped task instance with the same map index works on that file (or its chunk). That is
all this module assumes of a DAG: that task, a list of stage task ids, and optionally a ``report`` task
whose XCom ``failed`` names the files that failed inside a chunk (their stage tasks still succeed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_dcache.pipelines.design import DONE, FAILED, PER_FILE, Design
from airflow_dcache.testing.airflow_stack import AirflowAPI


@dataclass
class Pipeline:
    """A DAG to follow: its id, its stages (task ids, in order) and a short label per stage."""

    dag_id: str
    stages: Sequence[tuple[str, str]]  # (task_id, label)
    #: how the units task's XCom maps to files (a file per map index unless a design says chunks)
    design: Design = PER_FILE
    #: a task whose XCom ``failed`` lists ``{"path", "stage", "reason"}`` of files failed inside a unit
    report_task: str | None = None

    @classmethod
    def of(cls, dag_id: str, design: Design) -> Pipeline:
        """The ingest pipeline ``dag_id`` as ``design`` lays it out."""
        return cls(dag_id, design.task_ids(), design, "report" if design.units_task == "chunk" else None)


@dataclass
class FileProgress:
    """One sample file's journey: which run took it and each stage's state and duration."""

    name: str
    dag_id: str
    path: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    uploaded_at: float | None = None
    states: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    started: dict[str, datetime] = field(default_factory=dict)
    ended: dict[str, datetime] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    #: why the file failed inside its chunk (the run's report), though its chunk's tasks succeeded
    failure: str | None = None
    #: the run's report was read (pipelines with a report are done for a file only then)
    reported: bool = False

    def finished(self, stages: Iterable[str]) -> bool:
        return all(self.states.get(s) in DONE for s in stages)

    def failed(self) -> bool:
        return self.failure is not None or any(s in FAILED for s in self.states.values())


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class ProgressTracker:
    """Polls runs and task instances; reports each stage a file completes exactly once."""

    def __init__(self, api: AirflowAPI, pipelines: Sequence[Pipeline], files: Mapping[str, str],
                 say: Callable[[str], None] = print) -> None:
        """:param files: sample file name → the dag_id expected to process it."""
        self.api = api
        self.pipelines = {p.dag_id: p for p in pipelines}
        self.files = {name: FileProgress(name, dag_id) for name, dag_id in files.items()}
        self.say = say
        self._units: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}

    def _units_of_run(self, dag_id: str, run_id: str) -> list[list[dict[str, Any]]] | None:
        """The run's work items per map index, once its units task pushed them."""
        key = (dag_id, run_id)
        if key not in self._units:
            pipeline = self.pipelines[dag_id]
            try:
                value = self.api.xcom(dag_id, run_id, pipeline.design.units_task)
            except Exception:  # not pushed yet
                return None
            self._units[key] = pipeline.design.units(value)
        return self._units[key]

    def poll(self) -> None:
        for dag_id, pipeline in self.pipelines.items():
            for run in self.api.dag_runs(dag_id):
                units = self._units_of_run(dag_id, run["dag_run_id"])
                if not units:
                    continue
                for index, items in enumerate(units):
                    for item in items:
                        name = str(item.get("name") or str(item.get("path", "")).rsplit("/", 1)[-1])
                        fp = self.files.get(name)
                        if fp is None or fp.dag_id != dag_id or (fp.run_id and fp.run_id != run["dag_run_id"]):
                            continue
                        if fp.run_id is None:
                            fp.run_id, fp.map_index, fp.path = run["dag_run_id"], index, item.get("path")
                            self.say(f"  {name:<24} picked up by {dag_id} run {run['dag_run_id']}"
                                     + (f" (chunk {index})" if pipeline.design.units_task == "chunk" else ""))
                self._update_run(pipeline, run["dag_run_id"])

    def _update_run(self, pipeline: Pipeline, run_id: str) -> None:
        mine = [fp for fp in self.files.values() if fp.run_id == run_id and fp.dag_id == pipeline.dag_id]
        if not mine:
            return
        labels = dict(pipeline.stages)
        for ti in self.api.task_instances(pipeline.dag_id, run_id):
            if ti["task_id"] not in labels:
                continue
            for fp in mine:
                if ti["map_index"] not in (-1, fp.map_index):
                    continue
                state = ti.get("state") or "none"
                if fp.states.get(ti["task_id"]) == state:
                    continue
                fp.states[ti["task_id"]] = state
                if ti.get("start_date"):
                    fp.started[ti["task_id"]] = _time(ti["start_date"])  # type: ignore[assignment]
                if ti.get("end_date"):
                    fp.ended[ti["task_id"]] = _time(ti["end_date"])  # type: ignore[assignment]
                if state in DONE | FAILED:
                    fp.durations[ti["task_id"]] = float(ti.get("duration") or 0.0)
                    mark = "ok" if state in DONE else state.upper()
                    self.say(f"  {fp.name:<24} {labels[ti['task_id']]:<14} {mark:<6} "
                             f"{fp.durations[ti['task_id']]:5.1f} s")
        if pipeline.report_task:
            self._read_report(pipeline, run_id, mine)

    def _read_report(self, pipeline: Pipeline, run_id: str, mine: list[FileProgress]) -> None:
        """Files the run's report names failed: their chunk's stage tasks succeeded, the file did not."""
        if all(fp.reported for fp in mine) or not pipeline.report_task:
            return
        try:
            failed = self.api.xcom(pipeline.dag_id, run_id, pipeline.report_task, key="failed")
        except Exception:  # no report yet
            return
        for fp in mine:
            fp.reported = True
        for row in failed or []:
            for fp in mine:
                if isinstance(row, Mapping) and row.get("path") == fp.path:
                    fp.failure = f"{row.get('stage')}: {row.get('reason')}"
                    self.say(f"  {fp.name:<24} FAILED at {row.get('stage')}: {str(row.get('reason'))[:200]}")

    def wait(self, timeout: float, interval: float = 1.0) -> bool:
        """Poll until every file finished every stage of its pipeline (True) or one failed / time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if all(fp.finished(s for s, _ in self.pipelines[fp.dag_id].stages)
                   and (fp.reported or not self.pipelines[fp.dag_id].report_task) for fp in self.files.values()):
                return not any(fp.failed() for fp in self.files.values())
            if any(fp.failed() for fp in self.files.values()):
                return False
            time.sleep(interval)
        return False


def summary_table(files: Iterable[FileProgress], pipelines: Mapping[str, Pipeline],
                  extra: Callable[[FileProgress], Mapping[str, str]] | None = None) -> str:
    """A plain-text table: file, run, each stage's duration, then the ``extra`` columns (outputs, archive state)."""
    files = list(files)
    stage_labels: list[str] = []
    for p in pipelines.values():
        stage_labels += [label for _, label in p.stages if label not in stage_labels]
    extras = [dict(extra(fp)) if extra else {} for fp in files]
    extra_cols: list[str] = []
    for e in extras:
        extra_cols += [k for k in e if k not in extra_cols]
    header = ["file", "run", *stage_labels, *extra_cols]
    rows = []
    for fp, e in zip(files, extras, strict=True):
        by_label = {label: task for task, label in pipelines[fp.dag_id].stages}
        cells = [fp.name, fp.run_id or "-"]
        for label in stage_labels:
            task = by_label.get(label)
            cells.append("" if task is None else (f"{fp.durations[task]:.1f}s" if task in fp.durations else "-"))
        cells += [e.get(c, "") for c in extra_cols]
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in rows]
    return "\n".join(out)
