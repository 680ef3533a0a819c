"""The WebDAV door: dCache's HTTP/WebDAV wire behaviour over the namespace and transfer services."""

from __future__ import annotations

import html
import json
import os
from urllib.parse import quote

from aiohttp import HttpVersion11, web

from airflow_dcache.server.http import digests, locks
from airflow_dcache.server.http import propfind as pf
from airflow_dcache.server.http import proppatch as pp
from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.http.bodies import read_bounded
from airflow_dcache.server.http.local_copy import LocalCopy, is_local_destination
from airflow_dcache.server.http.paths import parse_raw_path, path_from_url
from airflow_dcache.server.http.streaming import READ_CHUNK, DownloadResponse, content_type, request_body
from airflow_dcache.server.http.third_party_copy import ThirdPartyCopyHandler
from airflow_dcache.server.services.billing.door import door_details
from airflow_dcache.server.services.errors import BadRequest, Conflict, NotAllowed, NotAuthenticated, NotFound
from airflow_dcache.server.services.login import Login, is_within
from airflow_dcache.server.services.macaroons import MacaroonService
from airflow_dcache.server.services.movers import Mover, RedirectPolicy
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.services.tape import TapeService
from airflow_dcache.server.services.transfers import TransferService
from airflow_dcache.server.storage.namespace_db import now_ms

MACAROON_REQUEST = "application/macaroon-request"
MAX_SMALL_BODY = 1 << 20  # PROPFIND, PROPPATCH and macaroon requests
METHODS = ("OPTIONS", "HEAD", "GET", "PUT", "DELETE", "MKCOL", "MOVE", "COPY", "PROPFIND", "PROPPATCH", "POST",
           "LOCK", "UNLOCK")


async def read_small_body(request: web.Request, what: str) -> bytes:
    """Read a bounded request body; larger ones are refused before they fill memory."""
    if request.content_length is not None and request.content_length > MAX_SMALL_BODY:
        raise BadRequest(f"{what} body larger than {MAX_SMALL_BODY} bytes")
    body = await read_bounded(request, MAX_SMALL_BODY)
    if len(body) > MAX_SMALL_BODY:
        raise BadRequest(f"{what} body larger than {MAX_SMALL_BODY} bytes")
    return body


