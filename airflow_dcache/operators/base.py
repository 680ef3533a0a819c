"""Base operator and the blocking side of the waits, shared by the operators, sensors and transfers.

Public (as Amazon's ``base_aws``) because sensors and transfers build on it. The blocking helpers
decide exactly as the triggers do (the same pure checks of :mod:`airflow_dcache.waits`), so
``deferrable=False`` and ``True`` behave the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.exceptions import NotFound
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.paths import clean_roots
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.utils.backoff import Backoff
from airflow_dcache.waits import (
    TRANSIENT,
    FileCondition,
    bulk_failure,
    bulk_outcome,
    check_file,
    event,
    stage_outcome,
    summarise,
)

DEFAULT_CONN_ID = DCacheHook.default_conn_name


class DCacheBaseOperator(BaseOperator):
    """Holds the connection id; the hook is built on first use, on the worker.

    :param dcache_conn_id: the ``dcache`` connection (templated).
    :param allowed_roots: the trees this task may act on (a DAG sets it for all its dCache tasks with
        ``default_args={"allowed_roots": [...]}``); a path outside fails the task before any request.
    """

    template_fields: Sequence[str] = ("dcache_conn_id",)
    ui_color = "#8fd3f4"

    def __init__(self, *, dcache_conn_id: str = DEFAULT_CONN_ID, allowed_roots: Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("retry_policy", DCacheRetryPolicy())
        super().__init__(**kwargs)
        self.dcache_conn_id = dcache_conn_id
        self.allowed_roots = clean_roots(allowed_roots)

    @cached_property
    def hook(self) -> DCacheHook:
        return DCacheHook(self.dcache_conn_id, allowed_roots=self.allowed_roots)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Note the resumption: the file and request links were stored by the process that deferred."""
        self._dcache_resumed = True
        return super().resume_execution(next_method, next_kwargs, context)


def expected_versions(paths: Sequence[str], expected: Any, field_name: str = "expected_version"
                      ) -> dict[str, FileVersion]:
    """``expected`` as ``{path: FileVersion}`` for ``paths``.

    ``expected`` is ``None`` (no check), one version (an id string such as ``"0000AB…;adler32:0a1b2c3d"``
    or a version dict, as work items carry it) for a single path, or a mapping of path to version.
    """
    if expected is None or expected == "" or expected == {}:
        return {}
    if isinstance(expected, FileVersion):
        expected = expected.id
    try:
        if isinstance(expected, str) or (isinstance(expected, dict) and "pnfsid" in expected):
            if len(paths) != 1:
                raise ValueError(f"one version was given for {len(paths)} paths; map each path to its version")
            one = FileVersion.parse(expected) if isinstance(expected, str) else FileVersion.from_json(expected)
            return {paths[0]: one}
        if isinstance(expected, dict):
            versions = {str(p): FileVersion.parse(v) if isinstance(v, str) else FileVersion.from_json(v)
                        for p, v in expected.items()}
            missing = [p for p in paths if p not in versions]
            if missing:
                raise ValueError(f"no version for {missing[0]}")
            return {p: versions[p] for p in paths}
    except ValueError as exc:
        raise ValueError(f"{field_name}: {exc}") from None
    raise ValueError(f"{field_name}: expected a version id, a version dict or {{path: version}}, "
                     f"got {type(expected).__name__}")


def check_versions(hook: DCacheHook, versions: dict[str, FileVersion], *, step: str) -> None:
    """Refuse (``VersionChanged``, permanent) if any file is no longer the version the step was given."""
    for path, version in versions.items():
        require_version(hook, path, version, step=step)


def check_files(
    hook: DCacheHook, paths: Sequence[str], condition: FileCondition, bulk_request_id: str | None = None,
    versions: dict[str, FileVersion] | None = None,
) -> tuple[list[str], tuple[str, str] | None]:
    """One pass: the paths not yet meeting ``condition``, and ``(status, message)`` if the wait must end.

    With ``versions`` the same stat also checks that each file is still its version (``VersionChanged``
    otherwise), so a version-bound wait costs one request per file per round, not two.
    """
    if bulk_request_id:
        failure = bulk_failure(hook.bulk_request_status(bulk_request_id))
        if failure is not None:
            return list(paths), failure
    pending: list[str] = []
    for path in paths:
        version = (versions or {}).get(path)
        if version is not None:
            entry = require_version(hook, path, version, step=f"waiting until {condition.describe()}",
                                    **condition.stat_flags())
        else:
            try:
                entry = hook.stat(path, **condition.stat_flags())
            except NotFound:
                entry = None
        verdict = check_file(entry, condition)
        if verdict.failure:
            return [path], ("error", verdict.failure)
        if not verdict.met:
            pending.append(path)
    return pending, None


def wait_files(
    hook: DCacheHook,
    paths: Sequence[str],
    condition: FileCondition,
    *,
    deadline: float,
    backoff: Backoff,
    bulk_request_id: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Poll until every path meets ``condition`` (blocking); returns the trigger's status event."""
    pending = list(paths)
    while True:
        try:
            pending, failure = check_files(hook, pending, condition, bulk_request_id)
        except TRANSIENT as exc:
            if log is not None:
                log.warning("dCache unavailable, retrying: %s", exc)
            failure = None
        if failure is not None:
            return event(failure[0], failure[1], pending=pending[:20])
        if not pending:
            return event("success", f"{len(paths)} file(s): {condition.describe()}", count=len(paths))
        if time.time() >= deadline:
            return event("timeout", f"{len(pending)} file(s) not yet {condition.describe()}: {summarise(pending)}",
                         pending=pending[:20])
        if log is not None:
            log.info("%d file(s) not yet %s", len(pending), condition.describe())
        time.sleep(backoff.next(deadline))


def request_outcome(hook: DCacheHook, api: str, request_id: str) -> dict[str, Any] | None:
    if api == "bulk":
        return bulk_outcome(hook.bulk_request_status(request_id))
    return stage_outcome(hook.stage_status(request_id))


def wait_request(
    hook: DCacheHook, api: str, request_id: str, *, deadline: float, backoff: Backoff, log: Any = None
) -> dict[str, Any]:
    """Poll a bulk/stage request until it finishes (blocking); returns the trigger's status event."""
    while True:
        try:
            outcome = request_outcome(hook, api, request_id)
        except TRANSIENT as exc:
            if log is not None:
                log.warning("dCache unavailable, retrying: %s", exc)
            outcome = None
        if outcome is not None:
            return outcome
        if time.time() >= deadline:
            return event("timeout", f"request {request_id} still running", request_id=request_id, api=api)
        time.sleep(backoff.next(deadline))


def raise_unless_success(ev: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """``execute_complete``'s policy: anything but a success event fails the task with its message."""
    if not isinstance(ev, dict) or "status" not in ev:
        raise AirflowException(f"{what}: no status event from the trigger ({ev!r})")
    if ev["status"] != "success":
        raise AirflowException(f"{what} {ev['status']}: {ev.get('message', '')}")
    return ev
