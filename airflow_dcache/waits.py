"""What a wait waits for, free of I/O: shared by the deferrable triggers, the sensors' ``poke`` and the
operators' blocking path, so ``deferrable=True`` and ``False`` decide the same way.

- **Events.** Every wait ends in exactly one event ``{"status": "success"|"error"|"timeout"|"cancelled",
  "message": str, ...}`` (the Amazon/dbt Cloud contract), so all failure policy lives in the
  operator's ``execute_complete``.
- **Pacing.** Poll intervals (a capped :class:`~airflow_dcache.utils.backoff.Backoff`) and absolute deadlines,
  serialised as such so a restarted trigger keeps the same one.
- **Files.** :class:`FileCondition` / :func:`check_file`: exists, a QoS, a locality (``NEARLINE`` =
  on tape), a known checksum, decided from one ``stat``. dCache emits no storage event when a flush or
  a QoS transition completes (inotify covers namespace changes only), so polling is the only signal.
- **Requests.** :func:`bulk_outcome` / :func:`stage_outcome` / :func:`bulk_failure`: a bulk or a WLCG
  tape-stage request, ``None`` while it runs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dcache.exceptions import DCacheConnectionError, LimitExceeded, ServerError
from airflow_dcache.hooks.models import BulkRequestInfo, NamespaceEntry, StageRequestInfo
from airflow_dcache.selection import has_locality, locality_parts
from airflow_dcache.utils.backoff import Backoff, positive_seconds

SHOWN = 20
"""Paths named in a message or an event; the rest are counted."""

STATUSES = ("success", "error", "timeout", "cancelled")
TRANSIENT = (DCacheConnectionError, ServerError, LimitExceeded)
"""Errors worth retrying until the deadline: the service may come back; anything else is final."""

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_MAX_INTERVAL = 60.0
DEFAULT_TIMEOUT = 24 * 3600.0


def poll_backoff(poll_interval: Any, max_poll_interval: Any) -> Backoff:
    """The backoff of a poll loop; validates both intervals with errors naming the argument."""
    return Backoff(poll_interval, max_poll_interval, names=("poll_interval", "max_poll_interval"))


check_interval = positive_seconds


def deadline_after(timeout: float | None) -> float:
    """Absolute ``time.time()`` deadline; serialised as such so a restarted trigger keeps the same one."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    return time.time() + check_interval(timeout, "timeout")


def event(status: str, message: str, **fields: Any) -> dict[str, Any]:
    """One status event payload (plain JSON)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    return {"status": status, "message": message, **fields}


def error_message(exc: BaseException) -> str:
    """A one-line description of an exception for an error event (hook errors are already masked)."""
    return f"{type(exc).__name__}: {exc}"


# -- files ----------------------------------------------------------------------------------------

QOS_TARGETS = ("disk", "tape", "disk+tape", "volatile")
_QOS_ALIASES = {"tape+disk": "disk+tape"}
_BROKEN_LOCALITIES = frozenset({"LOST"})


def qos_name(value: str | None, field_name: str = "target_qos") -> str | None:
    """``disk``, ``tape``, ``disk+tape`` (``tape+disk`` accepted) or ``volatile``; ValueError naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: expected a QoS name, got {value!r}")
    name = _QOS_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in QOS_TARGETS:
        raise ValueError(f"{field_name}: unknown QoS {value!r}; dCache knows {', '.join(QOS_TARGETS)}")
    return name


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
        return cls(qos_name(target_qos), locality_parts(locality), checksum.strip().lower() if checksum else None)

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
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


# -- requests -------------------------------------------------------------------------------------

APIS = ("bulk", "tape")


def check_api(api: str) -> str:
    if api not in APIS:
        raise ValueError(f"api: {api!r} is not one of {', '.join(APIS)}")
    return api


def bulk_outcome(info: BulkRequestInfo) -> dict[str, Any] | None:
    """The event for a finished bulk request, ``None`` while it runs."""
    if not info.finished:
        return None
    counts = dict(sorted(Counter(t.state for t in info.targets).items()))
    failed = [{"path": t.target, "error": f"{t.error_type or ''} {t.error_message or ''}".strip()}
              for t in info.failed_targets]
    common = {"request_id": info.id, "api": "bulk", "counts": counts, "failed": failed[:SHOWN]}
    if info.status.upper() == "CANCELLED":
        return event("cancelled", f"bulk request {info.id} was cancelled", **common)
    if failed:
        return event("error", f"bulk request {info.id}: {len(failed)} of {len(info.targets)} target(s) failed: "
                     + "; ".join(f"{f['path']}: {f['error']}" for f in failed[:SHOWN]), **common)
    return event("success", f"bulk request {info.id} completed ({len(info.targets)} target(s))", **common)


def stage_outcome(info: StageRequestInfo) -> dict[str, Any] | None:
    """The event for a finished tape REST stage request, ``None`` while it runs."""
    if not info.finished:
        return None
    counts = dict(sorted(Counter(f.state for f in info.files).items()))
    failed = [{"path": f.path, "error": f.error or f.state} for f in info.files if f.state != "COMPLETED"]
    common = {"request_id": info.id, "api": "tape", "counts": counts, "failed": failed[:SHOWN]}
    if info.files and all(f.state == "CANCELLED" for f in info.files):
        return event("cancelled", f"stage request {info.id} was cancelled", **common)
    if failed:
        return event("error", f"stage request {info.id}: {len(failed)} of {len(info.files)} file(s) not staged: "
                     + "; ".join(f"{f['path']}: {f['error']}" for f in failed[:SHOWN]), **common)
    return event("success", f"stage request {info.id} completed ({len(info.files)} file(s))", **common)


def bulk_failure(info: Any) -> tuple[str, str] | None:
    """``(status, message)`` when a bulk request behind a wait was cancelled or has failed targets."""
    if info.status.upper() == "CANCELLED":
        return "cancelled", f"bulk request {info.id} was cancelled"
    failed = info.failed_targets
    if failed:
        details = "; ".join(
            f"{t.target}: {t.error_type or ''} {t.error_message or ''}".strip() for t in failed[:SHOWN])
        return "error", f"bulk request {info.id}: {len(failed)} target(s) failed: {details}"
    return None
