"""The steps the example pipelines share: which files a run covers, validation, "already processed", lineage.

Every example DAG (SSE- or Kafka-triggered ingest, UI runs, the daily reprocess, stage-and-process)
covers a list of *work items*, one per input **file version** (pnfsid plus checksum, see
:mod:`airflow_dcache.events.version`), computed by :func:`work_items_from_events` or
:func:`work_items_from_selection`. A work item is plain JSON, so it travels in XCom and feeds mapped
task groups:

.. code-block:: json

    {"path": "/data/incoming/x/run001.h5", "name": "run001.h5", "pnfsid": "0000AB…", "size": 43502,
     "version": {"pnfsid": "0000AB…", "checksum": "adler32:…", "size": 43502, "mtime": …, "id": "…"},
     "key": "0000AB…:closed_after_write", "site": "main", "relative_path": "x/run001.h5",
     "buffer_dir": "/data/work/<run>/0000AB…", "buffer_path": "/data/work/<run>/0000AB…/in/run001.h5",
     "buffer_output_dir": "/data/work/<run>/0000AB…/out",
     "output_dir": "/data/processed/<run>/x/run001.h5/0000AB…"}

Where things go is derived from the version and the full path, never from the name's stem: the same
name in two run folders, a file called ``.h5``, or a re-upload of one path within a run each get their
own work area (``<buffer_root>/<run>/<pnfsid>``) and their own output folder
(``<output_root>/<run>/<path below the watched root>/<pnfsid>``). ``<run>`` is unique per run id. Everything a
file leaves on the buffer site sits under its ``buffer_dir``, and everything a run leaves under
:func:`run_area`, which the run's clean-up removes whatever the outcome.

"Already processed" is the marker of the event contract (§6): the extended attribute
``airflow_dcache.done.<consumer>`` = ``<version id> <dag_id>/<run_id>`` on the input, set with ``CREATE``
(a compare-and-set in dCache's namespace) after checking that the file is still that version, so two
runs racing on one version cannot both commit, and a marker never counts for another version.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from typing import Any

from airflow_dcache.events import EventKind, StorageEvent, lineage_record
from airflow_dcache.events.version import FileVersion, parse_marker, require_version, version_marker

log = logging.getLogger(__name__)

MARKER_PREFIX = "airflow_dcache.done."
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Kinds that mean "a new file version is complete and can be processed".
READY_KINDS = frozenset({EventKind.CLOSED_AFTER_WRITE, EventKind.MOVED_IN})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: Longest output folder path built from an input's path; longer ones are named by a digest instead.
MAX_DERIVED_PATH = 1024


def marker_name(consumer: str) -> str:
    """The xattr that records that ``consumer`` (a DAG id) processed a file version."""
    return MARKER_PREFIX + _UNSAFE.sub("_", consumer)


def run_folder(run_id: str) -> str:
    """A run id as one short, safe path component, unique per run id.

    ``asset_triggered__2026-12-02T01:36:02.368204+00:00_LDaLRoEa`` becomes
    ``2026-12-02T013602_LDaLRoEa-1a2b3c4d``: the run type prefix, sub-seconds and the UTC offset go
    (``:`` and ``+`` are not safe in every client's paths), and a digest of the whole run id keeps two
    runs apart that the readable part does not (two manual runs in one second, custom run ids).
    """
    text = re.sub(r"^[a-z_]+__", "", run_id)
    text = re.sub(r"(T\d\d):?(\d\d):?(\d\d)(\.\d+)?(\+00:?00)?", r"\1\2\3", text)
    readable = _UNSAFE.sub("_", text)[:80].strip(".") or "run"
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def run_area(buffer_root: str, run_id: str) -> str:
    """Everything one run puts on the buffer site: removed by the run's clean-up, whatever the outcome."""
    return f"{buffer_root.rstrip('/')}/{run_folder(run_id)}"


def relative_path(path: str, source_root: str | None) -> str:
    """``path`` below ``source_root`` (the watched directory), else without its leading ``/``."""
    root = (source_root or "").rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1:]
    return path.lstrip("/")


