"""The stage bodies of the chunked ingest pipeline: each takes a chunk (see :mod:`.chunks`) and returns it.

Two tasks per chunk: ``process``, then ``record_when_archived``: the wait for the chunk's QoS
(``wait_archived``, deferred) and :func:`record_lineage` once it is over, in one task.

``process`` takes each live file of the chunk through all the steps the per-file design has a task
for, on its own: ``validate`` → ``replicate`` → ``preview`` → ``publish`` → ``archive_rule`` →
``drop_buffer_replica`` (:data:`PROCESS_STEPS`). At most ``concurrency`` files are in flight at once;
a file moves to its next step as soon as its own step is done, so its outputs are published without
waiting for its chunk-mates, and one that fails is carried with the step and reason (its chunk-mates
go on). The rules are the per-file tasks': each step that acts on the raw file names its version
(``require_version``: a file replaced since the event fails at once), the copies use per-file
macaroons (:class:`~airflow_dcache.transfers.tpc.ThirdPartyCopy`), the function runs once per file
(:class:`~airflow_dcache.functions.activation.Activation`: per-file macaroons, private output area,
activation record) on the chunk's warm instances, and the marker ``airflow_dcache.done.<dag_id>`` is
set per file version by :func:`~airflow_dcache.pipelines.steps.mark_processed` (compare-and-set) in
``record_lineage`` only.

Two steps share requests between files: ``archive_rule`` sends one bulk ``UPDATE_QOS`` request for
the files that reach it while the previous request is in flight (:class:`QosBatcher`: the first
file's request goes at once, no file waits for a slower one), and ``wait_archived`` is one deferred
wait for the chunk (one directory listing per directory and round instead of a ``stat`` per file).

A retry of ``process`` (a site unreachable, :class:`~.chunks.StageUnreachable`; or the task cleared)
starts from the chunk again, and each step is safe to repeat (copies overwrite, the function writes a
new private area, the same QoS is asked for again, deletes accept a missing path) — except for files
an earlier try already published: their raw file may be on tape only by now. Those are recognised by
their activation record on ``main`` (its outputs checked there), and only ``archive_rule`` and
``drop_buffer_replica`` run for them again (:func:`published_before`).

Hooks: a stage's worker threads each get their own hooks (:class:`Hooks`), built from the connection
settings resolved once in the task's own thread; a hook's ``requests`` session is not shared between
threads.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import posixpath
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.exceptions import DCacheConnectionError
from airflow_dcache.functions.activation import ActivationOptions
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.pipelines import chunks as ck
from airflow_dcache.pipelines import design, steps

log = logging.getLogger(__name__)

#: Task ids (inside the chunk group) of the stages whose result the next one reads, in order.
STAGE_TASKS = ("process", "record_when_archived")
#: The steps ``process`` takes each file through, in order (a failed file's ``failed["stage"]`` is one of them).
PROCESS_STEPS = design.PROCESS_STEPS


@dataclass(frozen=True)
class Config:
    """Where a chunk's stages act: the pipeline's connections, trees and per-stage concurrency."""

    main: str
    buffer: str
    allowed_roots: Sequence[str]
    concurrency: int = ck.DEFAULT_CONCURRENCY
    #: a site that cannot be reached fails the stage task (retried) instead of the files
    transient: tuple[type[BaseException], ...] = field(default=(DCacheConnectionError,))


class Hooks:
    """One hook per connection and worker thread, all from settings resolved once in the creating thread."""

    def __init__(self, conn_ids: Sequence[str], allowed_roots: Sequence[str]) -> None:
        self._base = {c: DCacheHook(c, allowed_roots=allowed_roots) for c in conn_ids}
        self._settings = {c: h.settings for c, h in self._base.items()}  # read the connections here, once
        self._local = threading.local()
        self._made: list[DCacheHook] = list(self._base.values())
        self._lock = threading.Lock()

    def __call__(self, conn_id: str) -> DCacheHook:
        """This thread's hook on ``conn_id``."""
        mine: dict[str, DCacheHook] = self._local.__dict__.setdefault("hooks", {})
        if conn_id not in mine:
            mine[conn_id] = DCacheHook(conn_id, settings=self._settings[conn_id])
            with self._lock:
                self._made.append(mine[conn_id])
        return mine[conn_id]

    def base(self, conn_id: str) -> DCacheHook:
        """The hook of the creating thread (for requests made once per chunk)."""
        return self._base[conn_id]

    def close(self) -> None:
        for hook in self._made:
            hook.close()

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(chunk: Mapping[str, Any], cfg: Config, stages: Sequence[tuple[str, ck.Step]]) -> ck.Chunk:
    return ck.run_stages(chunk, stages, concurrency=cfg.concurrency, transient=cfg.transient)


