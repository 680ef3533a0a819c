"""QoS operators: change a file's QoS (disk, tape, disk+tape) and wait for it; pin and unpin.

The QoS change is one bulk ``UPDATE_QOS`` request for all files: one call whatever their number, and a
request that ``on_kill`` can cancel (the namespace ``qos`` action cannot be cancelled). Completion is
decided per file from ``stat`` (current QoS equals the target, no transition pending, optionally a
locality such as ``NEARLINE``), polled with capped backoff, blocking or deferred.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.links.dcache import (
    DCacheFileLink,
    DCacheRequestLink,
    DCacheViewLink,
    persist_file_links,
    request_url,
)
from airflow_dcache.operators.base import (
    DCacheBaseOperator,
    check_files,
    check_versions,
    expected_versions,
    raise_unless_success,
    wait_files,
)
from airflow_dcache.paths import check_at_parse, is_template, paths_from
from airflow_dcache.triggers.qos import DCacheQosTrigger
from airflow_dcache.utils.backoff import Backoff
from airflow_dcache.waits import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    FileCondition,
    deadline_after,
    poll_backoff,
    qos_name,
)


def _timeout_seconds(value: float | timedelta | None, field_name: str = "timeout") -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"{field_name}: expected a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


class _WaitingOperator(DCacheBaseOperator):
    """Common arguments of operators that wait: deferrable, polling, deadline."""

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_INTERVAL,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        poll_backoff(poll_interval, max_poll_interval)  # validates
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = _timeout_seconds(timeout)

    def _backoff(self) -> Backoff:
        return poll_backoff(self.poll_interval, self.max_poll_interval)


class DCacheSetQosOperator(_WaitingOperator):
    """Set the QoS of files (``disk``, ``tape``, ``disk+tape``) and wait until it is reached.

    :param path: a path, a list of paths or file records (templated; ``.expand()`` over a list works).
    :param target_qos: ``disk``, ``tape`` or ``disk+tape`` (templated).
    :param wait_for_completion: wait until every file has the QoS (else return once submitted).
    :param wait_for_locality: also wait until the locality includes this (``NEARLINE``: archived).
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :type poll_interval: float
    :param poll_interval: first delay between checks, doubled up to ``max_poll_interval``.
    :type timeout: float | datetime.timedelta | None
    :param timeout: give up after this many seconds (or a timedelta); default one day.
    :param cancel_on_kill: cancel the bulk request when the task is killed.
    :param expected_version: the file version(s) this rule is for (templated): a version id or dict for
        one path, or ``{path: version}``. A file replaced since then fails the task at once
        (``VersionChanged``, not retried) instead of giving the newer version this version's rule.
    :return: ``{"paths", "target_qos", "locality", "request_id", "status"}``.
    """

    template_fields: Sequence[str] = ("path", "target_qos", "wait_for_locality", "dcache_conn_id",
                                      "expected_version")
    operator_extra_links = (DCacheFileLink(), DCacheViewLink(), DCacheRequestLink())

    def __init__(
        self,
        *,
        path: str | Sequence[Any],
        target_qos: str,
        wait_for_completion: bool = True,
        wait_for_locality: str | Sequence[str] | None = None,
        cancel_on_kill: bool = True,
        expected_version: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        if not is_template(target_qos) and qos_name(target_qos) is None:
            raise ValueError("target_qos: no QoS given")
        if not is_template(wait_for_locality):
            FileCondition.build(None, wait_for_locality)
        self.path = path
        self.target_qos = target_qos
        self.wait_for_completion = wait_for_completion
        self.wait_for_locality = wait_for_locality
        self.cancel_on_kill = cancel_on_kill
        self.expected_version = expected_version
        self._request_id: str | None = None

    def _result(self, paths: list[str], condition: FileCondition, request_id: str, status: str) -> dict[str, Any]:
        return {"paths": paths, "target_qos": condition.target_qos, "locality": sorted(condition.locality),
                "request_id": request_id, "status": status}

    def execute(self, context: Any) -> dict[str, Any]:
        paths = paths_from(self.path, field="path")
        target = qos_name(self.target_qos)
        if target is None:
            raise ValueError("target_qos: no QoS given")
        condition = FileCondition.build(target, self.wait_for_locality)
        check_versions(self.hook, expected_versions(paths, self.expected_version), step=f"QoS {target}")
        submission = self.hook.submit_bulk_request("UPDATE_QOS", paths, arguments={"targetQos": target})
        self._request_id = submission.id
        api_url = self.hook.settings.api_url
        persist_file_links(context, self.dcache_conn_id, api_url, paths[0])
        DCacheRequestLink.persist(context, request_url(api_url, "bulk", submission.id))
        self.log.info("QoS %s requested for %d file(s) (bulk request %s)", target, len(paths), submission.id)
        if not self.wait_for_completion:
            return self._result(paths, condition, submission.id, "submitted")
        pending, failure = check_files(self.hook, paths, condition, submission.id)
        if failure is not None:
            raise AirflowException(f"QoS {target} {failure[0]}: {failure[1]}")
        if not pending:
            return self._finish(paths, condition, submission.id)
        deadline = deadline_after(self.timeout)
        if self.deferrable:
            self.defer(
                trigger=DCacheQosTrigger(
                    paths=pending, dcache_conn_id=self.dcache_conn_id, target_qos=target,
                    locality=sorted(condition.locality), deadline=deadline, bulk_request_id=submission.id,
                    poll_interval=self.poll_interval, max_poll_interval=self.max_poll_interval),
                method_name="execute_complete",
            )
        ev = wait_files(self.hook, pending, condition, deadline=deadline, backoff=self._backoff(),
                        bulk_request_id=submission.id, log=self.log)
        raise_unless_success(ev, f"QoS {target}")
        return self._finish(paths, condition, submission.id)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger; everything needed comes from the (re-rendered) fields and the event."""
        condition = FileCondition.build(qos_name(self.target_qos), self.wait_for_locality)
        raise_unless_success(event, f"QoS {condition.target_qos}")
        assert event is not None
        paths = paths_from(self.path, field="path")
        check_versions(self.hook, expected_versions(paths, self.expected_version), step=f"QoS {condition.target_qos}")
        return self._finish(paths_from(self.path, field="path"), condition, str(event.get("bulk_request_id", "")))

    def _finish(self, paths: list[str], condition: FileCondition, request_id: str) -> dict[str, Any]:
        self._request_id = None
        if request_id:
            try:
                self.hook.clear_bulk_request(request_id)  # finished: leave no request behind (dCache archives it)
            except DCacheError as exc:
                self.log.info("bulk request %s not cleared: %s", request_id, exc)
        self.log.info("%d file(s) reached %s", len(paths), condition.describe())
        return self._result(paths, condition, request_id, "reached")

    def on_kill(self) -> None:
        if self._request_id and self.cancel_on_kill:
            try:
                self.hook.cancel_bulk_request(self._request_id)
                self.log.info("cancelled bulk request %s", self._request_id)
            except DCacheError as exc:
                self.log.warning("could not cancel bulk request %s: %s", self._request_id, exc)


