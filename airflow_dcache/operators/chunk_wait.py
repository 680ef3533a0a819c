"""Wait for the files of a pipeline chunk to reach their QoS: one deferrable wait for many files.

The chunked ingest pipeline (:mod:`airflow_dcache.pipelines.chunks`) asks for a chunk's QoS in one bulk
request; this operator is the wait that follows. It is thin: the polling and every decision are the
trigger's (:class:`~airflow_dcache.triggers.files_wait.DCacheFilesWaitTrigger`: one listing per
directory and round, per-file outcomes), and the operator turns its one event into the chunk the next
stage reads (``failed`` per file, ``timings[<task>]``), so a file that does not make it is carried as
failed and its chunk-mates go on.

Deferred by default: a chunk waiting for tape holds no worker slot, and the triggerer polls all the
chunk's files in one trigger instead of one per file. With ``deferrable=False`` the same trigger runs in
the worker (same decisions, blocking).

``then``: what the chunk's files need once they are archived (the ingest pipeline records their
lineage) runs in the same task, after the wait. A stage of its own would cost a task start per chunk, its
scheduling and its API calls, for work of a few requests per file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from airflow.sdk.exceptions import AirflowException

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.operators.qos import _WaitingOperator
from airflow_dcache.paths import is_template, require_within
from airflow_dcache.pipelines import chunks as ck
from airflow_dcache.pipelines.steps import item_version
from airflow_dcache.triggers.files_wait import DEFAULT_CONCURRENCY, DCacheFilesWaitTrigger, qos_condition
from airflow_dcache.waits import SHOWN, deadline_after


class DCacheChunkWaitOperator(_WaitingOperator):
    """Wait until every live file of a chunk has the chunk's target QoS; the chunk, with per-file outcomes.

    :param chunk: the chunk (templated; typically the previous stage's XCom, e.g. ``archive_rule``'s).
    :param target_qos: the QoS the files were given (templated): ``disk`` waits until the QoS is disk
        and the file is ONLINE, ``tape`` until it is NEARLINE, ``disk+tape`` until both.
    :param stage: the stage name recorded in the files' ``failed`` and ``timings`` (default the task id).
    :param concurrency: directories listed at once per round.
    :param cancel_on_kill: a kill cancels the chunk's bulk QoS request (``qos_request`` of its files).
    :param then: ``then(chunk, context)``, called in this task with the chunk after the wait (per-file
        outcomes applied); its return value is the task's. For work that follows the wait of every chunk,
        without a task of its own (the ingest pipeline's lineage records). It may raise
        ``AirflowSkipException``, as a task would. Not called when the wait itself fails the task.
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``True``: a chunk waiting for tape holds no slot).
    :type timeout: float | datetime.timedelta | None
    :param timeout: a file not there after this many seconds fails with a reason naming it.
    :return: the chunk: a file that is gone, replaced, broken or late has ``failed = {"stage", "reason"}``
        (or what ``then`` returns).

    The waiting base's ``poll_interval`` is the first delay between rounds, doubled up to its
    ``max_poll_interval``.

    A whole-site outage is not the files' fault: when every file that timed out could not be listed
    because the site was unreachable, the task fails (:class:`~airflow_dcache.pipelines.chunks.StageUnreachable`)
    so its retries apply.
    """

    template_fields: Sequence[str] = ("chunk", "target_qos", "dcache_conn_id")

    def __init__(
        self,
        *,
        chunk: Any,
        target_qos: str = "disk+tape",
        stage: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        cancel_on_kill: bool = True,
        then: Callable[[dict[str, Any], Any], Any] | None = None,
        deferrable: bool = True,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(deferrable=deferrable, timeout=timeout, **kwargs)
        if then is not None and not callable(then):
            raise TypeError(f"then: expected a callable then(chunk, context), got {then!r:.100}")
        if not is_template(target_qos):
            qos_condition(target_qos)  # a bad QoS fails at parse
        self.chunk = chunk
        self.target_qos = target_qos
        self.stage = stage or self.task_id.rsplit(".", 1)[-1]
        self.concurrency = ck.whole(concurrency, "concurrency")
        self.cancel_on_kill = cancel_on_kill
        self.then = then
        self._request_id: str | None = None

    def _chunk(self) -> dict[str, Any]:
        chunk = self.chunk
        if not isinstance(chunk, Mapping) or not isinstance(chunk.get("files"), list):
            raise ValueError(f"chunk: expected a chunk {{'index', 'files': [...]}}, got {chunk!r:.200}")
        return dict(chunk)

    def trigger(self, chunk: Mapping[str, Any], *, started: float) -> DCacheFilesWaitTrigger | None:
        """The trigger waiting for ``chunk``'s live files (``None`` when none is live)."""
        return chunk_trigger(chunk, self.dcache_conn_id, target_qos=self.target_qos, timeout=self.timeout,
                             started=started, poll_interval=self.poll_interval,
                             max_poll_interval=self.max_poll_interval, concurrency=self.concurrency,
                             cancel_on_kill=self.cancel_on_kill, allowed_roots=self.allowed_roots)

    def execute(self, context: Any) -> Any:
        chunk = self._chunk()
        trigger = self.trigger(chunk, started=time.time())
        if trigger is None:
            self.log.info("chunk %s: no live file to wait for", chunk.get("index"))
            return self._then(ck.copy_chunk(chunk), context)
        self._request_id = trigger.bulk_request_id
        self.log.info("chunk %s: waiting for %d file(s) until %s (bulk request %s)", chunk.get("index"),
                      len(trigger.files), trigger.condition.describe(), trigger.bulk_request_id)
        first = asyncio.run(_one_round(trigger))  # a disk rule is often met at once: no deferral then
        if first is not None:
            return self._apply(chunk, first, context)
        if self.deferrable:
            # a fresh trigger from its kwargs: the triggerer rebuilds it so anyway, the first round's state stays here
            self.defer(trigger=type(trigger)(**trigger.serialize()[1]), method_name="execute_complete")
        return self._apply(chunk, asyncio.run(_until_event(trigger)), context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """Resume with the trigger's event; the chunk is re-rendered from its XCom, the outcomes are the event's."""
        return self._apply(self._chunk(), event, context)

    def _apply(self, chunk: dict[str, Any], event: Any, context: Any) -> Any:
        self._request_id = None
        try:
            result = apply_event(chunk, event, stage=self.stage)
        except ValueError as exc:
            raise AirflowException(f"{self.task_id}: {exc}") from None
        self.log.info("chunk %s: %s (%s round(s), %s request(s))", chunk.get("index"), event.get("message"),
                      event.get("rounds"), event.get("requests"))
        return self._then(result, context)

    def _then(self, chunk: dict[str, Any], context: Any) -> Any:
        return chunk if self.then is None else self.then(chunk, context)

    def on_kill(self) -> None:
        """Killed while waiting in the worker: cancel the chunk's bulk QoS request (the work being waited for).

        A kill while deferred reaches the trigger's ``on_kill``, which does the same.
        """
        if not (self._request_id and self.cancel_on_kill):
            return
        try:
            self.hook.cancel_bulk_request(self._request_id)
            self.log.info("cancelled bulk request %s", self._request_id)
        except DCacheError as exc:
            self.log.warning("could not cancel bulk request %s: %s", self._request_id, exc)


async def _one_round(trigger: DCacheFilesWaitTrigger) -> dict[str, Any] | None:
    """One round of ``trigger`` (its final event, or ``None`` while files are pending)."""
    async with trigger._hook() as hook:
        return await trigger.poll(hook)


async def _until_event(trigger: DCacheFilesWaitTrigger) -> dict[str, Any]:
    """Run ``trigger`` to its one event, in this process (the blocking form of the wait)."""
    events = cast("AsyncGenerator[Any, None]", trigger.run())
    try:
        return (await events.__anext__()).payload
    finally:
        await events.aclose()


def chunk_trigger(chunk: Mapping[str, Any], dcache_conn_id: str, *, target_qos: str, timeout: float,
                  started: float, poll_interval: float, max_poll_interval: float,
                  concurrency: int = DEFAULT_CONCURRENCY, cancel_on_kill: bool = True,
                  allowed_roots: Sequence[str] = ()) -> DCacheFilesWaitTrigger | None:
    """The trigger waiting for the live files of ``chunk`` (``None`` when none is live).

    Each file is waited for in the version its work item names; the chunk's bulk QoS request (the
    ``qos_request`` that ``archive_rule`` set on its files) is watched too when there is one.
    """
    entries = ck.live(chunk)
    if not entries:
        return None
    files = []
    for entry in entries:
        path = require_within(entry["item"].get("path"), allowed_roots)
        version = item_version(entry["item"])
        files.append({"path": path, "version": version.id if version else None})
    requests = {e.get("qos_request") for e in entries if e.get("qos_request")}
    condition = qos_condition(target_qos)
    return DCacheFilesWaitTrigger(
        files=files, dcache_conn_id=dcache_conn_id, target_qos=condition.target_qos,
        locality=sorted(condition.locality), deadline=deadline_after(timeout),
        bulk_request_id=requests.pop() if len(requests) == 1 else None, started=started,
        poll_interval=poll_interval, max_poll_interval=max_poll_interval, concurrency=concurrency,
        cancel_on_kill=cancel_on_kill, allowed_roots=allowed_roots)


def apply_event(chunk: Mapping[str, Any], event: Any, *, stage: str) -> dict[str, Any]:
    """The chunk after the wait's event, its per-file outcomes applied (:func:`.chunks.apply_outcomes`).

    ``ValueError`` for an event without per-file outcomes (the trigger itself failed); ``StageUnreachable``
    when every file that timed out did so because its site could not be reached (the task retries).
    """
    if not isinstance(event, dict) or not isinstance(event.get("files"), list):
        status = event.get("status") if isinstance(event, dict) else "error"
        message = event.get("message") if isinstance(event, dict) else repr(event)
        raise ValueError(f"the wait ended without per-file outcomes ({status}): {message}")
    late = [f for f in event["files"] if f.get("outcome") == "timeout"]
    if late and all(f.get("unreachable") for f in late):
        raise ck.StageUnreachable(
            f"chunk {chunk.get('index')}: {len(late)} file(s) could not be checked because the site was "
            "unreachable until the deadline (the task retries): "
            + "; ".join(str(f.get("reason")) for f in late[:SHOWN]))
    return ck.apply_outcomes(chunk, event["files"], stage=stage, started=event.get("started"))


def wait_chunk(chunk: Mapping[str, Any], dcache_conn_id: str, *, target_qos: str, timeout: float,
               poll_interval: float = 1.0, max_poll_interval: float = 5.0, stage: str = "wait_archived",
               allowed_roots: Sequence[str] = ()) -> dict[str, Any]:
    """The blocking wait of a chunk outside this operator (same trigger, same outcomes), in this process."""
    trigger = chunk_trigger(chunk, dcache_conn_id, target_qos=target_qos, timeout=timeout, started=time.time(),
                            poll_interval=poll_interval, max_poll_interval=max_poll_interval,
                            allowed_roots=allowed_roots)
    if trigger is None:
        return ck.copy_chunk(chunk)
    return apply_event(chunk, asyncio.run(_until_event(trigger)), stage=stage)