def version_folder(version: FileVersion | None, path: str) -> str:
    """One path component naming a file version: its pnfsid (a digest of the path without one)."""
    if version is not None:
        return _UNSAFE.sub("_", version.pnfsid)
    return "v-" + hashlib.sha256(path.encode()).hexdigest()[:24]


def _item(path: str, name: str, *, version: FileVersion | None, size: int | None, key: str, site: str,
          run_id: str, buffer_root: str, output_root: str, source_root: str | None = None) -> dict[str, Any]:
    folder = run_folder(run_id)
    vfolder = version_folder(version, path)
    buffer_dir = f"{buffer_root.rstrip('/')}/{folder}/{vfolder}"
    rel = relative_path(path, source_root)
    output_dir = f"{output_root.rstrip('/')}/{folder}/{rel}/{vfolder}"
    if len(output_dir.encode()) > MAX_DERIVED_PATH:  # a very deep or long input path: name it by a digest
        digest = hashlib.sha256(rel.encode()).hexdigest()[:16]
        output_dir = f"{output_root.rstrip('/')}/{folder}/_long/{digest}/{vfolder}"
    return {
        "path": path, "name": name, "pnfsid": version.pnfsid if version else None, "size": size, "key": key,
        "site": site, "version": version.to_json() if version else None, "relative_path": rel,
        "buffer_dir": buffer_dir, "buffer_path": f"{buffer_dir}/in/{name}", "buffer_output_dir": f"{buffer_dir}/out",
        "output_dir": output_dir,
    }


def item_version(item: Mapping[str, Any]) -> FileVersion | None:
    """The version a work item is about (``None`` for an item built without a pnfsid)."""
    if isinstance(item.get("version"), Mapping) and item["version"].get("pnfsid"):
        return FileVersion.from_json(item["version"])
    if item.get("pnfsid"):
        return FileVersion(pnfsid=str(item["pnfsid"]), size=item.get("size"))
    return None


def work_items_from_events(events: Iterable[StorageEvent], *, site: str, run_id: str, buffer_root: str,
                           output_root: str, kinds: Iterable[EventKind] = READY_KINDS,
                           source_root: str | None = None) -> list[dict[str, Any]]:
    """One work item per completed file version among ``events`` (dirs and other kinds dropped; by version, once).

    Two events of one version (written, then moved in) are one item; two versions of one path (an
    overwrite within the burst) are two items, each with its own areas.
    """
    wanted = frozenset(kinds)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event in events:
        if event.is_dir or event.kind not in wanted:
            continue
        identity = event.pnfsid or event.key
        if identity in seen:
            continue
        seen.add(identity)
        checksums = event.extra.get("checksums") if isinstance(event.extra.get("checksums"), Mapping) else None
        version = (FileVersion.of(_Entry(event.path, event.pnfsid, checksums, event.size))
                   if event.pnfsid else None)
        items.append(_item(event.path, event.name, version=version, size=event.size, key=event.key,
                           site=site, run_id=run_id, buffer_root=buffer_root, output_root=output_root,
                           source_root=source_root))
    return items


class _Entry:
    """The fields :meth:`FileVersion.of` reads, for sources that are not a stat result."""

    def __init__(self, path: str, pnfsid: str | None, checksums: Mapping[str, str] | None, size: int | None,
                 mtime: int | None = None) -> None:
        self.path, self.pnfsid, self.checksums, self.size, self.mtime = path, pnfsid, checksums, size, mtime


def work_items_from_selection(records: Iterable[Mapping[str, Any]], *, site: str, run_id: str, buffer_root: str,
                              output_root: str, source_root: str | None = None) -> list[dict[str, Any]]:
    """Work items for files chosen by path or criteria (UI runs, backfills): keyed like a closed-after-write event."""
    items = []
    for rec in records:
        pnfsid = rec.get("pnfsid")
        key = f"{pnfsid}:{EventKind.CLOSED_AFTER_WRITE.value}" if pnfsid else f"{rec['path']}@manual"
        version = FileVersion.of(_Entry(str(rec["path"]), pnfsid, rec.get("checksums"), rec.get("size"))) \
            if pnfsid else None
        items.append(_item(str(rec["path"]), str(rec["name"]), version=version, size=rec.get("size"), key=key,
                           site=site, run_id=run_id, buffer_root=buffer_root, output_root=output_root,
                           source_root=source_root))
    return items


