"""Chunks of work items, and a runner that applies pipeline stages to every live file of a chunk.

Why chunks: a task group mapped over files costs one Airflow task instance per file and stage (8N for the
ingest pipeline), and ``[core] max_map_length`` caps a run. Mapped over *chunks* of up to
``max_files`` files and ``max_bytes`` bytes, a run costs a few task instances per chunk, and the
scheduler's work grows with the chunks, not with files times stages.

Why a per-file runner: a chunk must not become a unit of failure, nor a unit of waiting. Inside a task
each file goes through the task's steps on its own (concurrently, at most ``concurrency`` files at a
time, so one site sees a bounded load), moving to its next step as soon as its own step is done; a
file that fails is *carried*: it keeps ``failed = {"stage", "reason"}`` (the step, and a reason that
names the file), every later step and task skips it, and its chunk-mates go on as if it were not there.

A chunk is plain JSON, so it travels between the stage tasks in XCom::

    {"index": 0, "files": [
        {"item": {<work item, see airflow_dcache.pipelines.steps>},
         "failed": null | {"stage": "validate", "reason": "/data/incoming/x.h5: no HDF5 signature"},
         "timings": {"validate": [<start>, <end>], ...},      # epoch seconds, per step the file went through
         ...: the stages' results for that file (e.g. "preview", "published", "lineage")}]}

This module is pure logic plus a thread pool; what a stage does to a file is the caller's
(:mod:`airflow_dcache.pipelines.chunk_steps`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

#: At most this many files per chunk: a chunk's slowest file holds back its chunk's next *task* (the wait).
DEFAULT_MAX_FILES = 50
#: At most this many chunks per run while the bytes allow: bigger bursts make bigger chunks, not more tasks.
DEFAULT_MAX_CHUNKS = 12
#: At most this many bytes per chunk (a file larger than this gets a chunk of its own).
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
#: Files of one chunk in flight at once in a task (requests in flight to one site).
DEFAULT_CONCURRENCY = 8
#: Longest failure reason kept per file (a function's failure carries its last log lines).
MAX_REASON = 2000

Entry = dict[str, Any]
Chunk = dict[str, Any]
#: What a stage does to one file: gets the file's entry, returns fields to merge into it (or ``None``).
Step = Callable[[Entry], Mapping[str, Any] | None]
#: What a step returns when it has nothing to do for this file: no timing is recorded for it.
SKIP: Mapping[str, Any] = MappingProxyType({})


class StageUnreachable(Exception):
    """Files of a stage failed because a site could not be reached: the stage task fails and retries.

    A site that is down is nobody's file's fault: instead of marking every file failed, the task
    fails as a whole, so its ``retries`` apply; the steps are safe to repeat (copies overwrite, deletes
    accept a missing path), so the retry starts over from the previous task's result.
    """


def whole(value: Any, field: str, *, minimum: int = 1) -> int:
    """``value`` (an int, or a string of digits) as a whole number ``>= minimum``; else an error naming ``field``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < minimum:
        raise ValueError(f"{field}: expected a whole number >= {minimum}, got {value!r}")
    return number


def new_entry(item: Mapping[str, Any]) -> Entry:
    """A file's entry in a chunk: its work item, not failed, no timings yet."""
    return {"item": dict(item), "failed": None, "timings": {}}


