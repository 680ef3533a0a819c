"""The dCache view's FastAPI app, mounted by the API server under ``/dcache``.

``/dcache/ui/`` is the page (HTML + a little vanilla JS, embedded in the Airflow UI as an external
view); ``/dcache/api/...`` are its JSON endpoints and the live-events stream. Every route depends on
Airflow's authentication (:mod:`.security`); dCache is reached only through the provider's hooks with
the chosen connection, and DAG runs / assets only through Airflow's REST API as the caller.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.paths import InvalidPath, OutsideAllowedRoots, require_within
from airflow_dcache.plugins import access, lineage, live, runs, storage, watchers
from airflow_dcache.plugins.airflow_api import AirflowClient
from airflow_dcache.plugins.security import (
    Caller,
    ViewerDep,
    authenticate,
    bearer,
    login_url,
    may_trigger,
    require_viewer,
)
from airflow_dcache.plugins.validation import (
    InvalidInput,
    clean_conn_id,
    clean_dag_id,
    clean_event_kind,
    clean_page,
    clean_run_id,
    echo,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_TRIGGER_FILES = 1000
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'self'",
}


def conn_ids() -> list[str]:
    return [c["conn_id"] for c in storage.offered_connections()]


def site_of(conn_id: str) -> str:
    return next((c["site"] for c in storage.offered_connections() if c["conn_id"] == conn_id), "")


async def access_for(caller: Caller, conn: str | None) -> access.Access:
    """The caller's :class:`~.access.Access` on the offered connection ``conn`` (400 if not offered)."""
    conn_id = clean_conn_id(conn, conn_ids())

    async def load_watched(site: str) -> tuple[str, ...]:
        async with AirflowClient(caller.token) as api:  # only watchers on assets this user can see
            assets = await api.dcache_assets()
        return access.watched_roots(watchers.load_watchers(assets), site)

    return await access.resolve(caller.name, conn_id, site_of(conn_id), load_watched)


