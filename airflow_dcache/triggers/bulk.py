"""Wait for a bulk request (``/bulk-requests``) or a WLCG tape REST stage request (``/tape/stage``): one
status request per round, whatever the number of files; the outcome is :mod:`airflow_dcache.waits`'."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.triggers._waiting import PollingTrigger
from airflow_dcache.waits import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    bulk_outcome,
    check_api,
    event,
    poll_backoff,
    stage_outcome,
)


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
