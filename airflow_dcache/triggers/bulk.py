"""Wait for a bulk request (``/bulk-requests``) or a WLCG tape REST stage request (``/tape/stage``).

:func:`bulk_outcome` and :func:`stage_outcome` are pure and shared by the trigger, the sensor's
``poke`` and the blocking operator path: ``None`` while running, else one status event. dCache sends
no storage event when a recall completes, so the trigger polls the request's status with capped
backoff (one request per round, whatever the number of files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.hooks._models import BulkRequestInfo, StageRequestInfo
from airflow_dcache.triggers._waiting import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    PollingTrigger,
    event,
    poll_backoff,
)

APIS = ("bulk", "tape")
_SHOWN = 20


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
    common = {"request_id": info.id, "api": "bulk", "counts": counts, "failed": failed[:_SHOWN]}
    if info.status.upper() == "CANCELLED":
        return event("cancelled", f"bulk request {info.id} was cancelled", **common)
    if failed:
        return event("error", f"bulk request {info.id}: {len(failed)} of {len(info.targets)} target(s) failed: "
                     + "; ".join(f"{f['path']}: {f['error']}" for f in failed[:_SHOWN]), **common)
    return event("success", f"bulk request {info.id} completed ({len(info.targets)} target(s))", **common)


def stage_outcome(info: StageRequestInfo) -> dict[str, Any] | None:
    """The event for a finished tape REST stage request, ``None`` while it runs."""
    if not info.finished:
        return None
    counts = dict(sorted(Counter(f.state for f in info.files).items()))
    failed = [{"path": f.path, "error": f.error or f.state} for f in info.files if f.state != "COMPLETED"]
    common = {"request_id": info.id, "api": "tape", "counts": counts, "failed": failed[:_SHOWN]}
    if info.files and all(f.state == "CANCELLED" for f in info.files):
        return event("cancelled", f"stage request {info.id} was cancelled", **common)
    if failed:
        return event("error", f"stage request {info.id}: {len(failed)} of {len(info.files)} file(s) not staged: "
                     + "; ".join(f"{f['path']}: {f['error']}" for f in failed[:_SHOWN]), **common)
    return event("success", f"stage request {info.id} completed ({len(info.files)} file(s))", **common)


class DCacheBulkRequestTrigger(PollingTrigger):
    """Poll a bulk or tape stage request until it finishes; one status event.

    :param request_id: the request id (``BulkSubmission.id``).
    :param api: ``"bulk"`` (``/bulk-requests``) or ``"tape"`` (WLCG ``/tape/stage``).
    :param dcache_conn_id: the dCache connection.
    :param paths: the request's files; the tape API needs them to cancel.
    :param deadline: ``time.time()`` after which a ``timeout`` event is sent.
    :param poll_interval: first delay between polls; doubled up to ``max_poll_interval``.
    """

    def __init__(
        self,
        *,
        request_id: str,
        api: str = "bulk",
        dcache_conn_id: str = "dcache_default",
        paths: Sequence[str] = (),
        deadline: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_INTERVAL,
    ) -> None:
        super().__init__()
        if not request_id:
            raise ValueError("request_id: no request id given")
        self.request_id = request_id
        self.api = check_api(api)
        self.dcache_conn_id = dcache_conn_id
        self.paths = list(paths)
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        poll_backoff(poll_interval, max_poll_interval)  # validates both

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "api": self.api,
                "dcache_conn_id": self.dcache_conn_id,
                "paths": list(self.paths),
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
            },
        )

    async def poll(self, hook: Any) -> dict[str, Any] | None:
        if self.api == "bulk":
            return bulk_outcome(await hook.bulk_request_status(self.request_id))
        return stage_outcome(await hook.stage_status(self.request_id))

    def timeout_event(self) -> dict[str, Any]:
        return event("timeout", f"request {self.request_id} still running", **self.unfinished_fields())

    def unfinished_fields(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "api": self.api}

    async def on_kill(self) -> None:
        """The user killed the task while deferred: cancel the request on the server."""
        try:
            async with self._hook() as hook:
                if self.api == "bulk":
                    await hook.cancel_bulk_request(self.request_id)
                else:
                    await hook.cancel_stage(self.request_id, self.paths)
            self.log.info("cancelled %s request %s", self.api, self.request_id)
        except DCacheError as exc:
            self.log.warning("could not cancel %s request %s: %s", self.api, self.request_id, exc)
