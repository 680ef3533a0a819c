"""``/api/v1/bulk-requests``: submit, inspect, cancel and clear bulk requests, in dCache's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.frontend import API, Frontend, json_response, parse_nonnegative, read_json_object
from airflow_dcache.server.services.bulk import BulkService
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.storage.bulk_db import ArchiveFilter, BulkRequestRow, BulkTargetRow

PAGE = 10_000
ARCHIVE_TIME_FORMAT = "%Y/%m/%d-%H:%M:%S"  # dCache's yyyy/MM/dd-HH:mm:ss, in the server's time zone
MAX_ARCHIVE_LIMIT = 100_000
_STATUSES = ("INCOMPLETE", "QUEUED", "STARTED", "COMPLETED", "CANCELLING", "CANCELLED")


def target_json(t: BulkTargetRow) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": t.tid, "target": t.path, "state": t.state, "submittedAt": t.submitted_at}
    if t.started_at is not None:
        doc["startedAt"] = t.started_at
    if t.finished_at is not None:
        doc["finishedAt"] = t.finished_at
    if t.error_type:
        doc["errorType"] = t.error_type
    if t.error_message:
        doc["errorMessage"] = t.error_message
    return doc


class BulkRequests:
    def __init__(self, frontend: Frontend, bulk: BulkService) -> None:
        self.frontend = frontend
        self.bulk = bulk

    def install(self, app: web.Application) -> None:
        base = API + "/bulk-requests"
        app.router.add_post(base, self.submit)
        app.router.add_get(base, self.list)
        app.router.add_get(base + "/archived", self.archived_list)  # before /{id}, which would match it
        app.router.add_get(base + "/archived/{id}", self.archived_info)
        app.router.add_get(base + "/{id}", self.info)
        app.router.add_patch(base + "/{id}", self.patch)
        app.router.add_delete(base + "/{id}", self.clear)

    def url(self, request: web.Request, rid: str) -> str:
        return f"{request.scheme}://{request.host}{API}/bulk-requests/{rid}"

    async def submit(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        rid = self.bulk.submit(login, await read_json_object(request))
        return web.Response(status=201, headers={"request-url": self.url(request, rid)})

    async def list(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        statuses = None
        if request.query.get("status"):
            statuses = [s.strip().upper() for s in request.query["status"].split(",")]
            bad = [s for s in statuses if s not in _STATUSES]
            if bad:
                raise BadRequest(f"Unknown status value(s): {', '.join(bad)}")
        rows = self.bulk.db.requests(owner_uid=None if login.superuser else login.uid, statuses=statuses)
        path = request.query.get("path")
        docs = []
        for row in rows:
            if path and not any(t.path.startswith(path) for t in self.bulk.db.targets(row.id)):
                continue
            docs.append(self._summary(request, row))
        return json_response(docs)

    def _summary(self, request: web.Request, row: BulkRequestRow) -> dict[str, Any]:
        return {"id": row.id, "url": self.url(request, row.id), "owner": f"{row.owner_uid}:{row.owner_gid}",
                "activity": row.activity, "status": row.status.lower(), "arrivedAt": row.arrived_at,
                "lastModified": row.last_modified}

    async def info(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        row = self.bulk.owned(login, request.match_info["id"])
        offset = parse_nonnegative(request, "offset") or 0
        targets = self.bulk.db.targets(row.id, offset, PAGE + 1)
        next_id = targets[PAGE].tid if len(targets) > PAGE else -1
        doc: dict[str, Any] = {"uid": row.id, "status": row.status, "arrivedAt": row.arrived_at,
                               "lastModified": row.last_modified, "targetPrefix": row.target_prefix or "/",
                               "nextId": next_id, "targets": [target_json(t) for t in targets[:PAGE]]}
        if row.started_at is not None:
            doc["startedAt"] = row.started_at
        return json_response(doc)

    async def archived_list(self, request: web.Request) -> web.Response:
        """Summaries of archived requests. As in dCache, this list is not limited to the caller's own."""
        self.frontend.login(request)
        flt = ArchiveFilter(
            owners=_csv(request, "owner"), activities=_csv(request, "activity", upper=True),
            statuses=_csv(request, "status", upper=True, allowed=("COMPLETED", "CANCELLED")),
            before=_archive_time(request, "before"), after=_archive_time(request, "after"),
            limit=_limit(request))
        return json_response(self.bulk.db.archived_list(flt))

    async def archived_info(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        a = self.bulk.archived(login, request.match_info["id"])
        doc: dict[str, Any] = {
            "initialTargets": a.initial_targets, "errors": a.errors, "uid": a.uid, "owner": a.owner,
            "activity": a.activity, "depth": a.depth, "arrivedAt": a.arrived_at, "startedAt": a.started_at,
            "lastModified": a.last_modified, "status": a.status, "targetPrefix": a.target_prefix,
            "succeeded": a.succeeded, "cancelled": a.cancelled, "failed": a.failed}
        return json_response({k: v for k, v in doc.items() if v is not None})

    async def patch(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        row = self.bulk.owned(login, request.match_info["id"])
        doc = await read_json_object(request)
        if doc.get("action") != "cancel":
            raise BadRequest(f"Unsupported action {str(doc.get('action'))[:40]}: only 'cancel' is supported")
        paths = doc.get("paths")
        if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
            raise BadRequest("paths must be a list of strings")
        self.bulk.cancel(row.id, paths)
        return web.Response(status=200)

    async def clear(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        flag = request.query.get("cancelIfRunning", "false").lower()
        if flag not in ("true", "false"):
            raise BadRequest("cancelIfRunning must be true or false")
        self.bulk.clear(login, request.match_info["id"], flag == "true")
        return web.Response(status=204)


def _csv(request: web.Request, name: str, *, upper: bool = False,
         allowed: tuple[str, ...] | None = None) -> frozenset[str] | None:
    raw = request.query.get(name)
    if raw is None or not raw.strip():
        return None
    values = {v.strip().upper() if upper else v.strip() for v in raw.split(",") if v.strip()}
    if allowed is not None and (bad := sorted(values - set(allowed))):
        raise BadRequest(f"Query parameter {name}: {', '.join(b[:20] for b in bad)} is not one of "
                         f"{', '.join(a.lower() for a in allowed)}")
    return frozenset(values)


def _archive_time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(datetime.strptime(raw, ARCHIVE_TIME_FORMAT).timestamp() * 1000)
    except ValueError:
        raise BadRequest(f"Query parameter {name} must be a date as yyyy/MM/dd-HH:mm:ss, got {raw[:40]!r}") from None


def _limit(request: web.Request) -> int:
    limit = parse_nonnegative(request, "limit")
    if limit is None:
        return 5000  # dCache's default
    if not 1 <= limit <= MAX_ARCHIVE_LIMIT:
        raise BadRequest(f"Query parameter limit must be an integer from 1 to {MAX_ARCHIVE_LIMIT}, got {limit}")
    return limit
