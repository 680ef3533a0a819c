"""Wait until files reach a state: exist, a QoS, a locality (ONLINE / NEARLINE), a known checksum.

:class:`FileCondition` and :func:`check_file` are pure, and used the same way by the deferred path
(:class:`DCacheQosTrigger`), the sensors' ``poke`` and the operators' blocking path. The trigger polls
the frontend (``stat``) with capped backoff: dCache emits no storage event when a flush or a QoS
transition completes (inotify covers namespace changes only), so polling is the only signal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dcache.exceptions import DCacheError, NotFound
from airflow_dcache.hooks._models import NamespaceEntry
from airflow_dcache.selection import has_locality, locality_parts
from airflow_dcache.triggers._waiting import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    PollingTrigger,
    event,
    poll_backoff,
)

QOS_TARGETS = ("disk", "tape", "disk+tape", "volatile")
_QOS_ALIASES = {"tape+disk": "disk+tape"}
_BROKEN_LOCALITIES = frozenset({"LOST"})
_SHOWN = 20  # paths named in a message or event; the rest are counted


def normalise_qos(value: str | None, field_name: str = "target_qos") -> str | None:
    """``disk``, ``tape``, ``disk+tape`` (``tape+disk`` accepted) or ``volatile``; ValueError naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: expected a QoS name, got {value!r}")
    name = _QOS_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in QOS_TARGETS:
        raise ValueError(f"{field_name}: unknown QoS {value!r}; dCache knows {', '.join(QOS_TARGETS)}")
    return name


def normalise_paths(paths: str | Iterable[Any] | None, field_name: str = "paths") -> list[str]:
    """Paths from what DAG authors pass or upstream tasks return, so operators chain without glue code.

    Accepted: a path; a list of paths; file records (``{"path": …}``, the list operator's items); and the
    results of these operators: ``{"destinations": [...]}`` (replicate: the copies), ``{"paths": [...]}``
    (QoS, pin, stage). Mapped tasks can therefore ``.expand(path=upstream.output)``.
    """
    if paths is None:
        raise ValueError(f"{field_name}: no path given")
    items: Iterable[Any] = [paths] if isinstance(paths, (str, dict)) else paths
    result: list[str] = []
    for item in items:
        if isinstance(item, dict) and "path" not in item:
            nested = item.get("destinations", item.get("paths"))
            if isinstance(nested, list):
                result.extend(normalise_paths(nested, field_name) if nested else [])
                continue
        value = item.get("path") if isinstance(item, dict) else item
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError(f"{field_name}: {item!r} is not an absolute dCache path")
        result.append(value)
    if not result:
        raise ValueError(f"{field_name}: the list of paths is empty")
    return result


@dataclass(frozen=True)
class FileCondition:
    """A state a file must be in. An empty condition means "exists".

    :param target_qos: the file's current QoS equals this and no transition is pending.
    :param locality: the file's locality includes these parts (``NEARLINE`` = archived on tape).
    :param checksum: a checksum is known: ``"any"`` or an algorithm name (``adler32``, ``md5``).
    """

    target_qos: str | None = None
    locality: frozenset[str] = frozenset()
    checksum: str | None = None

    @classmethod
    def build(
        cls, target_qos: str | None = None, locality: str | Sequence[str] | None = None, checksum: str | None = None
    ) -> FileCondition:
        if checksum is not None and (not isinstance(checksum, str) or not checksum.strip()):
            raise ValueError(f"checksum: expected 'any' or an algorithm name, got {checksum!r}")
        return cls(normalise_qos(target_qos), locality_parts(locality), checksum.strip().lower() if checksum else None)

    def stat_flags(self) -> dict[str, bool]:
        return {"qos": self.target_qos is not None, "locality": True, "checksum": self.checksum is not None}

    def describe(self) -> str:
        parts = ["exists"]
        if self.target_qos:
            parts.append(f"QoS {self.target_qos}")
        if self.locality:
            parts.append("locality includes " + "+".join(sorted(self.locality)))
        if self.checksum:
            parts.append(f"checksum {self.checksum} known")
        return ", ".join(parts)


@dataclass(frozen=True)
class Verdict:
    met: bool
    failure: str | None = None  # a final state: waiting longer cannot help
    state: str = ""


def check_file(entry: NamespaceEntry | None, condition: FileCondition) -> Verdict:
    """Decide one file from its ``stat`` (``None`` when it does not exist yet)."""
    if entry is None:
        return Verdict(False, state="missing")
    state = f"qos={entry.current_qos} target={entry.target_qos} locality={entry.locality}"
    if entry.is_dir and (condition.target_qos or condition.locality or condition.checksum):
        return Verdict(False, failure=f"{entry.path} is a directory", state=state)
    if (condition.target_qos or condition.locality) and (entry.locality or "").upper() in _BROKEN_LOCALITIES:
        return Verdict(False, failure=f"{entry.path} is {entry.locality}", state=state)
    if condition.target_qos:
        current = _QOS_ALIASES.get((entry.current_qos or "").lower(), (entry.current_qos or "").lower())
        if current != condition.target_qos or entry.target_qos:
            return Verdict(False, state=state)
    if not has_locality(entry.locality, condition.locality):
        return Verdict(False, state=state)
    if condition.checksum:
        known = entry.checksums or {}
        if not known or (condition.checksum != "any" and condition.checksum not in known):
            return Verdict(False, state=state)
    return Verdict(True, state=state)


