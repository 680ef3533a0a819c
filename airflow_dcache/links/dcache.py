"""Extra links: the task pushes a URL while it runs (``persist``); the UI button reads it back.

The URLs point at the connection's own frontend (the REST namespace or request resource), never at a
host taken from a server reply, and never carry a credential.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def namespace_url(api_url: str, path: str) -> str:
    """``{frontend}/api/v1/namespace/{path}``: the file's metadata on the frontend."""
    return f"{api_url.rstrip('/')}/namespace{quote(path)}"


def request_url(api_url: str, api: str, request_id: str) -> str:
    """The bulk (``/bulk-requests/{id}``) or tape (``/tape/stage/{id}``) request resource."""
    kind = "bulk-requests" if api == "bulk" else "tape/stage"
    return f"{api_url.rstrip('/')}/{kind}/{quote(request_id, safe='')}"


class _XComLink(BaseOperatorLink):
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:  # the button's value is stored under our own key, not the default
        return f"_link_{self.key}"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The URL this task stored; Airflow 3 asks once, on the worker, as the task finishes.

        A link set in this process is answered from the operator, and a task that never set it (a
        delete has no file to open) answers empty without a lookup: reading a missing XCom logs an
        error in the task log. Only a task resumed after deferral reads the value its first process stored.
        """
        remembered = getattr(operator, "_dcache_links", {})
        if self.key in remembered:
            return remembered[self.key]
        if not getattr(operator, "_dcache_resumed", False):
            return ""
        value = XCom.get_value(ti_key=ti_key, key=self.key)
        return str(value) if value else ""

    @classmethod
    def persist(cls, context: Any, url: str) -> None:
        context["ti"].xcom_push(key=cls.key, value=url)  # for this task's own resumption after a deferral
        task = context.get("task")
        if task is not None:
            task.__dict__.setdefault("_dcache_links", {})[cls.key] = url


class DCacheFileLink(_XComLink):
    """"dCache file": the frontend namespace URL of the (first) path the task worked on."""

    name = "dCache file"
    key = "dcache_file_url"


class DCacheViewLink(_XComLink):
    """"dCache view": the same file in the provider's dCache view of the Airflow UI (details, lineage)."""

    name = "dCache view"
    key = "dcache_view_url"


def persist_file_links(context: Any, conn_id: str, api_url: str, path: str) -> None:
    """Push both file links of a task: the frontend resource and the file in the dCache view.

    :param context: the task context.
    :param conn_id: the dCache connection the path belongs to (the view opens it).
    :param api_url: the connection's frontend API URL.
    :param path: the dCache path the task worked on.
    """
    DCacheFileLink.persist(context, namespace_url(api_url, path))
    try:
        from airflow_dcache.plugins.urls import view_url

        url = view_url(conn_id, path)
    except Exception:  # a link must never fail the task; the button is then simply empty
        return
    DCacheViewLink.persist(context, url)


class DCacheRequestLink(_XComLink):
    """"dCache request": the bulk or stage request the task submitted."""

    name = "dCache request"
    key = "dcache_request_url"