def make_chunks(items: Sequence[Mapping[str, Any]], max_files: int = DEFAULT_MAX_FILES,
                max_bytes: int = DEFAULT_MAX_BYTES, max_chunks: int | None = DEFAULT_MAX_CHUNKS) -> list[Chunk]:
    """Split ``items`` (in order) into chunks of at most ``max_files`` files and ``max_bytes`` bytes.

    Greedy and order-preserving, so a burst's files keep their upload order across chunks. A file
    whose size alone exceeds ``max_bytes`` gets a chunk of its own (it must be processed anyway); a
    file of unknown size counts as empty.

    ``max_chunks`` bounds the run's task instances for a big burst: when ``max_files`` per chunk would
    make more chunks than that, the chunks grow instead (2,000 files in at most 12 chunks: 167 each,
    88 task instances rather than 284). The bytes limit still holds, so very large files can make more
    chunks than ``max_chunks`` (a chunk's bytes bound its task's time and the buffer space it takes).
    """
    max_files = whole(max_files, "chunk_max_files")
    max_bytes = whole(max_bytes, "chunk_max_bytes")
    if max_chunks is not None:
        max_files = max(max_files, -(-len(items) // whole(max_chunks, "chunk_max_count")))
    chunks: list[Chunk] = []
    files: list[Entry] = []
    size = 0
    for item in items:
        if not isinstance(item, Mapping) or not item.get("path"):
            raise ValueError(f"items: expected work items with a 'path', got {item!r:.200}")
        item_size = item.get("size") or 0
        if not isinstance(item_size, int) or item_size < 0:
            raise ValueError(f"items: {item['path']}: size must be a whole number of bytes, got {item_size!r}")
        if files and (len(files) >= max_files or size + item_size > max_bytes):
            chunks.append({"index": len(chunks), "files": files})
            files, size = [], 0
        files.append(new_entry(item))
        size += item_size
    if files:
        chunks.append({"index": len(chunks), "files": files})
    return chunks


def live(chunk: Mapping[str, Any]) -> list[Entry]:
    """The entries of ``chunk`` no stage has failed."""
    return [e for e in chunk["files"] if not e.get("failed")]


def failure(exc: BaseException, path: str) -> str:
    """Why a file failed, naming it (the message gets the path in front when it does not name it)."""
    message = str(exc).strip() or type(exc).__name__
    if path not in message:
        message = f"{path}: {message}"
    return message if len(message) <= MAX_REASON else message[:MAX_REASON - 3] + "..."


def copy_chunk(chunk: Mapping[str, Any]) -> Chunk:
    """A chunk whose entries (and their timings) can be changed without touching ``chunk``."""
    return {**chunk, "files": [{**e, "timings": dict(e.get("timings") or {})} for e in chunk["files"]]}


def run_stages(chunk: Mapping[str, Any], stages: Sequence[tuple[str, Step]], *,
               concurrency: int = DEFAULT_CONCURRENCY,
               transient: tuple[type[BaseException], ...] = ()) -> Chunk:
    """Apply ``stages`` (``(name, step)`` in order) to every live file of ``chunk``; the updated chunk.

    Each file goes through the stages on its own worker thread, one stage after the other, so it moves
    on as soon as its own step is done; at most ``concurrency`` files are handled at once. A step's
    exception fails that file at that stage (``failed = {"stage", "reason"}``) and it skips the rest;
    the other files are not affected. ``timings[stage] = [start, end]`` (epoch seconds) is recorded
    per file and stage, also for the stage that failed; a step that returns :data:`SKIP` (nothing to
    do for this file) records none.

    An exception of a ``transient`` type (a site unreachable) does not fail the file: once every
    file is done, :class:`StageUnreachable` is raised, naming the files and reasons, so the task's
    retries apply.
    """
    concurrency = whole(concurrency, "concurrency")
    result = copy_chunk(chunk)
    todo = live(result)
    unreachable: list[str] = []

    def handle(entry: Entry) -> None:
        path = str(entry["item"].get("path"))
        for name, step in stages:
            start = time.time()
            try:
                update = step(entry)
            except transient as exc:  # type: ignore[misc]  # an empty tuple catches nothing
                entry["timings"][name] = [start, time.time()]
                unreachable.append(failure(exc, path))
                return
            except Exception as exc:
                entry["timings"][name] = [start, time.time()]
                entry["failed"] = {"stage": name, "reason": failure(exc, path)}
                log.warning("%s failed at %s: %s", path, name, entry["failed"]["reason"])
                return
            if update is SKIP:
                continue
            entry["timings"][name] = [start, time.time()]
            if update:
                entry.update(update)

    if todo:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(todo)), thread_name_prefix="chunk") as pool:
            for future in [pool.submit(handle, e) for e in todo]:
                future.result()  # handle() catches every Exception; this re-raises only BaseException
    if unreachable:
        raise StageUnreachable(f"{len(unreachable)} file(s) of chunk {chunk.get('index')} could not be handled "
                               f"because a site is unreachable (the task retries): " + "; ".join(unreachable[:10]))
    return result


