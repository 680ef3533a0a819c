"""Stage (recall) files from tape through the bulk API or the WLCG tape REST API, and wait.

dCache emits no storage event when a recall completes (inotify reports namespace changes only), so
completion is read from the request's status, one request per poll, with capped backoff.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.links.dcache import DCacheRequestLink, request_url
from airflow_dcache.operators.base import raise_unless_success, request_outcome, wait_request
from airflow_dcache.operators.qos import _WaitingOperator
from airflow_dcache.paths import check_at_parse, paths_from
from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
from airflow_dcache.waits import check_api, deadline_after


def _iso_duration(value: float | timedelta | None) -> str | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"disk_lifetime: expected a positive number of seconds or a timedelta, got {value!r}")
    return f"PT{int(seconds)}S"


class DCacheStageOperator(_WaitingOperator):
    """Bring tape-only files back to disk and wait until the request has finished.

    :param path: a path, a list of paths or file records (templated).
    :param api: ``"bulk"`` (dCache bulk ``STAGE``) or ``"tape"`` (WLCG tape REST ``/tape/stage``).
    :param disk_lifetime: how long staged copies stay pinned, seconds or a timedelta (server default if None).
    :param wait_for_completion: wait until the request finished (else return its id at once).
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param cancel_on_kill: cancel the request when the task is killed.
    :return: ``{"request_id", "api", "paths", "status", "counts"}``.
    """

    template_fields: Sequence[str] = ("path", "dcache_conn_id")
    operator_extra_links = (DCacheRequestLink(),)

    def __init__(
        self,
        *,
        path: str | Sequence[Any],
        api: str = "bulk",
        disk_lifetime: float | timedelta | None = None,
        wait_for_completion: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.api = check_api(api)
        self.disk_lifetime = _iso_duration(disk_lifetime)
        self.wait_for_completion = wait_for_completion
        self.cancel_on_kill = cancel_on_kill
        self._request_id: str | None = None
        self._paths: list[str] = []

    def _submit(self, paths: list[str]) -> str:
        if self.api == "tape":
            return self.hook.stage(paths, disk_lifetime=self.disk_lifetime).id
        arguments = {"diskLifetime": json.dumps({p: self.disk_lifetime for p in paths})} if self.disk_lifetime else None
        return self.hook.submit_bulk_request("STAGE", paths, arguments=arguments).id

    def execute(self, context: Any) -> dict[str, Any]:
        paths = paths_from(self.path, field="path")
        request_id = self._submit(paths)
        self._request_id, self._paths = request_id, paths
        DCacheRequestLink.persist(context, request_url(self.hook.settings.api_url, self.api, request_id))
        self.log.info("stage request %s (%s API) for %d file(s)", request_id, self.api, len(paths))
        if not self.wait_for_completion:
            return {"request_id": request_id, "api": self.api, "paths": paths, "status": "submitted", "counts": {}}
        outcome = request_outcome(self.hook, self.api, request_id)
        if outcome is None:
            deadline = deadline_after(self.timeout)
            if self.deferrable:
                self.defer(
                    trigger=DCacheBulkRequestTrigger(
                        request_id=request_id, api=self.api, dcache_conn_id=self.dcache_conn_id, paths=paths,
                        deadline=deadline, poll_interval=self.poll_interval,
                        max_poll_interval=self.max_poll_interval),
                    method_name="execute_complete")
            outcome = wait_request(self.hook, self.api, request_id, deadline=deadline, backoff=self._backoff(),
                                   log=self.log)
        return self.execute_complete(context, outcome)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the event names the request (defer kwargs are not relied upon)."""
        self._request_id = None
        raise_unless_success(event, "stage request")
        assert event is not None
        self.log.info("%s", event["message"])
        return {"request_id": event.get("request_id"), "api": self.api, "paths": paths_from(self.path, field="path"),
                "status": "completed", "counts": event.get("counts", {})}

    def on_kill(self) -> None:
        if not (self._request_id and self.cancel_on_kill):
            return
        try:
            if self.api == "bulk":
                self.hook.cancel_bulk_request(self._request_id)
            else:
                self.hook.cancel_stage(self._request_id, self._paths)
            self.log.info("cancelled stage request %s", self._request_id)
        except DCacheError as exc:
            self.log.warning("could not cancel stage request %s: %s", self._request_id, exc)