class WebDavDoor:
    def __init__(self, auth: Authenticator, namespace: NamespaceService, transfers: TransferService,
                 macaroons: MacaroonService, tape: TapeService, *, tls: bool,
                 allow_insecure_macaroons: bool,
                 tpc: ThirdPartyCopyHandler | None = None, redirects: RedirectPolicy | None = None) -> None:
        self.auth = auth
        self.redirects = redirects
        self.tpc = tpc
        self.tape = tape
        self.ns = namespace
        self.transfers = transfers
        self.local_copy = LocalCopy(namespace, transfers)
        self.macaroons = macaroons
        self.tls = tls
        self.allow_insecure_macaroons = allow_insecure_macaroons
        self._handlers = {
            "OPTIONS": self.options, "HEAD": self.head, "GET": self.get, "PUT": self.put,
            "DELETE": self.delete, "MKCOL": self.mkcol, "MOVE": self.move, "COPY": self.copy,
            "PROPFIND": self.propfind, "PROPPATCH": self.proppatch, "POST": self.post,
            "LOCK": self.lock, "UNLOCK": self.unlock,
        }

    def install(self, app: web.Application) -> None:
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.dispatch, expect_handler=self.expect)

    async def expect(self, request: web.Request) -> None:
        """Answer ``Expect: 100-continue`` — except for a PUT we will redirect to a pool (307 instead)."""
        if request.method == "PUT" and self.redirects is not None and self.redirects.writes:
            return
        if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        handler = self._handlers.get(request.method)
        if handler is None:
            raise web.HTTPMethodNotAllowed(request.method, METHODS,
                                           reason=f"Method {request.method} is not supported")
        path, trailing = parse_raw_path(request.rel_url.raw_path)
        login = self.auth.authenticate(request)
        return await handler(request, login, path, trailing)

    # -- read side -----------------------------------------------------------------------------
    async def options(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        return web.Response(status=200, headers={"DAV": "1, 2", "Allow": ", ".join(METHODS),
                                                 "MS-Author-Via": "DAV"})

    async def head(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.StreamResponse:
        entry = self.ns.stat(login, path)
        response = web.StreamResponse(status=200, headers=self._metadata_headers(request, entry))
        response.content_length = 0 if entry.inode.is_dir else entry.inode.size
        return response

    def _metadata_headers(self, request: web.Request, entry: Entry, *, validators: bool = True) -> dict[str, str]:
        """HEAD's headers; a GET leaves ETag/Last-Modified to the file response (``validators``)."""
        node = entry.inode
        headers = {"ETag": self._etag(entry), "Last-Modified": pf.http_date(node.mtime)} if validators else {}
        if node.is_dir:
            headers["Content-Type"] = "text/html; charset=utf-8"
            return headers
        headers["Accept-Ranges"] = "bytes"
        headers["Content-Type"] = content_type(node.name)
        headers.update(digests.response_headers(request.headers, node))
        return headers

    def _etag(self, entry: Entry) -> str:
        """For files the same value aiohttp's sendfile path uses, so conditional GETs agree."""
        if entry.inode.is_dir:
            return pf.etag(entry)
        try:
            st = os.stat(self.ns.pool.data_path(entry.inode.id))
        except FileNotFoundError:
            return pf.etag(entry)
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'

    async def get(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.StreamResponse:
        entry = self.ns.stat(login, path)
        if entry.inode.is_dir:
            if not trailing and path != "/":
                location = quote(path) + "/" + (f"?{request.query_string}" if request.query_string else "")
                raise web.HTTPMovedPermanently(location)
            return self._listing(request, login, entry)
        entry = self.ns.authorise_read(login, entry)
        if not entry.inode.on_disk:  # NEARLINE: recall from tape first, as a pool would
            await self.tape.bring_online(login, entry)
            entry = self.ns.open_for_read(login, path)
        if self.redirects is not None and self.redirects.reads:
            mover = self.redirects.movers.create("read", login, path, entry.ns_path)
            raise web.HTTPFound(self._pool_url(request, mover))
        headers = self._metadata_headers(request, entry, validators=False)
        disposition = "inline" if request.query.get("action") == "show" else "attachment"
        headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(entry.inode.name)}"
        started = now_ms()

        def sent(count: int) -> None:
            self.transfers.download_finished(login, entry, count, started, request.remote or "",
                                             extra=door_details(request))

        replica = self.ns.pool.data_path(entry.inode.id)
        if not replica.exists():
            raise NotFound(f"Replica of {path} is not available")
        return DownloadResponse(replica, sent, chunk_size=READ_CHUNK, headers=headers)

    def _listing(self, request: web.Request, login: Login, entry: Entry) -> web.Response:
        authz = request.query.get("authz")
        suffix = f"?authz={quote(authz)}" if authz else ""
        rows = []
        for child in self.ns.list_dir(login, entry.path, notify=True):
            name = child.inode.name + ("/" if child.inode.is_dir else "")
            rows.append(f'<tr><td><a href="{html.escape(quote(name))}{html.escape(suffix)}">'
                        f"{html.escape(name)}</a></td><td>{'' if child.inode.is_dir else child.inode.size}"
                        f"</td><td>{pf.http_date(child.inode.mtime)}</td></tr>")
        title = html.escape(entry.path)
        body = (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
                f"<table><tr><th>Name</th><th>Size</th><th>Modified</th></tr>{''.join(rows)}</table>"
                "</body></html>")
        return web.Response(text=body, content_type="text/html")

    async def propfind(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        depth = request.headers.get("Depth", "infinity").strip().lower()
        if depth not in ("0", "1", "infinity"):
            raise BadRequest(f"Bad Depth header: {depth[:20]!r} (expected 0, 1 or infinity)")
        parsed = pf.parse_propfind(await read_small_body(request, "PROPFIND"))
        entry = self.ns.stat(login, path)
        entries = [entry]
        if depth != "0" and entry.inode.is_dir:
            # dCache answers Depth: infinity as Depth: 1 rather than walking the whole tree.
            entries += self.ns.list_dir(login, path, notify=True)
        body = pf.render_multistatus(
            entries, parsed, href_for=lambda e: pf.href(e.path, e.inode.is_dir),
            xattrs_for=self.ns.xattrs, content_type=content_type,
        )
        return web.Response(status=207, body=body, content_type="application/xml", charset="utf-8")

    async def proppatch(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        """Set/remove xattrs as properties; anything else is refused and then nothing changes."""
        self._require_login(login)
        changes = pp.parse_proppatch(await read_small_body(request, "PROPPATCH"))
        entry = self.ns.stat(login, path)
        refused = [c for c in changes if not c.writable]
        if refused:
            status = {c: "HTTP/1.1 403 Forbidden" if not c.writable else "HTTP/1.1 424 Failed Dependency"
                      for c in changes}
        else:
            self.ns.authorise_attr_write(login, path)  # refuse before changing anything
            to_set = {c.name: c.value for c in changes if c.value is not None}
            present = self.ns.xattrs(entry)
            # removing a property that is not there succeeds in WebDAV
            to_remove = [c.name for c in changes if c.value is None and c.name in present]
            if to_set:
                self.ns.set_xattrs(login, path, to_set)
            if to_remove:
                self.ns.remove_xattrs(login, path, to_remove)
            status = dict.fromkeys(changes, "HTTP/1.1 200 OK")
        body = pp.render_proppatch(pf.href(entry.path, entry.inode.is_dir), changes, status)
        return web.Response(status=207, body=body, content_type="application/xml", charset="utf-8")

    # -- write side ----------------------------------------------------------------------------
    async def put(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        if trailing:
            raise BadRequest(f"Cannot upload to a collection URL: {path}/")
        self._require_login(login)
        xattrs = {k[len("xattr."):]: v for k, v in request.query.items() if k.startswith("xattr.")}
        if any(not name for name in xattrs):
            raise BadRequest("Empty extended attribute name in xattr. query parameter")
        if (self.redirects is not None and self.redirects.writes
                and request.headers.get("Expect", "").lower() == "100-continue"):
            self.transfers.authorise_upload(login, path)  # refuse at the door, before any redirect
            mover = self.redirects.movers.create("write", login, path, self.ns.ns_path(login, path), xattrs)
            raise web.HTTPTemporaryRedirect(self._pool_url(request, mover))
        result = await self.transfers.upload(
            login, path, request_body(request), client=request.remote or "",
            content_length=request.content_length, content_md5=request.headers.get("Content-MD5"),
            algorithms=digests.upload_algorithms(request.headers), xattrs=xattrs, extra=door_details(request),
        )
        headers = {"ETag": self._etag(result.entry),
                   **digests.response_headers(request.headers, result.entry.inode, default="adler32")}
        return web.Response(status=201 if result.created else 204, headers=headers)

    async def delete(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        self._require_login(login)
        removed: list[Entry] = []
        try:
            self.ns.delete(login, path, recursive=True, removed_files=removed)
        finally:  # a tree stopped part-way: the files it did remove have their records
            for entry in removed:
                self.transfers.remove_finished(login, entry, request.remote or "", extra=door_details(request))
        return web.Response(status=204)

    async def lock(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        """dCache's fake lock: granted at once with zero lifetime; 201 for a name not yet bound (nothing is created)."""
        self._require_login(login)
        wanted = locks.parse_lock(await read_small_body(request, "LOCK"), request.headers.get("Depth"))
        try:
            entry = self.ns.stat(login, path)
            status, is_dir = 200, entry.inode.is_dir
        except NotFound:
            parent = path.rsplit("/", 1)[0] or "/"
            try:
                parent_is_dir = self.ns.stat(login, parent).inode.is_dir
            except NotFound:
                parent_is_dir = False
            if not parent_is_dir:
                raise Conflict(f"Parent collection does not exist: {parent}") from None
            status, is_dir = 201, False
        token = locks.new_token()
        body = locks.render_lock(wanted, token, pf.href(path, is_dir))
        return web.Response(status=status, body=body, content_type="application/xml", charset="utf-8",
                            headers={"Lock-Token": f"<{token}>", "Timeout": locks.TIMEOUT})

    async def unlock(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        self._require_login(login)
        locks.parse_lock_token(request.headers.get("Lock-Token"))
        self.ns.stat(login, path)  # 404 for a name that does not exist, as for any other method
        return web.Response(status=204)

    async def mkcol(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        self._require_login(login)
        if request.content_length or (request.body_exists and await request.content.read(1)):
            raise web.HTTPUnsupportedMediaType(reason="MKCOL with a request body is not supported")
        try:
            self.ns.stat(login, path)
        except NotFound:
            pass
        else:
            raise NotAllowed(f"Resource already exists: {path}")
        self.ns.mkdir(login, path)
        return web.Response(status=201)

    async def move(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        self._require_login(login)
        destination = request.headers.get("Destination")
        if not destination:
            raise BadRequest("MOVE requires a Destination header")
        dst = path_from_url(destination)
        overwrite = request.headers.get("Overwrite", "T").strip().upper()
        if overwrite not in ("T", "F"):
            raise BadRequest(f"Bad Overwrite header: {overwrite[:10]!r} (expected T or F)")
        if overwrite == "F":
            try:
                self.ns.stat(login, dst)
            except NotFound:
                pass
            else:
                raise web.HTTPPreconditionFailed(reason=f"Destination exists: {dst}")
        replaced = overwrite == "T" and self._clear_move_target(login, path, dst)
        _, created = self.ns.move(login, path, dst, overwrite=overwrite == "T")
        return web.Response(status=201 if created and not replaced else 204)

    def _clear_move_target(self, login: Login, src: str, dst: str) -> bool:
        """``Overwrite: T`` onto a collection (or a collection onto a file) deletes the target first,
        as dCache's Milton MoveHandler does; rename(2) semantics (file onto file) stay in the service."""
        if is_within(dst, src) or is_within(src, dst):
            return False  # into itself or onto an ancestor: the service refuses it, nothing is deleted
        try:
            target = self.ns.stat(login, dst)
        except NotFound:
            return False
        source = self.ns.stat(login, src)
        if target.inode.id == source.inode.id or not (target.inode.is_dir or source.inode.is_dir):
            return False
        self.ns.delete(login, dst, recursive=True)
        return True

    async def copy(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.StreamResponse:
        if is_local_destination(request):
            self._require_login(login)
            return await self.local_copy.copy(request, login, path)
        if self.tpc is None:
            raise web.HTTPNotImplemented(reason="HTTP third-party copy is not enabled")
        return await self.tpc.copy(request, login, path, trailing)

    async def post(self, request: web.Request, login: Login, path: str, trailing: bool) -> web.Response:
        if request.headers.get("Content-Type") != MACAROON_REQUEST:
            raise web.HTTPMethodNotAllowed("POST", METHODS,
                                           reason=f"POST is only supported with Content-Type: {MACAROON_REQUEST}")
        if not (self.tls or self.allow_insecure_macaroons):
            raise BadRequest("Not secure transport")
        if login.anonymous:
            raise NotAuthenticated("Authentication required")
        body = await read_small_body(request, "Macaroon request")
        token = self.macaroons.mint(login, path, body)
        target = f"{request.scheme}://{request.host}{quote(path)}"
        base = f"{request.scheme}://{request.host}/"
        doc = {"macaroon": token, "uri": {
            "targetWithMacaroon": f"{target}?authz={token}", "baseWithMacaroon": f"{base}?authz={token}",
            "target": target, "base": base}}
        return web.Response(text=json.dumps(doc, indent=4), content_type="application/json")

    def _pool_url(self, request: web.Request, mover: Mover) -> str:
        assert self.redirects is not None
        door = f"{request.scheme}://{request.host}"
        return (f"{self.redirects.movers.base_url}{quote(mover.ns_path)}?dcache-http-uuid={mover.uuid}"
                f"&dcache-http-ref={quote(door, safe='')}")

    @staticmethod
    def _require_login(login: Login) -> None:
        if login.anonymous:
            raise NotAuthenticated("Authentication required")


__all__ = ["WebDavDoor"]