def split_patterns(value: str | Sequence[str] | None, allowed_roots: Sequence[str] | None = None) -> list[str]:
    """UI params give a path, a glob, a comma/newline separated string or a list; always a clean list.

    Each entry is checked like every path of the provider (:func:`airflow_dcache.paths.clean_path`)
    and must lie inside ``allowed_roots`` (the pipeline's trees): a REST or UI trigger, a backfill's
    conf and the CLI all come through here, so none of them can point a pipeline elsewhere. The check
    happens before any dCache call: nothing outside is listed, read or written to XCom.
    """
    from airflow_dcache.paths import require_within

    if value is None:
        return []
    # a text (the trigger form's string) is a list typed by hand: its items are trimmed; the items of a
    # real list keep trailing spaces, which are part of a dCache name
    if isinstance(value, str):
        items = [p.strip() for p in re.split(r"[\n,]", value) if p.strip()]
    else:
        items = [str(v).lstrip() for v in value if str(v).strip()]
    return [require_within(p, allowed_roots, field="paths") for p in items]


def select_records(hook: Any, patterns: Sequence[str], *, allow_empty: bool = False,
                   literal: bool = False) -> list[dict[str, Any]]:
    """Resolve paths and globs (``/data/incoming/*.h5``) to file-list records, with the selection module.

    A pattern that matches nothing (a typo, a wrong folder) is an error naming it, unless
    ``allow_empty``: a manual run over nothing would otherwise be a green run that did nothing. With
    ``literal`` every entry is one path, even when its name contains ``*``, ``?`` or ``[`` (dCache
    allows them): how a re-run names exactly the files that failed, never others that a glob would match.
    """
    from airflow_dcache.exceptions import NotFound
    from airflow_dcache.selection import Criteria, record, select

    records: dict[str, dict[str, Any]] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        if not literal and any(c in pattern for c in "*?["):
            root = pattern[: pattern.rfind("/", 0, min(pattern.find(c) for c in "*?[" if c in pattern)) + 1] or "/"
            recursive = "/" in pattern[len(root):]
            try:
                found = select(hook.list_dir, root.rstrip("/") or "/", Criteria(path_glob=pattern),
                               recursive=recursive)
            except NotFound:
                found = []
            if not found:
                unmatched.append(pattern)
            for rec in found:
                records[rec["path"]] = rec
        else:
            try:
                entry = hook.stat(pattern, checksum=True)
            except NotFound:
                unmatched.append(pattern)
                continue
            if entry.file_type != "REGULAR":
                raise ValueError(f"paths: {pattern} is a directory; use a glob such as {pattern.rstrip('/')}/*")
            records[entry.path or pattern] = record(entry)
    if unmatched and not allow_empty:
        raise ValueError(f"paths: nothing matches {', '.join(unmatched)} (set allow_empty to run anyway)")
    return [records[p] for p in sorted(records)]


