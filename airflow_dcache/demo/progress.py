"""Follow sample files through the pipelines with Airflow's REST API, and print what a newcomer should see.

A pipeline run covers the files of its triggering events; its first task (``collect``) returns them
in map-index order, so every later mapped task instance with the same map index works on the same
file. That is all this module assumes of a DAG: a ``collect`` task and a list of stage task ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_dcache.testing.airflow_stack import AirflowAPI

DONE = {"success", "skipped"}
FAILED = {"failed", "upstream_failed"}


@dataclass
class Pipeline:
    """A DAG to follow: its id, its stages (task ids, in order) and a short label per stage."""

    dag_id: str
    stages: Sequence[tuple[str, str]]  # (task_id, label)
    collect_task: str = "collect"


@dataclass
class FileProgress:
    """One sample file's journey: which run took it and each stage's state and duration."""

    name: str
    dag_id: str
    run_id: str | None = None
    map_index: int | None = None
    uploaded_at: float | None = None
    states: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    started: dict[str, datetime] = field(default_factory=dict)
    ended: dict[str, datetime] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def finished(self, stages: Iterable[str]) -> bool:
        return all(self.states.get(s) in DONE for s in stages)

    def failed(self) -> bool:
        return any(s in FAILED for s in self.states.values())


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
        self._collected: dict[tuple[str, str], list[str]] = {}

    def _names_of_run(self, dag_id: str, run_id: str) -> list[str] | None:
        key = (dag_id, run_id)
        if key not in self._collected:
            try:
                value = self.api.xcom(dag_id, run_id, self.pipelines[dag_id].collect_task)
            except Exception:  # not pushed yet
                return None
            items = [i.get("item", i) for i in (value or []) if isinstance(i, Mapping)]  # expand_kwargs wraps
            self._collected[key] = [str(i.get("name") or str(i.get("path", "")).rsplit("/", 1)[-1]) for i in items]
        return self._collected[key]

    def poll(self) -> None:
        for dag_id, pipeline in self.pipelines.items():
            for run in self.api.dag_runs(dag_id):
                names = self._names_of_run(dag_id, run["dag_run_id"])
                if not names:
                    continue
                for index, name in enumerate(names):
                    fp = self.files.get(name)
                    if fp is None or fp.dag_id != dag_id or (fp.run_id and fp.run_id != run["dag_run_id"]):
                        continue
                    if fp.run_id is None:
                        fp.run_id, fp.map_index = run["dag_run_id"], index
                        self.say(f"  {name:<24} picked up by {dag_id} run {run['dag_run_id']}")
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

    def wait(self, timeout: float, interval: float = 1.0) -> bool:
        """Poll until every file finished every stage of its pipeline (True) or one failed / time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if all(fp.finished(s for s, _ in self.pipelines[fp.dag_id].stages) for fp in self.files.values()):
                return True
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
