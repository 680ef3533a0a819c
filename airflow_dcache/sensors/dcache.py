"""Sensors: a file exists / is ONLINE / has a QoS / has a checksum; a bulk or stage request finished.

Each pokes once; with ``deferrable=True`` it then hands the wait to the same trigger the operators use
(:class:`~airflow_dcache.triggers.qos.DCacheQosTrigger`,
:class:`~airflow_dcache.triggers.bulk.DCacheBulkRequestTrigger`), with the sensor's ``poke_interval``
as the first poll delay and its ``timeout`` as the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, conf
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.operators.base import (
    DEFAULT_CONN_ID,
    check_files,
    check_versions,
    expected_versions,
    request_outcome,
)
from airflow_dcache.paths import check_at_parse, clean_roots, is_template, paths_from
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.triggers.bulk import DCacheBulkRequestTrigger
from airflow_dcache.triggers.qos import DCacheQosTrigger
from airflow_dcache.waits import DEFAULT_MAX_INTERVAL, FileCondition, check_api

CONDITIONS = ("exists", "online", "nearline", "qos", "checksum")


class _DCacheSensor(BaseSensorOperator):
    ui_color = "#8fd3f4"

    def __init__(
        self,
        *,
        dcache_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = DEFAULT_MAX_INTERVAL,
        allowed_roots: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retry_policy", DCacheRetryPolicy())
        super().__init__(**kwargs)
        self.dcache_conn_id = dcache_conn_id
        self.allowed_roots = clean_roots(allowed_roots)
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval

    @cached_property
    def hook(self) -> DCacheHook:
        return DCacheHook(self.dcache_conn_id, allowed_roots=self.allowed_roots)

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(trigger=self._trigger(time.time() + float(self.timeout)), method_name="execute_complete")

    def _trigger(self, deadline: float) -> Any:
        raise NotImplementedError

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else repr(event)
            status = event.get("status") if isinstance(event, dict) else "error"
            raise AirflowException(f"{self.task_id} {status}: {message}")
        self.log.info("%s", event.get("message"))


class DCacheFileSensor(_DCacheSensor):
    """Wait until files exist, and optionally are ONLINE / NEARLINE, have a QoS or a known checksum.

    :param path: a path, a list of paths or file records (templated).
    :param condition: shortcut: ``exists`` (default), ``online``, ``nearline`` (archived), ``qos``
        (needs ``target_qos``) or ``checksum``.
    :param target_qos: also wait for this QoS (templated).
    :param locality: also wait until the locality includes this (``ONLINE``, ``NEARLINE``; templated).
    :param checksum: also wait until this checksum (or ``"any"``) is known.
    :type dcache_conn_id: str
    :param dcache_conn_id: the dCache connection (templated).
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param expected_version: the file version(s) waited for (templated): a version id or dict for one
        path, or ``{path: version}``. A file replaced meanwhile fails the task at once
        (``VersionChanged``) instead of waiting for, and reporting on, the newer version.
    """

    template_fields: Sequence[str] = ("path", "target_qos", "locality", "dcache_conn_id", "expected_version")

    def __init__(
        self,
        *,
        path: str | Sequence[Any],
        condition: str = "exists",
        target_qos: str | None = None,
        locality: str | Sequence[str] | None = None,
        checksum: str | None = None,
        expected_version: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        if condition not in CONDITIONS:
            raise ValueError(f"condition: {condition!r} is not one of {', '.join(CONDITIONS)}")
        if condition == "online":
            locality = locality or "ONLINE"
        elif condition == "nearline":
            locality = locality or "NEARLINE"
        elif condition == "checksum":
            checksum = checksum or "any"
        elif condition == "qos" and not target_qos:
            raise ValueError("target_qos: condition 'qos' needs a target_qos")
        if not is_template(target_qos) and not is_template(locality):
            FileCondition.build(target_qos, locality, checksum)
        self.path = path
        self.condition = condition
        self.target_qos = target_qos
        self.locality = locality
        self.checksum = checksum
        self.expected_version = expected_version

    def _condition(self) -> FileCondition:
        return FileCondition.build(self.target_qos, self.locality, self.checksum)

    def _check_versions(self) -> None:
        paths = paths_from(self.path, field="path")
        check_versions(self.hook, expected_versions(paths, self.expected_version),
                       step=f"waiting until {self._condition().describe()}")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        self._check_versions()  # first: a replaced file explains a timeout better than the timeout does
        super().execute_complete(context, event)

    def poke(self, context: Any) -> bool:
        condition = self._condition()
        paths = paths_from(self.path, field="path")
        pending, failure = check_files(self.hook, paths, condition,
                                       versions=expected_versions(paths, self.expected_version))
        if failure is not None:
            raise AirflowException(f"{failure[0]}: {failure[1]}")
        if pending:
            self.log.info("%d file(s) not yet %s", len(pending), condition.describe())
        return not pending

    def _trigger(self, deadline: float) -> DCacheQosTrigger:
        condition = self._condition()
        return DCacheQosTrigger(
            paths=paths_from(self.path, field="path"), dcache_conn_id=self.dcache_conn_id,
            target_qos=condition.target_qos, locality=sorted(condition.locality), checksum=condition.checksum,
            deadline=deadline, poll_interval=float(self.poke_interval),
            max_poll_interval=max(float(self.poke_interval), self.max_poll_interval))


class DCacheQosSensor(DCacheFileSensor):
    """Wait until files have a QoS (and optionally a locality, e.g. ``NEARLINE`` once archived).

    :param path: a path, a list of paths or file records (templated).
    :param target_qos: ``disk``, ``tape`` or ``disk+tape`` (templated).
    :param locality: also wait until the locality includes this (templated).
    """

    def __init__(self, *, path: str | Sequence[Any], target_qos: str, locality: str | Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(path=path, condition="qos", target_qos=target_qos, locality=locality, **kwargs)


class DCacheBulkRequestSensor(_DCacheSensor):
    """Wait until a bulk request (or a tape REST stage request) has finished; fail if targets failed.

    :param request_id: the request id, e.g. ``{{ ti.xcom_pull('stage')['request_id'] }}`` (templated).
    :param api: ``"bulk"`` or ``"tape"``.
    :type dcache_conn_id: str
    :param dcache_conn_id: the dCache connection (templated).
    :type deferrable: bool
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("request_id", "dcache_conn_id")

    def __init__(self, *, request_id: str, api: str = "bulk", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not request_id:
            raise ValueError("request_id: no request id given")
        self.request_id = request_id
        self.api = check_api(api)

    def poke(self, context: Any) -> bool:
        outcome = request_outcome(self.hook, self.api, self.request_id)
        if outcome is None:
            return False
        if outcome["status"] != "success":
            raise AirflowException(f"{outcome['status']}: {outcome['message']}")
        self.log.info("%s", outcome["message"])
        return True

    def _trigger(self, deadline: float) -> DCacheBulkRequestTrigger:
        return DCacheBulkRequestTrigger(
            request_id=self.request_id, api=self.api, dcache_conn_id=self.dcache_conn_id, deadline=deadline,
            poll_interval=float(self.poke_interval),
            max_poll_interval=max(float(self.poke_interval), self.max_poll_interval))
