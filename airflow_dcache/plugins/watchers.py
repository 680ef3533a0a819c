"""Which watchers would pick an event up, and whether a run already processed its file.

The watchers' configuration lives in their trigger rows (kwargs, encrypted at rest). The view reads
only the rows of watchers on assets the *user* can see (the asset list comes from Airflow's API as
the user), rebuilds each ``DCacheStorageEventTrigger`` from its kwargs and asks its own
:class:`~airflow_dcache.events.EventFilter` — so "filtered out" means exactly what the trigger does.
Nothing of the kwargs is returned to the browser except the watched paths.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
TRIGGER_CLASS = "airflow_dcache.triggers.storage_events.DCacheStorageEventTrigger"


@dataclass(frozen=True)
class Watcher:
    """One storage-event watcher: its asset, the DAGs it schedules and the rebuilt trigger."""

    asset_uri: str
    site: str
    name: str
    dags: tuple[str, ...]
    trigger: Any

    def covers(self, path: str) -> bool:
        for root in self.trigger.paths:
            if path == root:
                return True
            if self.trigger.recursive and path.startswith(root.rstrip("/") + "/"):
                return True
            if posixpath.dirname(path) == root:
                return True
        return False


def load_watchers(assets: Iterable[Mapping[str, Any]]) -> list[Watcher]:
    """Rebuild the storage-event triggers watching the given ``/assets`` entries (others ignored)."""
    from airflow_dcache.assets.dcache import split_uri

    wanted: dict[int, tuple[Mapping[str, Any], str]] = {}
    for asset in assets:
        for w in asset.get("watchers") or []:
            if isinstance(w.get("trigger_id"), int):
                wanted[w["trigger_id"]] = (asset, str(w.get("name")))
    if not wanted:
        return []
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_dcache.triggers.storage_events import DCacheStorageEventTrigger

    result = []
    with create_session() as session:
        for row in session.scalars(select(Trigger).where(Trigger.id.in_(list(wanted)))):
            if row.classpath != TRIGGER_CLASS:
                continue
            asset, name = wanted[row.id]
            try:
                trigger = DCacheStorageEventTrigger(**dict(row.kwargs))
                site, _ = split_uri(str(asset["uri"]))
            except Exception as exc:  # a stale row must not break the page
                log.warning("watcher %s: cannot rebuild its trigger: %s", name, type(exc).__name__)
                continue
            dags = tuple(sorted(d["dag_id"] for d in asset.get("scheduled_dags") or []))
            result.append(Watcher(str(asset["uri"]), site, name, dags, trigger))
    return result


def classify(*, site: str, path: str, kind: str, is_dir: bool, size: int | None, exists: bool,
             markers: list[dict[str, str]], watchers: Iterable[Watcher]) -> dict[str, Any]:
    """``processed`` (with the runs), ``waiting`` (a watcher takes it, no marker yet) or ``filtered``."""
    from airflow_dcache.events.model import EventKind, StorageEvent, format_time

    event = StorageEvent(kind=EventKind(kind), path=path, name=posixpath.basename(path) or "/", is_dir=is_dir,
                         time=format_time(time.time()), source="sse", cursor="", size=size)
    covering = [w for w in watchers if w.site == site and w.covers(path)]
    taking = sorted({d for w in covering if w.trigger.filter.matches(event) for d in w.dags})
    if covering and not taking:  # e.g. the IN_ATTRIB of the marker itself: not what the watcher takes
        kind_ok = [w for w in covering if not w.trigger.filter.kinds or event.kind.value in w.trigger.filter.kinds]
        if kind_ok:
            reason = "excluded by the watchers' name or size filters"
        else:
            reason = "watchers take only " + ", ".join(sorted({k for w in covering for k in w.trigger.events}))
        return {"status": "filtered", "runs": [], "dags": [], "reason": reason}
    if markers:  # also without a live watcher: a run of a paused or removed DAG still processed it
        return {"status": "processed", "runs": markers, "dags": sorted({m["dag_id"] for m in markers})}
    if not covering:
        return {"status": "filtered", "runs": [], "dags": [], "reason": "no watcher on this directory"}
    if not exists:
        return {"status": "filtered", "runs": [], "dags": taking, "reason": "the file is gone"}
    return {"status": "waiting", "runs": [], "dags": taking}


def watcher_views(watchers: Iterable[Watcher]) -> list[dict[str, Any]]:
    return [{"asset": w.asset_uri, "name": w.name, "site": w.site, "paths": list(w.trigger.paths),
             "recursive": w.trigger.recursive, "dags": list(w.dags)} for w in watchers]
