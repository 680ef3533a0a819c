"""Wait for many files at once: one trigger polls a whole batch (a pipeline chunk) with batched requests
and ends with one event that keeps each file's own outcome.

Why one trigger for many files: one :class:`~airflow_dcache.triggers.qos.DCacheQosTrigger` per file costs
a trigger (and a ``stat`` per round) per file, and that trigger ends the wait for all its paths at the
first file that fails. Here a round costs one directory listing (``children`` with locality, QoS and
checksums) per directory of the batch, plus one status request of the bulk request behind the wait,
whatever the number of files; a file that fails is decided on its own and its batch-mates go on.

Outcomes per file (``outcome`` of each entry of the event's ``files``):

- ``reached``: the file meets the condition;
- ``gone``: no file at the path any more (its directory may be gone too);
- ``replaced``: another version is at the path (a new pnfsid or checksum): the wait never reports on
  the newer file in its predecessor's name (:func:`~airflow_dcache.events.version.require_version`);
- ``failed``: a final state that waiting cannot change (``LOST``, a failed target of the bulk request,
  a listing refused for a reason other than a transient one);
- ``timeout``: still not there at the deadline; ``unreachable`` says the last listing of its directory
  failed with a connection error (the site, not the file, is the problem).

Transient errors (:data:`~airflow_dcache.waits.TRANSIENT`: connection refused, 5xx, 429) wait for the
next round, as the blocking wait of the chunked pipeline did.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.exceptions import DCacheConnectionError, DCacheError, NotFound, VersionChanged
from airflow_dcache.paths import clean_roots
from airflow_dcache.triggers._waiting import PollingTrigger
from airflow_dcache.waits import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    TRANSIENT,
    FileCondition,
    check_file,
    error_message,
    event,
    poll_backoff,
    qos_name,
    summarise,
)

#: What "reached" means for a target QoS: the QoS itself, and the locality that QoS implies (a file
#: whose rule is ``disk`` is not waited for until it is on tape, and ``disk+tape`` needs both copies).
QOS_LOCALITY = {"disk": "ONLINE", "tape": "NEARLINE", "disk+tape": "ONLINE_AND_NEARLINE", "volatile": None}
OUTCOMES = ("reached", "gone", "replaced", "failed", "timeout")
#: Directories listed at once in a round (a chunk's files usually share one or a few).
DEFAULT_CONCURRENCY = 8


def qos_condition(target_qos: str | None) -> FileCondition:
    """The condition a file with rule ``target_qos`` must meet: the QoS reached, on the media it names."""
    target = qos_name(target_qos)
    if target is None:
        raise ValueError("target_qos: no QoS given")
    return FileCondition.build(target, QOS_LOCALITY[target])


class _Listed:
    """A directory listing's entry standing in for a ``stat``, so :func:`require_version` decides the version
    of a listed file exactly as it does for every other step (one comparison, one wording)."""

    def __init__(self, entry: Any) -> None:
        self.entry = entry

    def stat(self, path: str, **_flags: Any) -> Any:
        if self.entry is None:
            raise NotFound(f"{path} is not in its directory's listing")
        return self.entry


def judge(path: str, found: Any, expected: FileVersion | None, condition: FileCondition, *,
          what: str) -> tuple[str, str | None] | None:
    """One file of one round: ``(outcome, reason)`` when decided, ``None`` while it is still pending.

    :param found: the file's listing entry (``None``: not in the listing, so gone).
    :param expected: the version waited for; ``None`` waits for whatever file is at the path.
    :param what: the wait, for reasons ("waiting until it is archived").
    """
    if expected is not None:
        try:
            require_version(_Listed(found), path, expected, step=what)
        except VersionChanged as exc:
            return ("gone" if found is None else "replaced"), str(exc)
    elif found is None:
        return "gone", f"{path} is gone (deleted or moved away) while {what}"
    verdict = check_file(found, condition)
    if verdict.failure:
        return "failed", f"{path}: {verdict.failure}"
    return ("reached", None) if verdict.met else None


class DCacheFilesWaitTrigger(PollingTrigger):
    """Poll a batch of files together until each one is decided (or the deadline); one event, per-file outcomes.

    :param files: ``[{"path": <absolute dCache path>, "version": <FileVersion id> | None}]``; a file with a
        version is failed as ``replaced`` when another version is found at its path.
    :param dcache_conn_id: the dCache connection (its id only: no secret is ever a trigger kwarg).
    :param target_qos: wait until each file has this QoS (no transition pending).
    :param locality: wait until the locality includes these parts (``NEARLINE``: archived).
    :param deadline: ``time.time()`` after which the pending files time out.
    :param bulk_request_id: the bulk request that asked for the transition: its failed targets fail their
        files, a cancelled request fails the pending ones, and ``on_kill`` cancels it (``cancel_on_kill``).
    :param started: ``time.time()`` when the wait began (echoed in the event, for the files' timings).
    :param poll_interval: first delay between rounds; doubled after each round up to ``max_poll_interval``.
    :param concurrency: directories listed at once.
    :param cancel_on_kill: cancel ``bulk_request_id`` when a user kills the deferred task.
    :param allowed_roots: the trees the wait may list (a pipeline's roots): the task's own limit holds
        in the triggerer too.

    The event: ``{"status": "success" (all reached) | "error" (some not) | "timeout" (some timed out),
    "message", "files": [{"path", "outcome", "reason", "at", "unreachable"?}] (in input order),
    "counts": {outcome: n}, "started", "bulk_request_id"}``.
    """

    def __init__(
        self,
        *,
        files: Sequence[Mapping[str, Any]],
        dcache_conn_id: str = "dcache_default",
        target_qos: str | None = None,
        locality: Sequence[str] | str | None = None,
        deadline: float | None = None,
        bulk_request_id: str | None = None,
        started: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_INTERVAL,
        concurrency: int = DEFAULT_CONCURRENCY,
        cancel_on_kill: bool = True,
        allowed_roots: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.files = [_file(f) for f in files]
        if not self.files:
            raise ValueError("files: nothing to wait for")
        self.dcache_conn_id = dcache_conn_id
        self.condition = FileCondition.build(target_qos, locality)
        self.deadline = deadline
        self.bulk_request_id = bulk_request_id or None
        self.started = started
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        poll_backoff(poll_interval, max_poll_interval)  # validates both
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency: expected a whole number >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.cancel_on_kill = cancel_on_kill
        self.allowed_roots = list(clean_roots(allowed_roots))
        self._versions = [FileVersion.parse(f["version"]) if f["version"] else None for f in self.files]
        self._decided: dict[int, dict[str, Any]] = {}
        self._errors: dict[str, tuple[str, bool]] = {}  # directory -> (last transient error, connection error?)
        self._use_bulk = self.bulk_request_id is not None
        self.rounds = 0
        self.requests = 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "files": [dict(f) for f in self.files],
                "dcache_conn_id": self.dcache_conn_id,
                "target_qos": self.condition.target_qos,
                "locality": sorted(self.condition.locality),
                "deadline": self.deadline,
                "bulk_request_id": self.bulk_request_id,
                "started": self.started,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "concurrency": self.concurrency,
                "cancel_on_kill": self.cancel_on_kill,
                "allowed_roots": list(self.allowed_roots),
            },
        )

    def _hook(self) -> Any:
        from airflow_dcache.hooks.dcache_async import DCacheAsyncHook

        return DCacheAsyncHook(self.dcache_conn_id, allowed_roots=self.allowed_roots)

    @property
    def what(self) -> str:
        return f"waiting until {self.condition.describe()}"

    def _pending(self) -> list[int]:
        return [i for i in range(len(self.files)) if i not in self._decided]

    def _decide(self, index: int, outcome: str, reason: str | None) -> None:
        self._decided[index] = {"path": self.files[index]["path"], "outcome": outcome, "reason": reason,
                                "at": time.time()}

    async def poll(self, hook: Any) -> dict[str, Any] | None:
        self.rounds += 1
        by_dir: dict[str, list[int]] = {}
        for index in self._pending():
            by_dir.setdefault(posixpath.dirname(self.files[index]["path"]), []).append(index)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(directory: str, indexes: list[int]) -> None:
            async with limit:
                await self._list(hook, directory, indexes)

        await asyncio.gather(*(one(d, ix) for d, ix in by_dir.items()))
        if self._use_bulk and self._pending():
            await self._bulk(hook)
        if self._pending():
            return None
        return self._final("success" if all(d["outcome"] == "reached" for d in self._decided.values())
                           else "error")

    async def _list(self, hook: Any, directory: str, indexes: list[int]) -> None:
        """One directory's listing decides its pending files; a transient error leaves them for the next round."""
        flags = {"locality": True, "checksum": True, "qos": self.condition.target_qos is not None}
        self.requests += 1
        try:
            listing = {e.name: e for e in await hook.list_dir(directory, **flags)}
        except NotFound:
            listing = {}  # the directory is gone: so are its files
        except TRANSIENT as exc:
            self._errors[directory] = (error_message(exc), isinstance(exc, DCacheConnectionError))
            self.log.warning("could not list %s (%s); trying again next round", directory, exc)
            return
        except DCacheError as exc:  # refused or broken: waiting will not help, the files fail with the reason
            for index in indexes:
                self._decide(index, "failed", f"{self.files[index]['path']}: {self.what}: {exc}")
            return
        self._errors.pop(directory, None)
        for index in indexes:
            path = self.files[index]["path"]
            verdict = judge(path, listing.get(posixpath.basename(path)), self._versions[index], self.condition,
                            what=self.what)
            if verdict is not None:
                self._decide(index, *verdict)

    async def _bulk(self, hook: Any) -> None:
        """The bulk request behind the wait: its failed targets and a cancellation fail their pending files.

        The listing decides every file by itself; the request only says sooner that waiting will not
        help. A request that is gone (cleared) or cannot be read is no reason to fail a file.
        """
        self.requests += 1
        try:
            info = await hook.bulk_request_status(self.bulk_request_id)
        except TRANSIENT as exc:
            self.log.warning("could not read bulk request %s (%s); trying again next round", self.bulk_request_id, exc)
            return
        except DCacheError as exc:
            self.log.warning("bulk request %s cannot be read (%s): deciding from the listings alone",
                             self.bulk_request_id, exc)
            self._use_bulk = False
            return
        failed = {t.target: t for t in info.failed_targets}
        cancelled = info.status.upper() == "CANCELLED"
        for index in self._pending():
            path = self.files[index]["path"]
            target = failed.get(path) or next(
                (t for name, t in failed.items() if path.endswith("/" + name.lstrip("/"))), None)
            if target is not None:
                detail = f"{target.error_type or ''} {target.error_message or ''}".strip() or "no reason given"
                self._decide(index, "failed", f"{path}: QoS request {info.id} failed for this file: {detail}")
            elif cancelled:
                self._decide(index, "failed", f"{path}: QoS request {info.id} was cancelled while {self.what}")

    def _final(self, status: str) -> dict[str, Any]:
        files = [self._decided[i] for i in range(len(self.files))]
        counts: dict[str, int] = {}
        for f in files:
            counts[f["outcome"]] = counts.get(f["outcome"], 0) + 1
        not_reached = [f["path"] for f in files if f["outcome"] != "reached"]
        message = f"{counts.get('reached', 0)} of {len(files)} file(s) reached: {self.condition.describe()}"
        if not_reached:
            message += f"; not: {summarise(not_reached)}"
        return event(status, message, files=files, counts=dict(sorted(counts.items())), **self.unfinished_fields())

    def timeout_event(self) -> dict[str, Any]:
        elapsed = f" after {time.time() - self.started:.0f} s" if self.started else ""
        for index in self._pending():
            path = self.files[index]["path"]
            error, unreachable = self._errors.get(posixpath.dirname(path), (None, False))
            reason = f"{path}: timed out{elapsed} waiting until {self.condition.describe()}"
            if error:
                reason += f"; its directory's last listing failed: {error}"
            self._decide(index, "timeout", reason)
            self._decided[index]["unreachable"] = unreachable
        return self._final("timeout")

    def unfinished_fields(self) -> dict[str, Any]:
        return {"started": self.started, "bulk_request_id": self.bulk_request_id,
                "rounds": self.rounds, "requests": self.requests}

    async def on_kill(self) -> None:
        """The user killed the task while it was deferred: cancel the bulk request behind the wait."""
        if not (self.bulk_request_id and self.cancel_on_kill):
            return
        try:
            async with self._hook() as hook:
                await hook.cancel_bulk_request(self.bulk_request_id)
            self.log.info("cancelled bulk request %s", self.bulk_request_id)
        except DCacheError as exc:
            self.log.warning("could not cancel bulk request %s: %s", self.bulk_request_id, exc)


def _file(value: Any) -> dict[str, Any]:
    """One ``files`` entry, checked: an absolute path and an optional version id (validated here, at defer)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str) or not value["path"].startswith("/"):
        raise ValueError(f"files: expected {{'path': <absolute path>, 'version': <id> | None}}, got {value!r:.200}")
    version = value.get("version")
    if version is not None:
        if isinstance(version, FileVersion):
            version = version.id
        elif isinstance(version, Mapping):
            version = FileVersion.from_json(version).id
        FileVersion.parse(str(version))
    return {"path": value["path"], "version": str(version) if version else None}


__all__ = ["OUTCOMES", "QOS_LOCALITY", "DCacheFilesWaitTrigger", "judge", "qos_condition"]
