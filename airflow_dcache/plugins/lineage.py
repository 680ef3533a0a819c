"""Event → run lineage and lag, computed from what Airflow's API returns (pure functions, no I/O).

Two sources say a file was processed: the pipelines' lineage records (contract §7), written as the
``extra`` of an output asset event, and the done-marker xattr on the input (contract §6). Lag is read
from watcher asset events: each carries a batch whose events have the time the trigger received the
upload; the asset event's ``created_dagruns`` say which run it started and when that run began.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_dcache.events.payload import SCHEMA as BATCH_SCHEMA
from airflow_dcache.events.payload import lineage_records


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def runs_from_lineage(asset_events: Iterable[Mapping[str, Any]], site: str, path: str) -> list[dict[str, Any]]:
    """The lineage records whose input is ``site``:``path``, newest first, as rows for the page (a chunk's
    asset event carries the records of all its files: each is read)."""
    rows = []
    records = ((ev, record) for ev in asset_events for record in lineage_records(ev.get("extra")))
    for ev, extra in records:
        inp = extra.get("input") or {}
        if inp.get("path") != path or (inp.get("site") and site and inp.get("site") != site):
            continue
        rows.append({
            "dag_id": extra.get("dag_id") or ev.get("source_dag_id"),
            "run_id": extra.get("run_id") or ev.get("source_run_id"),
            "time": ev.get("timestamp"),
            "function": (extra.get("function") or {}).get("name"),
            "outputs": [{"site": o.get("site"), "path": o.get("path"), "size": o.get("size")}
                        for o in extra.get("outputs") or [] if isinstance(o, Mapping)],
            "event_key": extra.get("event_key"),
            "source": "lineage",
        })
    rows.sort(key=lambda r: str(r["time"] or ""), reverse=True)
    return rows


def merge_runs(lineage_rows: list[dict[str, Any]], markers: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Lineage rows plus marker-only runs (a run whose lineage event is gone or not visible)."""
    seen = {(r["dag_id"], r["run_id"]) for r in lineage_rows}
    rows = list(lineage_rows)
    for m in markers:
        if (m["dag_id"], m["run_id"]) not in seen:
            rows.append({"dag_id": m["dag_id"], "run_id": m["run_id"], "time": None, "function": None,
                         "outputs": [], "event_key": None, "source": "marker"})
    return rows


def batch_times(extra: Mapping[str, Any] | None) -> list[datetime]:
    """Receipt times of the events of a watcher asset event's batch payload."""
    payload = (extra or {}).get("payload") if isinstance(extra, Mapping) else None
    if not isinstance(payload, Mapping) or payload.get("schema") != BATCH_SCHEMA:
        return []
    times = [parse_time(e.get("time")) for e in payload.get("events") or [] if isinstance(e, Mapping)]
    return [t for t in times if t is not None]


def lag_summary(asset: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                last_runs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """One row of the lag table for a watched asset.

    :param asset: the ``/assets`` entry.
    :param events: its recent asset events (newest first).
    :param last_runs: per consuming DAG id, its most recent run (or ``None``).
    """
    recent = []
    last_event: datetime | None = None
    for ev in events:
        times = batch_times(ev.get("extra"))
        stamp = parse_time(ev.get("timestamp"))
        if stamp and (last_event is None or stamp > last_event):
            last_event = stamp
        if not times:
            continue
        first = min(times)
        for run in ev.get("created_dagruns") or []:
            start = parse_time(run.get("start_date"))
            if start is None:
                continue
            recent.append({"dag_id": run.get("dag_id"), "run_id": run.get("run_id"),
                           "upload": first.isoformat(), "run_start": start.isoformat(),
                           "lag_seconds": round((start - first).total_seconds(), 3), "files": len(times)})
    recent.sort(key=lambda r: r["run_start"], reverse=True)
    starts = [parse_time(r.get("start_date")) for r in last_runs.values() if r]
    started = [s for s in starts if s is not None]
    lags = [r["lag_seconds"] for r in recent]
    return {
        "uri": asset.get("uri"), "asset_id": asset.get("id"),
        "watchers": [w.get("name") for w in asset.get("watchers") or []],
        "dags": sorted(last_runs),
        "last_event": last_event.isoformat() if last_event else None,
        "last_run_start": max(started).isoformat() if started else None,
        "recent": recent[:20],
        "median_lag_seconds": sorted(lags)[len(lags) // 2] if lags else None,
    }