def collect_work_items(hook: Any, params: Mapping[str, Any], triggering_asset_events: Any, *, consumer: str,
                       site: str, run_id: str, buffer_root: str, output_root: str, source_root: str | None = None,
                       skipped: MutableSequence[dict[str, Any]] | None = None,
                       allowed_roots: Sequence[str] | None = None, selector: Any = None,
                       selector_name: str | None = None, interval: tuple[Any, Any] | None = None,
                       interval_glob: str = "*") -> list[dict[str, Any]]:
    """A run's work items: the UI's ``paths`` when given, else the triggering events' files; minus those done.

    A run with neither (a scheduled or backfill run of a DAG scheduled on assets *or* time, see
    ``docs/backfills.md``) covers, when ``interval`` (the run's data interval) is given, the files below
    ``source_root`` named ``interval_glob`` and modified within it, resolved with the pipeline's login;
    the done-markers then skip what the event runs processed already, and ``params['reprocess']``
    processes them again.

    The same function serves the automatic (event) and the interactive (trigger form) runs, so both
    cover files in one way. Each item is checked against the file at its path now and completed with
    its checksum: a version that is gone or was replaced is not processed here (the newer version
    has its own event), and a version ``consumer`` already processed is dropped unless
    ``params['reprocess']``. Every dropped item is logged and appended to ``skipped`` with its reason.
    A manual selection that matches nothing fails (``params['allow_empty']`` turns that off).

    Least privilege for people choosing files: ``paths`` must lie inside ``allowed_roots`` (checked
    before any dCache call), and the selection is resolved with ``selector``, the hook of the person
    who triggered the run (see :mod:`airflow_dcache.identity`; without one, a plain login of the
    pipeline's connection, no role asserted, limited to ``allowed_roots``). With a person's identity,
    every selected file must also be readable by it (``selector_name`` names it in the error). Event
    files outside ``allowed_roots`` are skipped with that reason.
    """
    from airflow_dcache.events import events_from_asset_events

    where: dict[str, Any] = {"site": site, "run_id": run_id, "buffer_root": buffer_root, "output_root": output_root,
                             "source_root": source_root}
    from airflow_dcache.paths import within

    patterns = split_patterns(params.get("paths"), allowed_roots)
    events = events_from_asset_events(triggering_asset_events)
    if patterns:
        records = select_records(selector or hook, patterns, allow_empty=bool(params.get("allow_empty")),
                                 literal=bool(params.get("literal_paths")))
        if selector is not None and selector_name:
            for rec in records:
                check_readable(selector, rec["path"], selector_name)
        items = work_items_from_selection(records, **where)
    elif not events and interval is not None and None not in interval and source_root:
        items = work_items_from_selection(records_in_interval(hook, source_root, interval, interval_glob), **where)
    else:
        items = work_items_from_events(events, **where)
    kept = []
    for item in items:
        if allowed_roots and not within(item["path"], allowed_roots):
            reason: dict[str, Any] | str = f"outside the allowed roots ({', '.join(allowed_roots)})"
            log.warning("not processing %s: %s", item["path"], reason)
            if skipped is not None:
                skipped.append({"path": item["path"], "pnfsid": item.get("pnfsid"), "reason": reason})
            continue
        reason = current_state(hook, item, consumer, reprocess=bool(params.get("reprocess")))
        if isinstance(reason, str):
            log.info("not processing %s (%s): %s", item["path"], item.get("pnfsid"), reason)
            if skipped is not None:
                skipped.append({"path": item["path"], "pnfsid": item.get("pnfsid"), "reason": reason})
            continue
        kept.append(reason)
    return kept


def records_in_interval(hook: Any, root: str, interval: tuple[Any, Any], name_glob: str = "*"
                        ) -> list[dict[str, Any]]:
    """File records below ``root`` (recursively) named ``name_glob`` and modified in ``[start, end)``.

    What a time-scheduled or backfill run of an event-driven DAG covers: the files its event runs would
    have seen in that interval (by mtime, i.e. when the upload completed).
    """
    from airflow_dcache.selection import Criteria, select

    start, end = interval
    criteria = Criteria(name_glob=name_glob, mtime_after=start, mtime_before=end)
    return select(lambda d: hook.list_dir(d, checksum=True), root, criteria, recursive=True)


def person_selector(conn_id: str, dag_run: Any, params: Mapping[str, Any],
                    roots: Sequence[str]) -> tuple[Any, str | None]:
    """The hook that resolves a person's ``paths`` in a run, and how errors name that person.

    The triggering user's own dCache connection when the site mapped one
    (:func:`airflow_dcache.identity.user_connection`), else ``conn_id`` logged in plainly (no role
    asserted); either way limited to ``roots``. Event-triggered runs choose no files, so they get
    the plain pipeline login too (it is not used for them).
    """
    from airflow_dcache.hooks import DCacheHook
    from airflow_dcache.identity import user_connection

    user = getattr(dag_run, "triggering_user_name", None)
    person = user_connection(user) if params.get("paths") else None
    return (DCacheHook(person or conn_id, assert_roles=False, allowed_roots=roots),
            f"user {user!r}" if person else None)