def summarise(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


class DCacheQosTrigger(PollingTrigger):
    """Poll ``stat`` until every path meets a :class:`FileCondition`; one status event.

    :param paths: absolute dCache paths.
    :param dcache_conn_id: the dCache connection.
    :param target_qos: wait for this QoS (``disk``, ``tape``, ``disk+tape``).
    :param locality: wait until the locality includes these parts (``["NEARLINE"]`` for archived).
    :param checksum: wait until a checksum (``"any"`` or one algorithm) is known.
    :param deadline: ``time.time()`` after which a ``timeout`` event is sent.
    :param bulk_request_id: the bulk request that asked for the transition: its failed targets end the
        wait with an error, and ``on_kill`` cancels it.
    :param poll_interval: first delay between rounds; doubled after each round up to ``max_poll_interval``.
    """

    def __init__(
        self,
        *,
        paths: Sequence[str],
        dcache_conn_id: str = "dcache_default",
        target_qos: str | None = None,
        locality: Sequence[str] | str | None = None,
        checksum: str | None = None,
        deadline: float | None = None,
        bulk_request_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_INTERVAL,
    ) -> None:
        super().__init__()
        self.paths = normalise_paths(paths)
        self.dcache_conn_id = dcache_conn_id
        self.condition = FileCondition.build(target_qos, locality, checksum)
        self.deadline = deadline
        self.bulk_request_id = bulk_request_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        poll_backoff(poll_interval, max_poll_interval)  # validates both
        self._pending: list[str] = list(self.paths)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "paths": list(self.paths),
                "dcache_conn_id": self.dcache_conn_id,
                "target_qos": self.condition.target_qos,
                "locality": sorted(self.condition.locality),
                "checksum": self.condition.checksum,
                "deadline": self.deadline,
                "bulk_request_id": self.bulk_request_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
            },
        )

    def _ids(self) -> dict[str, Any]:
        # The event names the request: ``dag.test()`` (3.3.2) resumes with the event only, dropping the
        # kwargs given to ``defer()``, so operators must not depend on those.
        return {"bulk_request_id": self.bulk_request_id} if self.bulk_request_id else {}

    async def poll(self, hook: Any) -> dict[str, Any] | None:
        failure = await self._round(hook)
        if failure is not None:
            return event(failure[0], failure[1], **self.unfinished_fields())
        if not self._pending:
            done = f"{len(self.paths)} file(s): {self.condition.describe()}"
            return event("success", done, count=len(self.paths), **self._ids())
        return None

    def timeout_event(self) -> dict[str, Any]:
        message = f"{len(self._pending)} file(s) not yet {self.condition.describe()}: {summarise(self._pending)}"
        return event("timeout", message, **self.unfinished_fields())

    def unfinished_fields(self) -> dict[str, Any]:
        return {"pending": self._pending[:_SHOWN], **self._ids()}

    async def _round(self, hook: Any) -> tuple[str, str] | None:
        """One pass over the pending files; returns ``(status, message)`` when the wait must end."""
        if self.bulk_request_id:
            info = await hook.bulk_request_status(self.bulk_request_id)
            failure = bulk_failure(info)
            if failure is not None:
                return failure
        still: list[str] = []
        for path in self._pending:
            try:
                entry = await hook.stat(path, **self.condition.stat_flags())
            except NotFound:
                entry = None
            verdict = check_file(entry, self.condition)
            if verdict.failure:
                return "error", verdict.failure
            if not verdict.met:
                still.append(path)
        self._pending = still
        return None

    async def on_kill(self) -> None:
        """The user killed the task while it was deferred: cancel the bulk request behind the wait."""
        if not self.bulk_request_id:
            return
        try:
            async with self._hook() as hook:
                await hook.cancel_bulk_request(self.bulk_request_id)
            self.log.info("cancelled bulk request %s", self.bulk_request_id)
        except DCacheError as exc:
            self.log.warning("could not cancel bulk request %s: %s", self.bulk_request_id, exc)


def bulk_failure(info: Any) -> tuple[str, str] | None:
    """``(status, message)`` when a bulk request behind a wait was cancelled or has failed targets."""
    if info.status.upper() == "CANCELLED":
        return "cancelled", f"bulk request {info.id} was cancelled"
    failed = info.failed_targets
    if failed:
        details = "; ".join(
            f"{t.target}: {t.error_type or ''} {t.error_message or ''}".strip() for t in failed[:_SHOWN])
        return "error", f"bulk request {info.id}: {len(failed)} target(s) failed: {details}"
    return None
