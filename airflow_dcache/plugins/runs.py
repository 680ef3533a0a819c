"""A chunked run, file by file: what the view's *Runs* tab shows (pure functions over Airflow's answers).

In the chunked design Airflow's grid has a row per chunk and stage, not per file; a person asking
"where is my file, and why did it fail" needs the file's row. Two sources give it, both read through
Airflow's API as the logged-in user:

- while the run runs: the ``chunk`` task's XCom (which file is in which chunk) and the task instances
  of the run (which stage each chunk is at) — two requests, however many files;
- once the run's ``report`` ran: its XCom ``outcomes``, each file's outcome, failed stage and reason and
  its per-stage timings (the stage bodies record them per file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_dcache.pipelines.design import CHUNKED, DONE, FAILED, Design
from airflow_dcache.plugins.validation import visible


def _name(path: str) -> str:
    return visible(path.rsplit("/", 1)[-1])


def _durations(timings: Mapping[str, Any] | None) -> dict[str, float]:
    """Seconds per stage from ``{"stage": [start, end]}`` (epoch seconds); malformed entries are left out."""
    out: dict[str, float] = {}
    for stage, span in (timings or {}).items():
        if isinstance(span, Sequence) and len(span) == 2 and all(isinstance(t, int | float) for t in span):
            out[str(stage)] = round(float(span[1]) - float(span[0]), 3)
    return out


def rows_from_report(outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per file of a finished run, from its report's ``outcomes``."""
    rows = []
    for f in outcomes.get("files") or []:
        if not isinstance(f, Mapping):
            continue
        failed = f.get("failed") if isinstance(f.get("failed"), Mapping) else None
        rows.append({
            "path": str(f.get("path")), "name": _name(str(f.get("path"))), "pnfsid": f.get("pnfsid"),
            "chunk": f.get("chunk"), "outcome": f.get("outcome"),
            "stage": failed.get("stage") if failed else ("done" if f.get("outcome") == "processed" else None),
            "reason": visible(str(failed.get("reason"))) if failed else (visible(str(f["reason"]))
                                                                         if f.get("reason") else None),
            "durations": _durations(f.get("timings")),
        })
    return rows


def rows_in_flight(units: Any, task_instances: Iterable[Mapping[str, Any]],
                   design: Design = CHUNKED) -> list[dict[str, Any]]:
    """One row per file of a running run: the stage its chunk is at (per-file failures show once reported)."""
    by_unit: dict[int, dict[str, Mapping[str, Any]]] = {}
    for ti in task_instances:
        by_unit.setdefault(int(ti.get("map_index", -1)), {})[str(ti.get("task_id"))] = ti
    rows: list[dict[str, Any]] = []
    for index, items in enumerate(design.units(units)):
        tis = by_unit.get(index, {})
        stage, outcome = "done", "processed"
        for task_id, _label in design.task_ids():
            state = (tis.get(task_id) or {}).get("state") or "waiting"
            if state in DONE:
                continue
            stage, outcome = task_id.split(".", 1)[1], ("failed" if state in FAILED else state)
            break
        for item in items:
            path = str(item.get("path"))
            rows.append({"path": path, "name": _name(path), "pnfsid": item.get("pnfsid"), "chunk": index,
                         "outcome": outcome, "stage": stage, "reason": None, "durations": {}})
    return rows


def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        key = str(row.get("outcome"))
        out[key] = out.get(key, 0) + 1
    return out