def check_readable(hook: Any, path: str, who: str) -> None:
    """Refuse (``PermissionDenied``, permanent) a file ``who``'s dCache identity may not read (a 1-byte read)."""
    from airflow_dcache.exceptions import PermissionDenied

    try:
        hook.read_range(path, 0, 1)
    except PermissionDenied as exc:
        raise PermissionDenied(f"paths: {who} may not read {path} in dCache ({exc.message})", status=exc.status,
                               method=exc.method, url=exc.url) from None


def current_state(hook: Any, item: Mapping[str, Any], consumer: str, *, reprocess: bool = False
                  ) -> dict[str, Any] | str:
    """The item completed with its current version (checksum), or why it is not processed (a string)."""
    from airflow_dcache.exceptions import NotFound

    try:
        entry = hook.stat(item["path"], xattr=True, checksum=True)
    except NotFound:
        return "gone: deleted or moved away since the event"
    if not entry.is_file:
        return "not a regular file"
    if not entry.pnfsid:
        return "dCache reported no pnfsid"
    now = FileVersion.of(entry)
    wanted = item_version(item)
    if wanted is not None and not now.same_as(wanted):
        return f"superseded: {wanted.describe()} was replaced by {now.describe()} (processed by its own event)"
    done = marker_version(entry, consumer)
    if done is not None and not reprocess:
        _, dag_id, run_id = done
        return f"already processed by {dag_id}/{run_id}"
    fields = dict(item)
    if wanted is None:  # an event without a pnfsid: the version is the one there now, with its own areas
        before, after = version_folder(None, item["path"]), version_folder(now, item["path"])
        for name in ("buffer_dir", "buffer_path", "buffer_output_dir", "output_dir"):
            if isinstance(fields.get(name), str):
                fields[name] = fields[name].replace(f"/{before}", f"/{after}")
    return {**fields, "pnfsid": now.pnfsid, "size": entry.size, "version": now.to_json(),
            "checksums": dict(entry.checksums or {})}


def marker_version(entry: Any, consumer: str) -> tuple[FileVersion | None, str, str] | None:
    """``consumer``'s done-marker on ``entry`` if it is for the version there now; else ``None``."""
    value = (entry.xattrs or {}).get(marker_name(consumer))
    if value is None:
        return None
    version, dag_id, run_id = parse_marker(value)
    if version is not None and entry.pnfsid and not version.same_as(FileVersion.of(entry)):
        return None  # a marker for another version (set in the moment of an overwrite): not this one's
    return version, dag_id, run_id


def already_processed(hook: Any, item: Mapping[str, Any], consumer: str) -> bool:
    """True if the item's version is not there any more, or carries ``consumer``'s marker for that version."""
    return isinstance(current_state(hook, item, consumer), str)


def mark_processed(hook: Any, path: str, consumer: str, value: str, *,
                   version: FileVersion | Mapping[str, Any] | None = None) -> bool:
    """Set ``consumer``'s marker with CREATE; False if another run set it first (its result stands).

    With ``version`` (what a work item carries) the marker is a compare-and-set on that version: the
    file must still be it (else ``VersionChanged``, so a marker for v1 never lands on v2 in v1's
    name), the value names it, and if the file was replaced in the instant between the check and the
    write, the marker is taken off the newer version again and ``VersionChanged`` is raised. ``value``
    is ``<dag_id>/<run_id>``.
    """
    from airflow_dcache.exceptions import Conflict, VersionChanged

    name = marker_name(consumer)
    if version is None:
        try:
            hook.set_xattr(path, {name: value}, mode="CREATE")
        except Conflict:
            # this run's own marker (a retried task) is success, not another run's win
            return (hook.stat(path, xattr=True).xattrs or {}).get(name) == value
        return True
    want = version if isinstance(version, FileVersion) else FileVersion.from_json(version)
    require_version(hook, path, want, step="marking it processed")
    dag_id, _, run_id = value.partition("/")
    marker = version_marker(want, dag_id, run_id)
    try:
        hook.set_xattr(path, {name: marker}, mode="CREATE")
    except Conflict:
        entry = require_version(hook, path, want, step="marking it processed", xattr=True)
        done = marker_version(entry, consumer)
        if done is not None:
            # marked by this very run (a retried task: its outputs are the result) or by another
            # run, whose result stands
            return (done[1], done[2]) == (dag_id, run_id)
        # a marker naming another version sits on this one (left by an overwrite in the instant of a
        # write): it does not count, so this version's marker replaces it
        hook.set_xattr(path, {name: marker}, mode="MODIFY")
    try:
        require_version(hook, path, want, step="marking it processed")
    except VersionChanged:
        entry = hook.stat(path, xattr=True)
        if (entry.xattrs or {}).get(name) == marker:
            hook.remove_xattr(path, [name])
        raise
    return True


