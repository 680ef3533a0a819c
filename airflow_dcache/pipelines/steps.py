"""The steps the example pipelines share: which files a run covers, validation, "already processed", lineage.

Every example DAG (SSE- or Kafka-triggered ingest, UI runs, the daily reprocess, stage-and-process)
covers a list of *work items*, one per input file version, computed by :func:`work_items_from_events`
or :func:`work_items_from_selection`. A work item is plain JSON, so it travels in XCom and feeds
mapped task groups:

.. code-block:: json

    {"path": "/data/incoming/run001.h5", "name": "run001.h5", "pnfsid": "0000AB…", "size": 43502,
     "key": "0000AB…:closed_after_write", "site": "main", "buffer_dir": "/data/work/<run>/run001",
     "buffer_path": "/data/work/<run>/run001/run001.h5", "buffer_output_dir": "/data/work/<run>/run001/out",
     "output_dir": "/data/processed/<run>/run001"}

Everything a file leaves on the buffer site sits under its ``buffer_dir``, so removing that one
directory drops the replica and the function's outputs once they are published on ``main``.

"Already processed" is the marker of the event contract (§6): the extended attribute
``airflow_dcache.done.<consumer>`` on the input file version, set with ``CREATE`` (a compare-and-set
in dCache's namespace), so two runs racing on one event cannot both commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_dcache.events import EventKind, StorageEvent, lineage_record

MARKER_PREFIX = "airflow_dcache.done."
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Kinds that mean "a new file version is complete and can be processed".
READY_KINDS = frozenset({EventKind.CLOSED_AFTER_WRITE, EventKind.MOVED_IN})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def marker_name(consumer: str) -> str:
    """The xattr that records that ``consumer`` (a DAG id) processed a file version."""
    return MARKER_PREFIX + _UNSAFE.sub("_", consumer)


def run_folder(run_id: str) -> str:
    """A run id as one short, safe path component.

    ``asset_triggered__2026-12-02T01:36:02.368204+00:00_LDaLRoEa`` becomes
    ``2026-12-02T013602_LDaLRoEa``: the run type prefix, sub-seconds and the UTC offset go (run ids are
    UTC), ``:`` and ``+`` are not safe in every client's paths; the random suffix keeps it unique.
    """
    text = re.sub(r"^[a-z_]+__", "", run_id)
    text = re.sub(r"(T\d\d):?(\d\d):?(\d\d)(\.\d+)?(\+00:?00)?", r"\1\2\3", text)
    return _UNSAFE.sub("_", text)


def _item(path: str, name: str, *, pnfsid: str | None, size: int | None, key: str, site: str, run_id: str,
          buffer_root: str, output_root: str) -> dict[str, Any]:
    folder = run_folder(run_id)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    buffer_dir = f"{buffer_root.rstrip('/')}/{folder}/{stem}"
    return {
        "path": path, "name": name, "pnfsid": pnfsid, "size": size, "key": key, "site": site,
        "buffer_dir": buffer_dir, "buffer_path": f"{buffer_dir}/{name}", "buffer_output_dir": f"{buffer_dir}/out",
        "output_dir": f"{output_root.rstrip('/')}/{folder}/{stem}",
    }


def work_items_from_events(events: Iterable[StorageEvent], *, site: str, run_id: str, buffer_root: str,
                           output_root: str, kinds: Iterable[EventKind] = READY_KINDS) -> list[dict[str, Any]]:
    """One work item per completed file version among ``events`` (dirs and other kinds dropped; by key, once)."""
    wanted = frozenset(kinds)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event in events:
        if event.is_dir or event.kind not in wanted:
            continue
        # A file both written and moved in is one version: key by pnfsid when there is one.
        identity = event.pnfsid or event.key
        if identity in seen:
            continue
        seen.add(identity)
        items.append(_item(event.path, event.name, pnfsid=event.pnfsid, size=event.size, key=event.key,
                           site=site, run_id=run_id, buffer_root=buffer_root, output_root=output_root))
    return items


def work_items_from_selection(records: Iterable[Mapping[str, Any]], *, site: str, run_id: str, buffer_root: str,
                              output_root: str) -> list[dict[str, Any]]:
    """Work items for files chosen by path or criteria (UI runs, backfills): keyed like a closed-after-write event."""
    items = []
    for rec in records:
        pnfsid = rec.get("pnfsid")
        key = f"{pnfsid}:{EventKind.CLOSED_AFTER_WRITE.value}" if pnfsid else f"{rec['path']}@manual"
        items.append(_item(str(rec["path"]), str(rec["name"]), pnfsid=pnfsid, size=rec.get("size"), key=key,
                           site=site, run_id=run_id, buffer_root=buffer_root, output_root=output_root))
    return items


def split_patterns(value: str | Sequence[str] | None) -> list[str]:
    """UI params give a path, a glob, a comma/newline separated string or a list; always a clean list."""
    if value is None:
        return []
    parts = re.split(r"[\n,]", value) if isinstance(value, str) else [str(v) for v in value]
    out = [p.strip() for p in parts if p and p.strip()]
    for p in out:
        if not p.startswith("/"):
            raise ValueError(f"paths: {p!r} is not an absolute dCache path")
        if "/../" in p + "/" or p.endswith("/.."):
            raise ValueError(f"paths: {p!r} must not contain '..'")
    return out


def select_records(hook: Any, patterns: Sequence[str]) -> list[dict[str, Any]]:
    """Resolve paths and globs (``/data/incoming/*.h5``) to file-list records, with the selection module."""
    from airflow_dcache.selection import Criteria, record, select

    records: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            root = pattern[: pattern.rfind("/", 0, min(pattern.find(c) for c in "*?[" if c in pattern)) + 1] or "/"
            recursive = "/" in pattern[len(root):]
            for rec in select(hook.list_dir, root.rstrip("/") or "/", Criteria(path_glob=pattern),
                              recursive=recursive):
                records[rec["path"]] = rec
        else:
            entry = hook.stat(pattern, checksum=True)
            if entry.file_type != "REGULAR":
                raise ValueError(f"paths: {pattern} is a directory; use a glob such as {pattern.rstrip('/')}/*")
            records[entry.path or pattern] = record(entry)
    return [records[p] for p in sorted(records)]


def collect_work_items(hook: Any, params: Mapping[str, Any], triggering_asset_events: Any, *, consumer: str,
                       site: str, run_id: str, buffer_root: str, output_root: str) -> list[dict[str, Any]]:
    """A run's work items: the UI's ``paths`` when given, else the triggering events' files; minus those done.

    The same function serves the automatic (event) and the interactive (trigger form) runs, so both
    cover files in one way. Files ``consumer`` already processed are dropped unless ``params['reprocess']``.
    """
    from airflow_dcache.events import events_from_asset_events

    where: dict[str, Any] = {"site": site, "run_id": run_id, "buffer_root": buffer_root, "output_root": output_root}
    patterns = split_patterns(params.get("paths"))
    if patterns:
        items = work_items_from_selection(select_records(hook, patterns), **where)
    else:
        items = work_items_from_events(events_from_asset_events(triggering_asset_events), **where)
    if not params.get("reprocess"):
        items = [i for i in items if not already_processed(hook, i, consumer)]
    return items


def already_processed(hook: Any, item: Mapping[str, Any], consumer: str) -> bool:
    """True if the file at ``item['path']`` is still the same version and carries ``consumer``'s marker."""
    from airflow_dcache.exceptions import NotFound

    try:
        entry = hook.stat(item["path"], xattr=True)
    except NotFound:
        return True  # gone: nothing left to process
    if item.get("pnfsid") and entry.pnfsid and entry.pnfsid != item["pnfsid"]:
        return True  # overwritten since the event: the new version has its own event
    return marker_name(consumer) in (entry.xattrs or {})


def mark_processed(hook: Any, path: str, consumer: str, value: str) -> bool:
    """Set the marker with CREATE; False if another run set it first (its result stands)."""
    from airflow_dcache.exceptions import Conflict

    try:
        hook.set_xattr(path, {marker_name(consumer): value}, mode="CREATE")
    except Conflict:
        return False
    return True


def check_hdf5(hook: Any, item: Mapping[str, Any], *, max_size: int | None = None) -> dict[str, Any]:
    """Validate an input before it is replicated: exists as this version, non-empty, checksum known, HDF5.

    Only the first 8 bytes are read (``hook.read_range``: a ranged GET with the hook's own credentials),
    so a multi-GB raw file is not moved to be validated. Returns the item with size and checksums.
    """
    entry = hook.stat(item["path"], checksum=True)
    problems = []
    if entry.file_type != "REGULAR":
        problems.append("not a regular file")
    if not entry.size:
        problems.append("empty file")
    if max_size is not None and (entry.size or 0) > max_size:
        problems.append(f"larger than {max_size} bytes")
    if not entry.checksums:
        problems.append("no checksum known to dCache")
    if item.get("pnfsid") and entry.pnfsid != item["pnfsid"]:
        problems.append("overwritten since the event (a new version has its own event)")
    if not problems and hook.read_range(item["path"], 0, len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
        problems.append("no HDF5 signature")
    if problems:
        raise ValueError(f"{item['path']}: " + "; ".join(problems))
    return {**item, "size": entry.size, "pnfsid": entry.pnfsid, "checksums": dict(entry.checksums or {})}


def build_lineage(item: Mapping[str, Any], activation: Mapping[str, Any], *, output_site: str, dag_id: str,
                  run_id: str, function_name: str | None = None) -> dict[str, Any]:
    """The contract's lineage record from a work item and the function's activation record or result.

    ``activation`` is either the activation record (``function: {name, digest}``) or what
    ``DCacheFunctionOperator`` returns (its XCom): the function's result with ``outputs``,
    ``activation_record`` (the record's path) and ``function_digest`` — which names no function, so
    pass ``function_name`` (the DAG knows which function it ran).
    """
    function = dict(activation.get("function") or {}) if isinstance(activation.get("function"), Mapping) else {}
    outputs = [{"site": output_site, "path": o["path"], "size": o.get("size"), "checksums": o.get("checksums")}
               for o in activation.get("outputs", [])]
    return lineage_record(
        event_key=str(item["key"]),
        input={"site": item.get("site") or "main", "path": item["path"], "pnfsid": item.get("pnfsid"),
               "checksums": item.get("checksums") or {}},
        outputs=outputs,
        function={"name": function.get("name") or function_name or activation.get("function_name") or "unknown",
                  "digest": function.get("digest") or activation.get("function_digest") or activation.get("digest")
                  or "unknown"},
        dag_id=dag_id, run_id=run_id,
        activation_record=activation.get("activation_record") or activation.get("record_path"),
    )