def _version(item: Mapping[str, Any]) -> FileVersion:
    version = steps.item_version(item)
    if version is None:
        raise ValueError(f"{item.get('path')}: the work item names no version (no pnfsid)")
    return version


def _on_buffer(item: Mapping[str, Any]) -> tuple[str, str]:
    """A file's function input and output folder at the buffer site: its replica, its private output area."""
    return item["buffer_path"], item["buffer_output_dir"]


class QosBatcher:
    """``archive_rule`` for files arriving one by one: one bulk ``UPDATE_QOS`` per group, none waiting for later ones.

    A file's thread calls :meth:`request`; if no request is in flight it sends one at once for every
    file waiting (at least its own), else it waits for the request in flight and the next one takes it
    together with the files that arrived meanwhile (group commit). Each file gets its request's id; a
    request that fails fails each of its files with that error (a transient one: the task retries).
    """

    def __init__(self, submit: Callable[[list[str]], str]) -> None:
        self._submit = submit
        self._cond = threading.Condition()
        self._waiting: list[dict[str, Any]] = []
        self._busy = False
        self.requests = 0

    def request(self, path: str) -> str:
        """The id of the bulk request that asked for ``path``'s QoS (or its error, raised)."""
        slot: dict[str, Any] = {"path": path, "done": False}
        with self._cond:
            self._waiting.append(slot)
            while not slot["done"]:
                if not self._busy:  # nobody sending: send for everyone waiting, this file included
                    self._busy, batch, self._waiting = True, self._waiting, []
                    break
                self._cond.wait()
            else:
                return self._outcome(slot)
        try:
            request_id = self._submit([s["path"] for s in batch])
            for s in batch:
                s["id"] = request_id
        except BaseException as exc:
            for s in batch:
                s["error"] = exc
        finally:
            with self._cond:
                self.requests += 1
                for s in batch:
                    s["done"] = True
                self._busy = False
                self._cond.notify_all()
        return self._outcome(slot)

    @staticmethod
    def _outcome(slot: Mapping[str, Any]) -> str:
        if slot.get("error") is not None:
            raise slot["error"]
        return str(slot["id"])


@contextlib.contextmanager
def function_step(cfg: Config, conn_id: str, place: Callable[[Mapping[str, Any]], tuple[str, str]], *,
                  runtime: str, function: str, parameters: Mapping[str, Any], ids: Mapping[str, Any], stage: str,
                  options: ActivationOptions | None = None, warm_instances: int | None = None,
                  check_version: bool = False, label: Any = None) -> Iterator[tuple[ck.Step, int]]:
    """A step running ``function`` once per file on ``conn_id``, and how many files it runs at once.

    ``place(item)`` names the input path and the output folder of a file; the step returns
    ``{stage: <the function's result>}``. One activation per file, not one for the chunk: each file
    keeps its own DOWNLOAD macaroon, its own private output area and activation record, and a function
    failing on one file fails only it. With ``check_version`` the input is checked to still be the
    item's version first (a file replaced since selection fails alone).

    The files run *warm* (:mod:`airflow_dcache.functions.warm`): through at most ``warm_instances``
    long-lived instances of the function (default ``$AIRFLOW_DCACHE_WARM_INSTANCES``, else
    ``min(concurrency, 3)``; ``0`` starts it anew per file), one pool for the chunk, shared by the
    files' threads, each instance taking one task document per file, so the chunk pays the interpreter
    start and imports a few times instead of once per file. No more files are in the step than there
    are instances (a file waits *before* its macaroons are minted, never with them ageing). The
    function is identified (image checked) and the connection's extras are read once per chunk.
    """
    from airflow_dcache.functions.activation import Activation, RunIds
    from airflow_dcache.functions.credentials import connection_extras
    from airflow_dcache.functions.factory import runtime_factory
    from airflow_dcache.functions.warm import WarmPool, pool_size

    run_ids = RunIds(**ids)
    opts = options or ActivationOptions()
    size = min(pool_size(warm_instances, cfg.concurrency), cfg.concurrency)
    width = size or cfg.concurrency
    gate = threading.BoundedSemaphore(width)
    with Hooks([conn_id], cfg.allowed_roots) as hooks, WarmPool(runtime_factory(runtime, function), size) as pool:
        extras = connection_extras(hooks.base(conn_id))

        def run(entry: ck.Entry) -> dict[str, Any]:
            item = entry["item"]
            path, output_dir = place(item)
            with gate:
                if check_version:
                    require_version(hooks(conn_id), path, _version(item), step=f"function {function}")
                activation = Activation(hooks(conn_id), pool, function, opts, log=log, connection_extras=extras)
                result = activation.run([path], output_dir=output_dir, origins=[item.get("origin")],
                                        parameters=parameters, ids=run_ids)
            return {stage: result}

        yield run, width
        stats = pool.stats()
        log.info("%s of chunk %s: %d document(s) on %d warm instance(s) (cold start p50 %s s, max %s s), "
                 "%d replaced%s", stage, label, stats["documents"], stats["instances_started"],
                 stats["cold_start_seconds"]["p50"], stats["cold_start_seconds"]["max"], stats["replaced"],
                 f"; ran cold: {stats['fallback']}" if stats["fallback"] else "")


