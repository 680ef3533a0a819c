"""The WLCG Tape REST API (``/api/v1/tape``) and its discovery document, on top of the bulk service.

dCache serves ``/.well-known/wlcg-tape-rest-api`` from a file (``dcache.wellknown!wlcg-tape-rest-api.path``),
so a site may point clients anywhere, even another host. Here the document is generated for wherever
the API is mounted (``--tape-api-path``), read from a file as dCache does, or absent (404), so clients
can be shown to follow the document rather than assume ``/api/v1/tape``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.auth import ACCESS_LOG
from airflow_dcache.server.http.errors import error_response
from airflow_dcache.server.http.frontend import API, Frontend, json_response, read_json_object
from airflow_dcache.server.services.bulk import BulkService
from airflow_dcache.server.services.errors import BadRequest, NotFound, ServiceError
from airflow_dcache.server.services.login import Login

_FILE_STATE = {"CREATED": "SUBMITTED", "READY": "SUBMITTED", "RUNNING": "STARTED", "CANCELLED": "CANCELLED",
               "FAILED": "FAILED", "SKIPPED": "FAILED", "COMPLETED": "COMPLETED"}
_LOCALITY = {"ONLINE": "DISK", "NEARLINE": "TAPE", "ONLINE_AND_NEARLINE": "DISK_AND_TAPE", "NONE": "NONE",
             "LOST": "LOST", "UNAVAILABLE": "UNAVAILABLE"}
MAX_ARCHIVEINFO_PATHS = 1000


def _header_text(text: str) -> str:
    """A client's path fit for a header value: a newline in it made the response unsendable."""
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def _paths(doc: dict[str, Any], key: str = "paths") -> list[str]:
    paths = doc.get(key)
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise BadRequest(f"'{key}' must be a non-empty list of paths")
    return paths


class TapeRest:
    def __init__(self, frontend: Frontend, bulk: BulkService, site: str, *, base: str = API + "/tape",
                 discovery: str | None = None) -> None:
        self.frontend = frontend
        self.bulk = bulk
        self.site = site
        self.base = base.rstrip("/")  # where the API is mounted
        self.discovery_source = discovery  # None: generated; "none": no document; else a JSON file

    def install(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/wlcg-tape-rest-api", self.discovery)
        base = self.base
        app.router.add_post(base + "/stage", self.stage)
        app.router.add_get(base + "/stage/{id}", self.stage_status)
        app.router.add_post(base + "/stage/{id}/cancel", self.stage_cancel)
        app.router.add_delete(base + "/stage/{id}", self.stage_delete)
        app.router.add_post(base + "/release/{id}", self.release)
        app.router.add_post(base + "/archiveinfo", self.archiveinfo)

    async def discovery(self, request: web.Request) -> web.Response:
        if ACCESS_LOG.isEnabledFor(logging.INFO):  # anonymous by design, so the login never logs it
            ACCESS_LOG.info(json.dumps({"method": request.method, "path": request.path, "user": None}))
        if self.discovery_source == "none":
            raise NotFound("no WLCG Tape REST API discovery document is configured")
        if self.discovery_source is not None:  # served as is, like dCache's configured file
            try:
                text = Path(self.discovery_source).read_text(encoding="utf-8")
            except OSError:
                raise NotFound("the WLCG Tape REST API discovery document cannot be read") from None
            return web.Response(text=text, content_type="application/json")
        return json_response({
            "sitename": self.site, "description": f"airflow-dcache emulated tape at site {self.site}",
            "endpoints": [{"uri": f"{request.scheme}://{request.host}{self.base}", "version": "v1",
                           "metadata": {}}],
        })

    async def stage(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        doc = await read_json_object(request)
        if set(doc) - {"files"}:
            raise BadRequest(f"unsupported keys: {sorted(set(doc) - {'files'})}; only 'files' is allowed")
        files = doc.get("files")
        if not isinstance(files, list) or not files:
            raise BadRequest("'files' must be a non-empty list")
        lifetimes = {}
        paths = []
        for i, item in enumerate(files):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
                raise BadRequest(f"files[{i}].path must be a non-empty string")
            paths.append(item["path"])
            if "diskLifetime" in item:
                if not isinstance(item["diskLifetime"], str):
                    raise BadRequest(f"files[{i}].diskLifetime must be an ISO-8601 duration string")
                lifetimes[item["path"]] = item["diskLifetime"]
        args = {"diskLifetime": json.dumps(lifetimes)} if lifetimes else {}
        rid = self.bulk.submit(login, {"activity": "STAGE", "target": paths, "arguments": args}, kind="stage")
        url = f"{request.scheme}://{request.host}{self.base}/stage/{rid}"
        return web.Response(status=201, text=json.dumps({"requestId": rid}), content_type="application/json",
                            headers={"location": url})

    async def stage_status(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        row = self.bulk.owned(login, request.match_info["id"])
        files = []
        for t in self.bulk.db.targets(row.id):
            item: dict[str, Any] = {"path": t.path, "state": _FILE_STATE[t.state]}
            if t.started_at is not None:
                item["startedAt"] = t.started_at
            if t.finished_at is not None:
                item["finishedAt"] = t.finished_at
            if t.error_message:
                item["error"] = t.error_message
            files.append(item)
        doc: dict[str, Any] = {"id": row.id, "createdAt": row.arrived_at,
                               "startedAt": row.started_at or row.arrived_at, "files": files}
        if row.status in ("COMPLETED", "CANCELLED"):
            doc["completedAt"] = row.last_modified
        return json_response(doc)

    async def stage_cancel(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        row = self.bulk.owned(login, request.match_info["id"])
        paths = _paths(await read_json_object(request))
        known = {t.path for t in self.bulk.db.targets(row.id)}
        missing = [p for p in paths if p not in known]
        if missing:  # dCache answers this one with title/detail response headers; the JSON body is ours
            detail = f"The file {_header_text(missing[0][:200])} is not part of the stage request {row.id}"
            return error_response(400, detail, headers={"title": "File missing from stage request",
                                                        "detail": detail})
        self.bulk.cancel(row.id, paths)
        return web.Response(status=200)

    async def stage_delete(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        self.bulk.clear(login, request.match_info["id"], cancel_if_running=True)
        return web.Response(status=200)

    async def release(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        stage_id = request.match_info["id"]
        self.bulk.owned(login, stage_id)
        paths = _paths(await read_json_object(request))
        self.bulk.submit(login, {"activity": "RELEASE", "target": paths, "arguments": {"id": stage_id},
                                 "cancel_on_failure": True, "clear_on_success": True, "clear_on_failure": True},
                         kind="release")
        return web.Response(status=200)

    async def archiveinfo(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        paths = _paths(await read_json_object(request))[:MAX_ARCHIVEINFO_PATHS]  # dCache drops the excess
        return json_response([self._info(login, p) for p in paths])

    def _info(self, login: Login, path: str) -> dict[str, str]:
        try:
            entry = self.frontend.ns.stat(login, path)
        except ServiceError as err:
            return {"path": path, "error": err.message}
        node = entry.inode
        if node.is_dir:
            return {"path": path, "error": "Not a file"}
        locality = node.locality if (node.on_disk or node.on_tape) else "NONE"
        if locality == "NONE" and node.size == 0:
            locality = "ONLINE"  # dCache reports empty files as DISK to keep FTS happy
        return {"path": path, "locality": _LOCALITY[locality]}