def _lifetime_seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"lifetime: expected a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


class DCachePinOperator(_WaitingOperator):
    """Pin files on disk for a while (a tape-only file is staged for it), optionally waiting until ONLINE.

    :param path: a path, a list of paths or file records (templated).
    :param lifetime: how long the pin holds, seconds or a timedelta.
    :param wait_for_online: wait until every file's locality includes ONLINE.
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :return: ``{"paths", "lifetime_seconds", "online"}``.
    """

    template_fields: Sequence[str] = ("path", "dcache_conn_id")
    operator_extra_links = (DCacheFileLink(), DCacheViewLink())

    def __init__(self, *, path: str | Sequence[Any], lifetime: float | timedelta = 86400,
                 wait_for_online: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.lifetime = _lifetime_seconds(lifetime)
        self.wait_for_online = wait_for_online
        self._pinned: list[str] = []

    def execute(self, context: Any) -> dict[str, Any]:
        paths = paths_from(self.path, field="path")
        for path in paths:
            self.hook.pin(path, self.lifetime, "SECONDS")
            self._pinned.append(path)
        persist_file_links(context, self.dcache_conn_id, self.hook.settings.api_url, paths[0])
        result = {"paths": paths, "lifetime_seconds": self.lifetime, "online": False}
        if not self.wait_for_online:
            return result
        condition = FileCondition.build(locality="ONLINE")
        pending, failure = check_files(self.hook, paths, condition)
        if failure is not None:
            raise AirflowException(f"pin {failure[0]}: {failure[1]}")
        if pending and self.deferrable:
            self.defer(
                trigger=DCacheQosTrigger(paths=pending, dcache_conn_id=self.dcache_conn_id, locality=["ONLINE"],
                                         deadline=deadline_after(self.timeout), poll_interval=self.poll_interval,
                                         max_poll_interval=self.max_poll_interval),
                method_name="execute_complete")
        if pending:
            raise_unless_success(wait_files(self.hook, pending, condition, deadline=deadline_after(self.timeout),
                                            backoff=self._backoff(), log=self.log), "pin")
        self._pinned = []
        return {**result, "online": True}

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        raise_unless_success(event, "pin")
        return {"paths": paths_from(self.path, field="path"), "lifetime_seconds": self.lifetime, "online": True}

    def on_kill(self) -> None:
        """Killed while waiting: release the pins this task placed (a staging recall is then abandoned)."""
        for path in self._pinned:
            try:
                self.hook.unpin(path)
            except DCacheError as exc:
                self.log.warning("could not unpin %s: %s", path, exc)


class DCacheUnpinOperator(DCacheBaseOperator):
    """Remove the pins of files.

    :param path: a path, a list of paths or file records (templated).
    :return: ``{"paths"}``.
    """

    template_fields: Sequence[str] = ("path", "dcache_conn_id")

    def __init__(self, *, path: str | Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path

    def execute(self, context: Any) -> dict[str, Any]:
        paths = paths_from(self.path, field="path")
        for path in paths:
            self.hook.unpin(path)
        return {"paths": paths}
