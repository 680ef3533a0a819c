"""The pool's HTTP mover endpoint: where the door redirects reads (302) and writes (307) to.

URLs have dCache's shape: ``/<namespace path>?dcache-http-uuid=<uuid>&dcache-http-ref=<door>``.
No credentials are accepted or needed here; the UUID is the authorisation.
"""

from __future__ import annotations

from aiohttp import web

from airflow_dcache.server.http import digests
from airflow_dcache.server.http.paths import parse_raw_path
from airflow_dcache.server.http.streaming import READ_CHUNK, DownloadResponse, content_type, request_body
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.services.movers import Mover, MoverRegistry
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.transfers import TransferService
from airflow_dcache.server.storage.namespace_db import now_ms


class PoolMover:
    def __init__(self, movers: MoverRegistry, namespace: NamespaceService, transfers: TransferService) -> None:
        self.movers = movers
        self.ns = namespace
        self.transfers = transfers

    def install(self, app: web.Application) -> None:
        app.router.add_route("GET", r"/{tail:[\s\S]*}", self.read)
        app.router.add_route("PUT", r"/{tail:[\s\S]*}", self.write)

    def _claim(self, request: web.Request, kind: str) -> Mover:
        mover_id = request.query.get("dcache-http-uuid")
        if not mover_id:
            raise BadRequest("Missing dcache-http-uuid")
        ns_path, _ = parse_raw_path(request.rel_url.raw_path)
        return self.movers.claim(mover_id, kind, ns_path)

    async def read(self, request: web.Request) -> web.StreamResponse:
        mover = self._claim(request, "read")
        entry = self.ns.open_for_read(mover.login, mover.path)
        headers = {"Content-Type": content_type(entry.inode.name),
                   **digests.response_headers(request.headers, entry.inode)}
        started = now_ms()

        def sent(count: int) -> None:
            self.transfers.download_finished(mover.login, entry, count, started, request.remote or "")

        return DownloadResponse(self.ns.pool.data_path(entry.inode.id), sent, chunk_size=READ_CHUNK, headers=headers)

    async def write(self, request: web.Request) -> web.Response:
        mover = self._claim(request, "write")
        result = await self.transfers.upload(
            mover.login, mover.path, request_body(request), client=request.remote or "",
            content_length=request.content_length, content_md5=request.headers.get("Content-MD5"),
            algorithms=digests.upload_algorithms(request.headers), xattrs=mover.xattrs,
        )
        headers = digests.response_headers(request.headers, result.entry.inode, default="adler32")
        return web.Response(status=201 if result.created else 204, headers=headers)
