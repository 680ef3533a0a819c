"""Airflow's REST API v2, called by the plugin backend *as the logged-in user*.

The view never reads or writes DAG runs or assets through the metadata database behind Airflow's
back: it forwards the caller's own JWT to ``/api/v2``, so the auth manager decides what the user may
see and whether they may trigger a DAG, exactly as in the UI. The API base is
``[dcache] ui_airflow_api_url``, else ``[api] base_url``, else the local API server port; never a
host taken from the request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from fastapi import HTTPException

TIMEOUT = 30.0


def api_base() -> str:
    from airflow.configuration import conf

    explicit = conf.get("dcache", "ui_airflow_api_url", fallback="") or ""
    if explicit.strip():
        return explicit.strip().rstrip("/")
    base = (conf.get("api", "base_url", fallback="") or "").strip()
    if base.startswith(("http://", "https://")):
        return base.rstrip("/") + "/api/v2"
    port = conf.get("api", "port", fallback="8080")
    return f"http://127.0.0.1:{port}/api/v2"


class AirflowClient:
    """A short-lived client for one request of one user.

    :param token: the caller's JWT (sent as ``Authorization: Bearer``; never logged).
    :param base: the ``/api/v2`` URL (default :func:`api_base`).
    """

    def __init__(self, token: str, base: str | None = None) -> None:
        self._client = httpx.AsyncClient(base_url=base or api_base(), timeout=TIMEOUT,
                                         headers={"Authorization": f"Bearer {token}"})

    async def __aenter__(self) -> AirflowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of ``/api/v2{path}``; Airflow's 401/403/404/409/422 are passed on with its detail."""
        try:
            r = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HTTPException(502, f"Airflow API unreachable: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text[:300]
            code = r.status_code if r.status_code in (400, 401, 403, 404, 409, 422) else 502
            raise HTTPException(code, detail)
        return r.json() if r.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    async def paged(self, path: str, key: str, *, want: int, page: int = 100, **params: Any) -> list[dict[str, Any]]:
        """Up to ``want`` items of a collection, page by page: Airflow silently caps ``limit`` at
        ``[api] maximum_page_limit`` (100 by default), so one big ``limit`` would cut the list short."""
        items: list[dict[str, Any]] = []
        offset = 0
        while len(items) < want:
            doc = await self.get(path, limit=min(page, want - len(items)), offset=offset, **params)
            batch = list(doc.get(key) or [])
            items.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(doc.get("total_entries", offset)):
                break
        return items[:want]

    async def dag_details(self, dag_id: str) -> dict[str, Any]:
        return dict(await self.get(f"/dags/{dag_id}/details"))

    async def dags(self, tags: list[str] | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"exclude_stale": True}
        if tags:
            params["tags"] = tags
        return await self.paged("/dags", "dags", want=1000, **params)

    async def trigger(self, dag_id: str, conf: dict[str, Any], note: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        return dict(await self.request("POST", f"/dags/{dag_id}/dagRuns", json=body))

    async def dcache_assets(self) -> list[dict[str, Any]]:
        return [a for a in await self.paged("/assets", "assets", want=1000, uri_pattern="dcache://")
                if str(a.get("uri", "")).startswith("dcache://")]

    async def asset_events(self, asset_id: int, limit: int = 100) -> list[dict[str, Any]]:
        return await self.paged("/assets/events", "asset_events", want=limit, asset_id=asset_id,
                                order_by="-timestamp")

    async def dag_runs(self, dag_id: str, limit: int = 10) -> list[dict[str, Any]]:
        return list((await self.get(f"/dags/{dag_id}/dagRuns", limit=limit, order_by="-run_after"))["dag_runs"])

    async def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(await self.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    async def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return await self.paged(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", "task_instances",
                                want=10000)

    async def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
                   map_index: int = -1) -> Any:
        """An XCom's value, or ``None`` when it is not there (yet): a 404 is an answer here, not an error."""
        try:
            doc = await self.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
                                 f"/xcomEntries/{key}", map_index=map_index, deserialize=True)
        except HTTPException as exc:
            if exc.status_code == 404:
                return None
            raise
        return doc.get("value")