def discard_outputs(hook: Any, item: Mapping[str, Any]) -> None:
    """Remove a run's outputs of ``item`` (its own ``output_dir``) when another run's result stands (§6)."""
    hook.delete(item["output_dir"], recursive=True, missing_ok=True)


def recorded_versions(results: Any) -> list[FileVersion]:
    """The input versions a run recorded lineage for, from its ``record_lineage`` results (either design).

    ``results`` is what pulling that task's XCom gives: one result, or a list of them for a mapped
    task. A result is a lineage record (per-file design), a chunk whose entries carry theirs (chunked
    design), or nothing (a file that failed or was skipped).
    """
    versions: list[FileVersion] = []
    for result in results if isinstance(results, list) else [results]:
        if not isinstance(result, Mapping):
            continue
        records = [result] if "input" in result else [
            e.get("lineage") for e in result.get("files") or []
            if isinstance(e, Mapping) and not e.get("failed") and not e.get("skipped")]
        for record in records:
            source = record.get("input") if isinstance(record, Mapping) else None
            if isinstance(source, Mapping) and source.get("pnfsid"):
                versions.append(FileVersion.of(source))
    return versions


def discard_unprocessed(hook: Any, items: Iterable[Mapping[str, Any]], consumer: str, run_id: str,
                        recorded: Iterable[FileVersion] = ()) -> list[str]:
    """Remove this run's outputs of every item this run did not mark processed; the folders removed.

    A file replaced after ``publish`` fails its later steps (``VersionChanged``), and a step can fail
    for other reasons after the outputs were copied: without this, results with no lineage record
    would stay on the site. The run's output folders are its own (per run and version), so removing
    them touches no other run's results.

    ``recorded``: the versions this run recorded lineage for (:func:`recorded_versions`). Their outputs
    stay whatever the path holds now: a file overwritten after its lineage was recorded no longer
    carries the marker (the new version is another file), and its lineage must keep its outputs.
    The others are kept only when the path still holds the item's version with this run's marker.
    """
    from airflow_dcache.exceptions import NotFound

    kept: dict[str, list[FileVersion]] = {}  # by pnfsid: a run's clean-up looks up every item once
    for v in recorded:
        kept.setdefault(v.pnfsid, []).append(v)
    removed = []
    for item in items:
        version = item_version(item)
        if version is not None and any(v.same_as(version) for v in kept.get(version.pnfsid, ())):
            continue  # this run's lineage names these outputs
        try:
            entry = hook.stat(item["path"], xattr=True, checksum=True)
            done = marker_version(entry, consumer)
            want = item_version(item)
            if done is not None and done[2] == run_id and want is not None and FileVersion.of(entry).same_as(want):
                continue  # processed by this run: its outputs are the version's result
        except NotFound:
            pass
        discard_outputs(hook, item)
        removed.append(item["output_dir"])
    if removed:
        log.info("removed the outputs of %d file(s) this run did not finish: %s", len(removed), removed)
    return removed