def fail_live(chunk: Mapping[str, Any], stage: str, exc: BaseException) -> Chunk:
    """Every live file of ``chunk`` failed at ``stage`` for one reason (a request made for all of them)."""
    result = copy_chunk(chunk)
    for entry in live(result):
        entry["failed"] = {"stage": stage, "reason": failure(exc, str(entry["item"].get("path")))}
    return result


def apply_outcomes(chunk: Mapping[str, Any], outcomes: Sequence[Mapping[str, Any]], *, stage: str,
                   started: float | None = None) -> Chunk:
    """The chunk after a wait over its live files: ``outcomes`` are theirs, in order (a trigger's ``files``).

    Each ``{"path", "outcome", "reason", "at"}``: ``reached`` keeps the file live; any other outcome
    (gone, replaced, failed, timeout) fails it at ``stage`` with its reason, and its chunk-mates go on.
    ``timings[stage]`` is ``[started, at]`` per file (when the wait began, when the file was decided).
    """
    result = copy_chunk(chunk)
    todo = live(result)
    if [e["item"].get("path") for e in todo] != [o.get("path") for o in outcomes]:
        raise ValueError(f"chunk {chunk.get('index')}: the wait's outcomes are not those of the chunk's live files")
    for entry, outcome in zip(todo, outcomes, strict=True):
        end = float(outcome.get("at") or time.time())
        entry["timings"][stage] = [started if started is not None else end, end]
        if outcome.get("outcome") != "reached":
            path = str(entry["item"].get("path"))
            reason = outcome.get("reason") or f"{path}: {outcome.get('outcome') or 'not decided'}"
            entry["failed"] = {"stage": stage, "reason": failure(RuntimeError(reason), path)}
            log.warning("%s failed at %s: %s", path, stage, entry["failed"]["reason"])
    return result


def outcomes(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's per-file outcomes: ``{"files": [...], "failed": [...], "processed": n, "counts": {...}}``.

    Each file: ``path``, ``pnfsid``, ``chunk``, ``outcome`` (``processed``, ``failed``, or ``skipped``
    with its ``reason`` when another run processed the version first), ``failed`` and ``timings``.
    ``failed`` lists ``{"path", "pnfsid", "stage", "reason"}`` for every failed file.
    """
    files: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for chunk in chunks:
        for entry in chunk["files"]:
            item = entry["item"]
            if entry.get("failed"):
                outcome = "failed"
                failed.append({"path": item.get("path"), "pnfsid": item.get("pnfsid"), **entry["failed"]})
            elif entry.get("skipped"):
                outcome = "skipped"
            else:
                outcome = "processed"
            files.append({"path": item.get("path"), "pnfsid": item.get("pnfsid"), "chunk": chunk.get("index"),
                          "outcome": outcome, "failed": entry.get("failed"), "reason": entry.get("skipped"),
                          "timings": entry.get("timings") or {}})
    counts: dict[str, int] = {}
    for f in files:
        counts[f["outcome"]] = counts.get(f["outcome"], 0) + 1
    return {"files": files, "failed": failed, "processed": counts.get("processed", 0), "counts": counts}


def failure_summary(failed: Sequence[Mapping[str, Any]], *, reason_chars: int = 300) -> str:
    """One line per failed file, ``path (stage): reason``, for the message that fails a run."""
    lines = []
    for f in failed:
        reason = str(f.get("reason") or "").strip().splitlines()[0] if f.get("reason") else "no reason given"
        if len(reason) > reason_chars:
            reason = reason[:reason_chars - 3] + "..."
        lines.append(f"{f.get('path')} ({f.get('stage')}): {reason}")
    return "\n".join(lines)