def _bounded(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


class TriggerBody(BaseModel):
    """``POST /api/trigger``: a run of ``dag_id`` on ``paths`` with the DAG's other params."""

    dag_id: str
    paths: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    conn: str | None = None
    note: str | None = Field(default=None, max_length=1000)


class RerunBody(BaseModel):
    """``POST /api/rerun``: a run of ``dag_id`` over the files that failed in its run ``run_id``."""

    dag_id: str
    run_id: str


#: The param a DAG takes when it can re-run only the failed files of one of its runs (the chunked design).
RERUN_PARAM = "only_failed_of"


def create_app() -> FastAPI:
    app = FastAPI(title="dCache view", description="Browse dCache, watch events, run functions.",
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": _bounded(exc.message), "field": exc.field}, status_code=400)

    @app.exception_handler(InvalidPath)
    async def _invalid_path(_: Request, exc: InvalidPath) -> JSONResponse:
        return JSONResponse({"detail": _bounded(exc.message), "field": exc.field}, status_code=400)

    @app.exception_handler(OutsideAllowedRoots)
    async def _outside(_: Request, exc: OutsideAllowedRoots) -> JSONResponse:
        if exc.roots:
            detail = (f"{echo(exc.path, 200)} is outside what this view may show you "
                      f"({', '.join(exc.roots)})")
        else:
            detail = ("nothing is browsable for you on this connection: no dCache identity of your own is "
                      "mapped, and no storage-event watcher, [dcache] ui_path_prefixes or ui_extra_roots "
                      "names an allowed root")
        return JSONResponse({"detail": detail, "field": exc.field, "roots": list(exc.roots)}, status_code=403)

    @app.exception_handler(access.ViewConfigError)
    async def _config(_: Request, exc: access.ViewConfigError) -> JSONResponse:
        log.error("dCache view misconfigured: %s", exc)
        return JSONResponse({"detail": f"the dCache view is misconfigured: {exc}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": first.get("msg", "invalid request"), "field": field}, status_code=400)

    @app.exception_handler(DCacheError)
    async def _dcache(_: Request, exc: DCacheError) -> JSONResponse:
        return JSONResponse({"detail": f"dCache: {getattr(exc, 'message', None) or type(exc).__name__}"},
                            status_code=storage.error_status(exc))

    # ------------------------------------------------------------------ page

    @app.get("/ui/", include_in_schema=False)
    async def page(request: Request) -> Response:
        try:
            await require_viewer(await authenticate(request, await bearer(request)))
        except HTTPException as exc:
            if exc.status_code == 401:
                return RedirectResponse(login_url(str(request.url.path)), status_code=302)
            raise
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    @app.get("/ui", include_in_schema=False)
    async def page_slash(request: Request) -> Response:
        return RedirectResponse(str(request.url.path) + "/", status_code=307)

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str, _: ViewerDep) -> Response:
        allowed = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
        if name not in allowed:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=allowed[name], headers={"Cache-Control": "no-cache"})

    @app.get("/icon.svg", include_in_schema=False)
    async def icon() -> Response:  # the navigation icon is fetched before any page: no data in it
        return FileResponse(STATIC / "icon.svg", media_type="image/svg+xml")

    # ------------------------------------------------------------------ dCache

    @app.get("/api/connections")
    async def connections(caller: ViewerDep) -> dict[str, Any]:
        """The offered connections, each with the identity the view uses there and the allowed roots."""
        views = [(await access_for(caller, c["conn_id"])).view() for c in storage.offered_connections()]
        return {"connections": [{"conn_id": c["conn_id"], "site": c["site"]} for c in views],
                "access": {c["conn_id"]: {"identity": c["identity"], "roots": c["roots"]} for c in views},
                "user": caller.name}

    @app.get("/api/browse")
    async def browse(caller: ViewerDep, conn: str, path: str = "/", offset: int | None = Query(None),
                     limit: int | None = Query(None)) -> dict[str, Any]:
        acc = await access_for(caller, conn)
        clean = acc.path(path)
        off, lim = clean_page(offset, limit)
        return {"conn": acc.conn_id, **await storage.browse(acc, clean, off, lim)}

    @app.get("/api/file")
    async def file_details(caller: ViewerDep, conn: str, path: str) -> dict[str, Any]:
        acc = await access_for(caller, conn)
        clean = acc.path(path)
        info = await storage.details(acc, clean)
        async with AirflowClient(caller.token) as api:
            events = await _lineage_events(api)
        runs = lineage.merge_runs(lineage.runs_from_lineage(events, acc.site, clean), info["markers"])
        return {"conn": acc.conn_id, "site": acc.site, **info, "runs": runs}

    @app.get("/api/events")
    async def events(caller: ViewerDep, conn: str, path: str) -> Response:
        acc = await access_for(caller, conn)
        clean = acc.path(path)
        try:
            stream = await live.LiveStream.open(acc.conn_id, clean, acc.hook, caller.name)
        except live.TooManyStreams as exc:
            return JSONResponse({"detail": str(exc)}, status_code=429,
                                headers={"Retry-After": str(exc.retry_after)})
        return StreamingResponse(stream.events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/events/status")
    async def event_status(caller: ViewerDep, conn: str, path: str, kind: str,
                           is_dir: bool = False) -> dict[str, Any]:
        from airflow_dcache.exceptions import NotFound

        acc = await access_for(caller, conn)
        clean = acc.path(path)
        clean_event_kind(kind)
        exists, size, found_markers = False, None, []
        if not is_dir:
            try:
                async with acc.hook() as h:
                    entry = await h.stat(clean, xattr=True)
                exists, size = True, entry.size
                found_markers = storage.markers(entry.xattrs or {})
            except NotFound:
                pass
        async with AirflowClient(caller.token) as api:
            assets = await api.dcache_assets()
        result = watchers.classify(site=acc.site, path=clean, kind=kind, is_dir=is_dir, size=size,
                                   exists=exists, markers=found_markers, watchers=watchers.load_watchers(assets))
        return {"path": clean, **result}

    # ------------------------------------------------------------------ Airflow (as the caller)

    @app.get("/api/dags")
    async def function_dags(caller: ViewerDep) -> dict[str, Any]:
        """DAGs that take a ``paths`` param (the ones a file selection can be handed to), with their params."""
        async with AirflowClient(caller.token) as api:
            result = []
            for dag in await api.dags():
                try:
                    details = await api.dag_details(dag["dag_id"])
                except HTTPException:
                    continue
                params = details.get("params") or {}
                if "paths" in params:
                    result.append({"dag_id": dag["dag_id"], "description": dag.get("description"),
                                   "is_paused": dag.get("is_paused"), "params": params,
                                   "may_trigger": may_trigger(caller, dag["dag_id"])})
        return {"dags": result}

    @app.post("/api/trigger")
    async def trigger(caller: ViewerDep, body: TriggerBody, request: Request) -> dict[str, Any]:
        _same_origin(request)
        dag_id = clean_dag_id(body.dag_id)
        if not body.paths:
            raise InvalidInput("paths", "select at least one file")
        if len(body.paths) > MAX_TRIGGER_FILES:
            raise InvalidInput("paths", f"at most {MAX_TRIGGER_FILES} files per run")
        if body.conn is not None:  # the files must be ones this user may see on that connection
            acc = await access_for(caller, body.conn)
            paths = [acc.path(p, field=f"paths[{i}]") for i, p in enumerate(body.paths)]
        else:
            prefixes = access.configured_prefixes()
            paths = [require_within(p, prefixes, field=f"paths[{i}]") for i, p in enumerate(body.paths)]
        if "paths" in body.params:
            raise InvalidInput("params.paths", "give the files in 'paths', not in params")
        if not may_trigger(caller, dag_id):
            raise HTTPException(403, f"you may not trigger {dag_id}")
        note = body.note or f"dCache view: {len(paths)} file(s) selected by {caller.name}"
        async with AirflowClient(caller.token) as api:  # Airflow decides again, as the user
            run = await api.trigger(dag_id, {**body.params, "paths": paths}, note=note)
        run_id = str(run["dag_run_id"])
        return {"dag_id": dag_id, "run_id": run_id, "state": run.get("state"),
                "url": f"../../dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"}

    @app.get("/api/runs")
    async def recent_runs(caller: ViewerDep, dag_id: str, limit: int = 20) -> dict[str, Any]:
        """The DAG's recent runs (for the *Runs* tab's list), as the caller may see them."""
        dag_id = clean_dag_id(dag_id)
        _, limit = clean_page(0, limit)
        async with AirflowClient(caller.token) as api:
            found = await api.dag_runs(dag_id, limit=limit)
        return {"dag_id": dag_id, "may_trigger": may_trigger(caller, dag_id), "runs": [
            {k: r.get(k) for k in ("dag_run_id", "state", "run_type", "start_date", "end_date",
                                   "triggering_user_name")} for r in found]}

    @app.get("/api/run")
    async def run_files(caller: ViewerDep, dag_id: str, run_id: str) -> dict[str, Any]:
        """A chunked run file by file: each file's chunk, stage, outcome, reason and stage timings."""
        dag_id, run_id = clean_dag_id(dag_id), clean_run_id(run_id)
        async with AirflowClient(caller.token) as api:
            run = await api.dag_run(dag_id, run_id)
            outcomes = await api.xcom(dag_id, run_id, "report", key="outcomes")
            if isinstance(outcomes, dict):
                rows, source = runs.rows_from_report(outcomes), "report"
            else:
                units = await api.xcom(dag_id, run_id, "chunk")
                rows = runs.rows_in_flight(units, await api.task_instances(dag_id, run_id)) if units else []
                source = "task instances" if units else "not chunked yet"
        failed = sum(1 for r in rows if r["outcome"] == "failed")
        return {"dag_id": dag_id, "run_id": run_id, "state": run.get("state"), "source": source,
                "files": rows, "counts": runs.counts(rows), "failed": failed,
                "may_rerun": bool(failed) and source == "report" and may_trigger(caller, dag_id),
                "url": f"../../dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"}

    @app.post("/api/rerun")
    async def rerun_failed(caller: ViewerDep, body: RerunBody, request: Request) -> dict[str, Any]:
        """Re-run only the files that failed in a run: a new run with ``only_failed_of``, triggered as the caller."""
        _same_origin(request)
        dag_id, run_id = clean_dag_id(body.dag_id), clean_run_id(body.run_id)
        if not may_trigger(caller, dag_id):
            raise HTTPException(403, f"you may not trigger {dag_id}")
        async with AirflowClient(caller.token) as api:  # Airflow decides again, as the user
            params = (await api.dag_details(dag_id)).get("params") or {}
            if RERUN_PARAM not in params:
                raise InvalidInput("dag_id", f"{dag_id} cannot re-run only the failed files of a run "
                                             f"(it has no {RERUN_PARAM!r} param: not the chunked design)")
            failed = await api.xcom(dag_id, run_id, "report", key="failed")
            if not failed:
                raise InvalidInput("run_id", f"run {echo(run_id)} of {dag_id} has no failed files to re-run "
                                             "(no report yet, or every file succeeded)")
            new = await api.trigger(dag_id, {RERUN_PARAM: run_id},
                                    note=f"dCache view: re-run of the {len(failed)} failed file(s) of {run_id} "
                                         f"by {caller.name}")
        new_id = str(new["dag_run_id"])
        return {"dag_id": dag_id, "run_id": new_id, "state": new.get("state"), "files": len(failed),
                "url": f"../../dags/{quote(dag_id, safe='')}/runs/{quote(new_id, safe='')}"}

    @app.get("/api/lag")
    async def lag(caller: ViewerDep) -> dict[str, Any]:
        async with AirflowClient(caller.token) as api:
            rows = []
            assets = await api.dcache_assets()
            for asset in assets:
                if not asset.get("watchers"):
                    continue
                events = await api.asset_events(int(asset["id"]), limit=50)
                last_runs: dict[str, Any] = {}
                for ref in asset.get("scheduled_dags") or []:
                    runs = await api.dag_runs(ref["dag_id"], limit=1)
                    last_runs[ref["dag_id"]] = runs[0] if runs else None
                rows.append(lineage.lag_summary(asset, events, last_runs))
        try:
            watched = watchers.watcher_views(watchers.load_watchers(assets))
        except Exception:  # the lag table does not depend on the trigger rows
            watched = []
        return {"assets": rows, "watchers": watched}

    return app


def _same_origin(request: Request) -> None:
    """State-changing calls ride on the UI's cookie: refuse a cross-site form or script (CSRF)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(403, "cross-origin request refused")
    if "application/json" not in request.headers.get("content-type", ""):
        raise HTTPException(415, "send JSON")


async def _lineage_events(api: AirflowClient) -> list[dict[str, Any]]:
    """Recent asset events of dCache assets that pipelines write to (those with producing tasks)."""
    events: list[dict[str, Any]] = []
    for asset in await api.dcache_assets():
        if asset.get("producing_tasks"):
            events.extend(await api.asset_events(int(asset["id"]), limit=500))
    return events


app = create_app()