def check_hdf5(hook: Any, item: Mapping[str, Any], *, max_size: int | None = None) -> dict[str, Any]:
    """Validate an input before it is replicated: exists as this version, non-empty, checksum known, HDF5.

    Only the first 8 bytes are read (``hook.read_range``: a ranged GET with the hook's own credentials),
    so a multi-GB raw file is not moved to be validated. Returns the item with size and checksums.
    """
    want = item_version(item)
    entry = require_version(hook, item["path"], want, step="validate") if want is not None \
        else hook.stat(item["path"], checksum=True)
    problems = []
    if entry.file_type != "REGULAR":
        problems.append("not a regular file")
    if not entry.size:
        problems.append("empty file")
    if max_size is not None and (entry.size or 0) > max_size:
        problems.append(f"larger than {max_size} bytes")
    if not entry.checksums:
        problems.append("no checksum known to dCache")
    if not problems and hook.read_range(item["path"], 0, len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
        problems.append("no HDF5 signature")
    if problems:
        raise ValueError(f"{item['path']}: " + "; ".join(problems))
    version = FileVersion.of(entry)
    return {**item, "size": entry.size, "pnfsid": entry.pnfsid, "checksums": dict(entry.checksums or {}),
            "version": version.to_json(),
            "origin": {"site": item.get("site"), "path": item["path"], "pnfsid": entry.pnfsid,
                       "checksum": version.checksum, "checksums": dict(entry.checksums or {})}}


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


def record_processed(hook: Any, item: Mapping[str, Any], activation: Mapping[str, Any], published: Mapping[str, str],
                     *, dag_id: str, run_id: str, function_name: str | None = None) -> dict[str, Any] | None:
    """The last step for one file version, in either design: its lineage record, and its marker set.

    The record names the outputs where ``published`` (buffer path → path on the output site) put them.
    The marker is a compare-and-set on the item's version (:func:`mark_processed`): when another run
    processed the version first, its result stands, this run's outputs of it are removed and ``None``
    is returned (the caller reports the file skipped, not failed).
    """
    lineage = build_lineage(item, activation, output_site="main", dag_id=dag_id, run_id=run_id,
                            function_name=function_name)
    for out in lineage["outputs"]:
        out["path"] = published.get(out["path"], out["path"])
    if lineage["activation_record"]:
        lineage["activation_record"] = published.get(lineage["activation_record"])
    if not mark_processed(hook, item["path"], dag_id, f"{dag_id}/{run_id}", version=item["version"]):
        discard_outputs(hook, item)
        return None
    return lineage


#: Run areas on the buffer site older than this are swept by a later run's clean-up (a run whose own
#: clean-up could not reach the buffer, or a cleared task that ran again after it).
SWEEP_AFTER_S = 24 * 3600


_RUN_FOLDER = re.compile(r"-[0-9a-f]{8}$")


def _older(entry: Any, cutoff_ms: float) -> bool:
    return entry.mtime is not None and entry.mtime < cutoff_ms


def clean_run_area(hook: Any, buffer_root: str, run_id: str, *, sweep_after_s: float = SWEEP_AFTER_S) -> list[str]:
    """Remove this run's buffer area, then any run area not modified for ``sweep_after_s``; the paths removed.

    The run's own area goes whatever its files' outcome (replicas of failed files, a function's
    ``.tmp-`` upload area). The sweep catches what a clean-up could not remove (the buffer was down),
    so nothing accumulates; ``sweep_after_s`` is far longer than any run keeps a replica.
    """
    import time

    from airflow_dcache.exceptions import NotFound

    removed = []
    own = run_area(buffer_root, run_id)
    try:
        hook.delete(own, recursive=True, missing_ok=True)
        removed.append(own)
    except NotFound:
        pass
    cutoff_ms = (time.time() - sweep_after_s) * 1000
    try:
        areas = hook.list_dir(buffer_root.rstrip("/") or "/")
    except NotFound:
        return removed
    for area in areas:
        # only run areas (run_folder's digest suffix), and only when nothing in them changed lately:
        # a file's folder changes when its replica or outputs come and go, the area when files start
        if not area.is_dir or area.path == own or not _RUN_FOLDER.search(area.name) or not _older(area, cutoff_ms):
            continue
        try:
            if any(not _older(child, cutoff_ms) for child in hook.list_dir(area.path)):
                continue
            hook.delete(area.path, recursive=True, missing_ok=True)
            removed.append(area.path)
        except Exception as exc:  # one stuck area must not stop the run's own clean-up
            log.warning("could not sweep %s: %s", area.path, exc)
    if removed:
        log.info("removed from the buffer: %s", ", ".join(removed))
    return removed