def run_function(chunk: Mapping[str, Any], cfg: Config, conn_id: str,
                 place: Callable[[Mapping[str, Any]], tuple[str, str]], *, runtime: str, function: str,
                 parameters: Mapping[str, Any], ids: Mapping[str, Any], stage: str,
                 options: ActivationOptions | None = None, warm_instances: int | None = None,
                 check_version: bool = False) -> ck.Chunk:
    """Run ``function`` once per live file of the chunk on ``conn_id``; each file's result in ``entry[stage]``.

    One stage of :func:`function_step` (see there: per-file activations on the chunk's warm instances),
    with as many threads as instances.
    """
    with function_step(cfg, conn_id, place, runtime=runtime, function=function, parameters=parameters, ids=ids,
                       stage=stage, options=options, warm_instances=warm_instances, check_version=check_version,
                       label=chunk.get("index")) as (run, width):
        return ck.run_stages(chunk, [(stage, run)], concurrency=width, transient=cfg.transient)


def published_before(hook: DCacheHook, item: Mapping[str, Any], ids: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an earlier try of this task published for ``item`` (``preview`` and ``published``), else ``None``.

    The activation record is the last file ``publish`` copies: when it is in the file's output folder
    on ``main`` with status ``success`` and every output it lists is there with its size and adler32,
    the file got through ``publish``. The result is what ``preview`` and ``publish`` would give (the
    record stands for the function's result: outputs, digest, its path on the buffer).
    """
    from airflow_dcache.exceptions import NotFound
    from airflow_dcache.functions.record import record_name

    out_dir = item["output_dir"].rstrip("/")
    name = record_name(str(ids.get("run_id") or "manual"), ids.get("map_index"))
    raw = io.BytesIO()
    try:
        hook.download(f"{out_dir}/{name}", raw)
    except NotFound:
        return None
    record = json.loads(raw.getvalue())
    if not isinstance(record, dict) or record.get("status") != "success" or not record.get("output_dir"):
        return None
    published = {}
    for output in record.get("outputs") or []:
        target = f"{out_dir}/{posixpath.basename(output['path'])}"
        try:
            found = hook.stat(target, checksum=True)
        except NotFound:
            return None
        want = (output.get("checksums") or {}).get("adler32")
        if found.size != output.get("size") or (want and (found.checksums or {}).get("adler32") != want):
            return None
        published[output["path"]] = target
    buffer_record = f"{str(record['output_dir']).rstrip('/')}/{name}"
    published[buffer_record] = f"{out_dir}/{name}"
    return {"preview": {**record, "activation_record": buffer_record}, "published": published}


def process(chunk: Mapping[str, Any], cfg: Config, *, runtime: str, function: str, parameters: Mapping[str, Any],
            ids: Mapping[str, Any], target_qos: str, timeout: float = 300, warm_instances: int | None = None,
            resume: bool = False) -> ck.Chunk:
    """Take each live file of the chunk through :data:`PROCESS_STEPS`, each file on its own; the updated chunk.

    - ``validate``: as :func:`steps.check_hdf5` (still this version, non-empty, checksum known, HDF5);
    - ``replicate``: third-party copy main → buffer, checked against the version's checksum;
    - ``preview``: ``function`` on the replica at the buffer site (:func:`function_step`, the chunk's
      warm instances), outputs to the file's private area there;
    - ``publish``: the outputs and the activation record buffer → ``output_dir`` on main, one macaroon
      per side for the file's folder (:meth:`ThirdPartyCopy.copy_folder`);
    - ``archive_rule``: version checked, then ``target_qos`` asked for (:class:`QosBatcher`);
    - ``drop_buffer_replica``: the file's work area on the buffer (replica and outputs) is removed —
      after its outputs were published, never before.

    ``resume`` (a later try of the task): a file :func:`published_before` only gets its ``archive_rule``
    and ``drop_buffer_replica`` again (its raw file may be on tape only by now), under the step
    ``resume``. ``timings[step]`` is recorded per file and step it went through.
    """
    from airflow_dcache.transfers.tpc import ThirdPartyCopy
    from airflow_dcache.waits import qos_name

    target = qos_name(target_qos)
    if target is None:
        raise ValueError("target_qos: no QoS given")
    with contextlib.ExitStack() as stack:
        hooks = stack.enter_context(Hooks([cfg.main, cfg.buffer], cfg.allowed_roots))
        run, _width = stack.enter_context(function_step(
            cfg, cfg.buffer, _on_buffer, runtime=runtime, function=function, parameters=parameters, ids=ids,
            stage="preview", options=ActivationOptions(timeout=timeout), warm_instances=warm_instances,
            label=chunk.get("index")))

        def submit(paths: list[str]) -> str:
            submission = hooks(cfg.main).submit_bulk_request("UPDATE_QOS", paths, arguments={"targetQos": target})
            log.info("QoS %s requested for %d file(s) (bulk request %s)", target, len(paths), submission.id)
            return str(submission.id)

        qos = QosBatcher(submit)

        def earlier(entry: ck.Entry) -> Mapping[str, Any]:
            try:
                found = published_before(hooks(cfg.main), entry["item"], ids)
            except cfg.transient:
                raise
            except Exception as exc:  # not readable as a complete earlier result: the file starts over
                log.info("%s: starting over (%s)", entry["item"]["path"], exc)
                return ck.SKIP
            return {**found, "resumed": True} if found else ck.SKIP

        def validate(entry: ck.Entry) -> Mapping[str, Any]:
            return ck.SKIP if entry.get("resumed") else {"item": steps.check_hdf5(hooks(cfg.main), entry["item"])}

        def replicate(entry: ck.Entry) -> Mapping[str, Any] | None:
            if entry.get("resumed"):
                return ck.SKIP
            item = entry["item"]
            # the file's buffer area is new: made first, so the copy's MKCOL of its ``in`` folder succeeds at
            # once (bottom-up, a missing parent costs a refused MKCOL and a repeat)
            hooks(cfg.buffer).mkdir(item["buffer_dir"])
            # validate checked the version an instant ago on this thread; the copy is checked against
            # the version's checksum afterwards, so a replacement in between is still caught
            ThirdPartyCopy(hooks(cfg.main), hooks(cfg.buffer)).copy(item["path"], item["buffer_path"], _version(item))
            return None

        def function_(entry: ck.Entry) -> Mapping[str, Any]:
            return ck.SKIP if entry.get("resumed") else run(entry) or {}

        def publish(entry: ck.Entry) -> Mapping[str, Any]:
            if entry.get("resumed"):
                return ck.SKIP
            result, out_dir = entry["preview"], entry["item"]["output_dir"].rstrip("/")
            # the outputs' adler32 is known (the activation verified them): no second read of the source
            files = [(o["path"], (o.get("checksums") or {}).get("adler32")) for o in result.get("outputs", [])]
            # last: its presence on main says "published"
            record_sums = result.get("activation_record_checksums") or {}
            files.append((result["activation_record"], record_sums.get("adler32")))
            copier = ThirdPartyCopy(hooks(cfg.buffer), hooks(cfg.main))
            folders = {posixpath.dirname(path) for path, _ in files}
            if len(folders) == 1:  # the function's output folder: one macaroon per side for this file's outputs
                copied = copier.copy_folder([(posixpath.basename(p), a) for p, a in files], folders.pop(), out_dir)
            else:
                copied = [copier.copy(p, f"{out_dir}/{posixpath.basename(p)}", adler32=a) for p, a in files]
            return {"published": {c["source"]: c["destination"] for c in copied}}

        def archive_rule(entry: ck.Entry) -> dict[str, Any]:
            require_version(hooks(cfg.main), entry["item"]["path"], _version(entry["item"]), step=f"QoS {target}")
            return {"qos_request": qos.request(entry["item"]["path"])}

        def drop(entry: ck.Entry) -> None:
            hooks(cfg.buffer).delete(entry["item"]["buffer_dir"], recursive=True, missing_ok=True, directory=True)

        # the steps in PROCESS_STEPS' order (what the design, the report and the view call them)
        bodies: dict[str, ck.Step] = {"validate": validate, "replicate": replicate, "preview": function_,
                                      "publish": publish, "archive_rule": archive_rule, "drop_buffer_replica": drop}
        flow: list[tuple[str, ck.Step]] = [("resume", earlier)] if resume else []
        flow += [(name, bodies[name]) for name in PROCESS_STEPS]
        result = _run(chunk, cfg, flow)
        log.info("chunk %s: %d of %d file(s) processed, %d QoS request(s)%s", chunk.get("index"),
                 len(ck.live(result)), len(result["files"]), qos.requests,
                 f", {sum(1 for e in result['files'] if e.get('resumed'))} published by an earlier try"
                 if resume else "")
        return result


def wait_archived(chunk: Mapping[str, Any], cfg: Config, *, target_qos: str = "disk+tape", timeout: float = 600,
                  interval: float = 1.0, max_interval: float = 5.0) -> ck.Chunk:
    """Wait (blocking) until every live raw file has ``target_qos``: one listing per directory and round.

    The blocking form of the DAG's deferrable ``wait_archived``
    (:class:`~airflow_dcache.operators.chunk_wait.DCacheChunkWaitOperator`): the same trigger decides, in
    this process. ``disk`` waits until the file is ONLINE with QoS disk, ``tape`` until it is NEARLINE,
    ``disk+tape`` until both. A file that is gone or was replaced fails at once (its version is compared
    on every round, by :func:`require_version`); one not there within ``timeout`` seconds fails with that
    reason; the others are not held back by it. A transient listing error waits for the next round.
    """
    from airflow_dcache.operators.chunk_wait import wait_chunk

    return wait_chunk(chunk, cfg.main, target_qos=target_qos, timeout=timeout, poll_interval=interval,
                      max_poll_interval=max(interval, max_interval), allowed_roots=cfg.allowed_roots)


def record_lineage(archived: Mapping[str, Any], cfg: Config, *, dag_id: str, run_id: str,
                   function_name: str | None) -> tuple[ck.Chunk, list[dict[str, Any]]]:
    """Mark each file version processed (compare-and-set) and build its lineage record; the chunk and records.

    ``archived`` is the chunk after ``wait_archived`` (its files went through ``process`` before): a
    file failed in any step is not marked. A version another run marked first keeps that run's result:
    this run's outputs of it are removed and the file is ``skipped``, not failed.
    """
    merged = archived
    with Hooks([cfg.main], cfg.allowed_roots) as hooks:
        def mark(entry: ck.Entry) -> dict[str, Any]:
            item = entry["item"]
            lineage = steps.record_processed(hooks(cfg.main), item, entry["preview"], entry.get("published") or {},
                                             dag_id=dag_id, run_id=run_id, function_name=function_name)
            if lineage is None:
                return {"skipped": f"{item['path']} ({item.get('pnfsid')}) was processed by another run first; "
                                   "this run's outputs were removed"}
            return {"lineage": lineage}

        result = _run(merged, cfg, [("record_lineage", mark)])
    records = [e["lineage"] for e in ck.live(result) if e.get("lineage") and not e.get("skipped")]
    return result, records


def final_chunk(pull: Callable[[str, str], Any], group: str | None, initial: Mapping[str, Any],
                stages: Sequence[str] = STAGE_TASKS) -> ck.Chunk:
    """The furthest state a run's chunk reached; files a failed stage task left behind are failed.

    ``pull(task_id, key)`` reads the chunk's XCom of a task (this map index); ``stages`` are the chunk's
    stage tasks in order (in ``group``, when the DAG has one), the last one's ``outcome`` or result being
    the chunk's final state. ``initial`` is the chunk as the ``chunk`` task made it. When a stage task
    failed as a whole (a site unreachable after all retries) its files never got a result: they are
    reported failed at that task, pointing to its log.
    """
    ids = [f"{group}.{s}" if group else s for s in stages]
    state = pull(ids[-1], "outcome") or pull(ids[-1], "return_value")
    if state:
        return dict(state)
    missing, state = ids[0], initial
    for position in range(len(ids) - 2, -1, -1):
        found = pull(ids[position], "return_value")
        if found:
            missing, state = ids[position + 1], found
            break
    error = RuntimeError(f"the chunk's task {missing} (chunk {initial.get('index')}) did not complete: see its log")
    return ck.fail_live(state, missing.rsplit(".", 1)[-1], error)


def report(ti: Any, *, group: str | None, stages: Sequence[str] = STAGE_TASKS,
           selection_task: str = "collect") -> dict[str, Any]:
    """The run's per-file outcomes (XCom ``outcomes`` and ``failed``); fails naming every failed file.

    Reads each chunk's furthest state (:func:`final_chunk` over ``stages``), so a file is reported
    whatever stage or task it ended in. ``failed`` (``[{"path", "pnfsid", "stage", "reason"}]``) is what
    a later run's ``only_failed_of`` selects; what ``selection_task`` skipped (XCom ``skipped``) is
    listed beside the outcomes.
    """
    from airflow.sdk.exceptions import AirflowException

    initial = ti.xcom_pull(task_ids="chunk")
    if initial is None:  # report runs whatever happened (all_done): a run that chose no files must not pass
        raise AirflowException(f"nothing was processed: the run's files were never chunked ({selection_task} or "
                               "chunk failed; their logs say why)")
    states = []
    for position, chunk in enumerate(initial):
        def pull(task_id: str, key: str, _index: int = position) -> Any:
            return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=_index)

        states.append(final_chunk(pull, group, chunk, stages))
    outcome = ck.outcomes(states)
    outcome["skipped_at_collect"] = ti.xcom_pull(task_ids=selection_task, key="skipped") or []
    ti.xcom_push(key="failed", value=outcome["failed"])
    ti.xcom_push(key="outcomes", value=outcome)
    log.info("%d file(s) in %d chunk(s): %s", len(outcome["files"]), len(states), outcome["counts"])
    if outcome["failed"]:
        raise AirflowException(f"{len(outcome['failed'])} of {len(outcome['files'])} file(s) failed "
                               f"(re-run them with only_failed_of={ti.run_id}):\n"
                               + ck.failure_summary(outcome["failed"]))
    return outcome


def rerun_params(params: Mapping[str, Any], failed: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The params of a run over the files that failed in the run ``params["only_failed_of"]``.

    They become a manual selection (``paths``, taken literally: a name with ``*`` is that file, not a
    glob) of the files as they are now: a file fixed by a new upload is processed in its new version,
    one that is gone is skipped with that reason.
    """
    run = params.get("only_failed_of")
    if failed is None:
        raise ValueError(f"only_failed_of: run {run!r} of this DAG has no report of failed files (no such run, "
                         "not a chunked run, or it has not reached its report yet)")
    if params.get("paths"):
        raise ValueError("only_failed_of, paths: give one of them, not both")
    paths = sorted({str(f["path"]) for f in failed if f.get("path")})
    log.info("re-running the %d file(s) that failed in %s: %s", len(paths), run, paths)
    return {**params, "paths": paths, "allow_empty": True, "literal_paths": True}


def note_missing(paths: Sequence[str], items: Sequence[Mapping[str, Any]], skipped: list[dict[str, Any]]) -> None:
    """Add to ``skipped`` each re-run path that selected nothing (the file is gone), so the re-run says why."""
    seen = {i.get("path") for i in items} | {s.get("path") for s in skipped}
    for path in paths:
        if path not in seen:
            log.info("not processing %s again: gone (no file at this path any more)", path)
            skipped.append({"path": path, "pnfsid": None, "reason": "gone: no file at this path any more"})
