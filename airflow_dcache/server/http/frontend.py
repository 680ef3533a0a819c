"""The frontend REST API (``/api/v1``): identity and namespace, in dCache's JSON shapes."""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.http.bodies import read_bounded
from airflow_dcache.server.http.paths import check_name, normalise_path, raw_tail, rest_path
from airflow_dcache.server.http.swagger import swagger_handler
from airflow_dcache.server.services import checksums
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated, NotFound, PermissionDenied
from airflow_dcache.server.services.jsonbody import parse_json
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.services.tape import TapeService, lifetime_ms

API = "/api/v1"
MAX_JSON_BODY = 1 << 20
_FLAGS = ("children", "locality", "locations", "qos", "checksum", "xattr", "labels", "optional")
SUCCESS = {"status": "success"}


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(doc), content_type="application/json")


def parse_bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1", ""):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"Query parameter {name} must be true or false, got {value[:20]!r}")


def parse_nonnegative(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value):  # ASCII digits only: str.isdigit() accepts "²", int() does not
        raise BadRequest(f"Query parameter {name} must be an integer >= 0, got {value[:20]!r}")
    return int(value)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """A JSON object body with ``Content-Type: application/json``, bounded in size."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            reason=f"Content-Type must be application/json, got {request.content_type or 'none'}")
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise BadRequest(f"Request body larger than {MAX_JSON_BODY} bytes")
    raw = await read_bounded(request, MAX_JSON_BODY)
    if len(raw) > MAX_JSON_BODY:
        raise BadRequest(f"Request body larger than {MAX_JSON_BODY} bytes")
    doc = parse_json(raw)
    if not isinstance(doc, dict):
        raise BadRequest("Request body must be a JSON object")
    return doc


def field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True,
          default: Any = None) -> Any:
    """A typed field of a JSON body; errors name the field and the expected type."""
    if name not in doc or doc[name] is None:
        if required:
            raise BadRequest(f"Missing required field '{name}'")
        return default
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRequest(f"Field '{name}' must be of type {names}")
    return value


class Frontend:
    def __init__(self, auth: Authenticator, namespace: NamespaceService, tape: TapeService) -> None:
        self.auth = auth
        self.ns = namespace
        self.tape = tape
        self._actions = {
            "qos": self._qos, "pin": self._pin, "unpin": self._unpin,
            "mkdir": self._mkdir, "mv": self._mv, "chmod": self._chmod, "chgrp": self._chgrp,
            "set-xattr": self._set_xattr, "rm-xattr": self._rm_xattr,
            "set-label": self._set_label, "rm-label": self._rm_label,
        }

    def install(self, app: web.Application) -> None:
        app.router.add_get(f"{API}/user", self.user)
        app.router.add_get(f"{API}/swagger.json", swagger_handler(self.auth))
        app.router.add_get(API + "/id/{pnfsid}", self.get_by_id)
        for method, handler in (("GET", self.get_namespace), ("POST", self.post_namespace),
                                ("DELETE", self.delete_namespace)):
            app.router.add_route(method, API + r"/namespace{tail:(/[\s\S]*)?}", handler)

    def login(self, request: web.Request) -> Login:
        login = self.auth.authenticate(request)
        if login.anonymous:
            raise NotAuthenticated("Authentication required")
        return login

    @staticmethod
    def rest_path(request: web.Request, prefix_segments: int = 3, *, backslash: bool = False) -> str:
        """The REST ``{path}`` after ``/api/v1/<resource>``: decoded once and normalised, before any
        check (``paths.rest_path``), so the path checked is the path acted on."""
        return rest_path(raw_tail(request.rel_url.raw_path, prefix_segments), backslash=backslash)

    def _path(self, request: web.Request) -> str:
        return self.rest_path(request)

    async def user(self, request: web.Request) -> web.Response:
        login = self.auth.authenticate(request)
        if login.anonymous:
            return json_response({"status": "ANONYMOUS"})
        doc: dict[str, Any] = {"status": "AUTHENTICATED", "uid": login.uid, "gids": list(login.gids),
                               "username": login.username, "homeDirectory": login.home,
                               "rootDirectory": login.root}
        if login.roles:
            doc["roles"] = list(login.roles)
        if login.unasserted_roles:
            doc["unassertedRoles"] = list(login.unasserted_roles)
        return json_response(doc)

    # -- GET -------------------------------------------------------------------------------------
    async def get_namespace(self, request: web.Request) -> web.Response:
        login = self.login(request)
        flags = {name: parse_bool(request, name) for name in _FLAGS}
        offset = parse_nonnegative(request, "offset") or 0
        limit = parse_nonnegative(request, "limit")
        # Unknown parameters are ignored, as dCache's frontend (Jersey) does: code written against
        # a production dCache must work here too. Known ones with bad values are refused.
        entry = self.ns.stat(login, self._path(request))
        doc = self.attributes(entry, flags)
        if flags["children"] and entry.inode.is_dir:
            children = self.ns.list_dir(login, entry.path, offset, -1 if limit is None else limit,
                                        notify=True)
            doc["children"] = [dict(self.attributes(c, flags), fileName=c.inode.name) for c in children]
        return json_response(doc)

    def attributes(self, entry: Entry, flags: dict[str, bool]) -> dict[str, Any]:
        """dCache's JsonFileAttributes; keys that would be null are left out, as Jackson NON_NULL does."""
        node = entry.inode
        doc: dict[str, Any] = {
            "fileMimeType": "application/vnd.dcache.folder" if node.is_dir
            else self._mime(entry), "size": node.size, "creationTime": node.crtime, "mtime": node.mtime,
            "pnfsId": node.id, "fileType": node.type, "nlink": 2 if node.is_dir else 1, "mode": node.mode,
        }
        if flags.get("locality") and not node.is_dir:
            doc["fileLocality"] = node.locality
        if flags.get("locations") and not node.is_dir:
            doc["locations"] = [self.ns.pool.name] if node.on_disk else []
        if flags.get("qos") and not node.is_dir:
            doc["currentQos"] = node.current_qos
            if node.qos_target is not None:
                doc["targetQos"] = node.qos_target
        if flags.get("xattr"):
            doc["extendedAttributes"] = self.ns.xattrs(entry)
        if flags.get("labels"):
            doc["labels"] = self.ns.labels(entry)
        if flags.get("checksum") and not node.is_dir:
            doc["checksums"] = [{"type": a.enum, "value": v} for a, v in checksums.stored(node).items()]
        if flags.get("optional"):
            doc.update({"atime": node.atime, "ctime": node.ctime, "owner": node.uid, "group": node.gid})
            if not node.is_dir:
                doc["accessLatency"] = "ONLINE" if node.on_disk and node.disk_sticky else "NEARLINE"
                doc["retentionPolicy"] = "CUSTODIAL" if node.on_tape else "REPLICA"
                if node.on_tape:
                    doc["hsm"] = self.tape.hsm.name
                    doc["storageInfo"] = f"{self.tape.hsm.name}:default@{self.tape.hsm.name}"
        return doc

    def _mime(self, entry: Entry) -> str:
        declared = self.ns.xattrs(entry).get("mime_type")
        return declared or mimetypes.guess_type(entry.inode.name)[0] or "application/octet-stream"

    # -- POST / DELETE ---------------------------------------------------------------------------
    async def post_namespace(self, request: web.Request) -> web.Response:
        login = self.login(request)
        path = self._path(request)
        doc = await read_json_object(request)
        action = doc.get("action")
        if not isinstance(action, str):
            raise BadRequest("Missing required field 'action' (a string)")
        handler = self._actions.get(action)
        if handler is None:
            raise BadRequest(f"No such action {action[:64]}")
        handler(login, path, doc)
        return json_response(SUCCESS, status=201)

    async def delete_namespace(self, request: web.Request) -> web.Response:
        login = self.login(request)
        self.ns.delete(login, self._path(request))
        return json_response(SUCCESS)

    async def get_by_id(self, request: web.Request) -> web.Response:
        """Admins only, as dCache: the entry for a PNFS-ID with every flag, plus its path."""
        login = self.login(request)
        if not login.admin:
            raise PermissionDenied("Only admins may look up files by PNFS-ID")
        pnfsid = request.match_info["pnfsid"]
        node = self.ns.db.get(pnfsid) if len(pnfsid) == 36 else None
        if node is None:
            raise NotFound(f"No such PNFS-ID: {pnfsid[:40]}")
        path = self.ns.db.path_of(node.id)
        entry = self.ns.stat(login, path)
        doc = self.attributes(entry, dict.fromkeys(_FLAGS, True))
        return json_response(dict(doc, path=path, fileName=node.name))

    def _qos(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        if "policy" in doc:
            raise BadRequest("QoS policies are not supported by this service; use 'target'")
        self.tape.request_qos(login, path, field(doc, "target", str))

    def _pin(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        given = doc.get("lifetime", 0)
        lifetime = lifetime_ms(given, doc.get("lifetime-unit"))
        # No lifetime (or 0) pins without expiry here. A positive one that rounds down to 0 ms
        # (500 MICROSECONDS) expires at once, as dCache's TimeUnit.toMillis makes it, not never.
        entry = self.tape.pin(login, path, lifetime if given else None, pin_id=str(login.uid))
        self.tape.stage_in_background(entry.inode.id)

    def _unpin(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        self.tape.unpin(login, path, pin_id=str(login.uid))

    def _mkdir(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        name = field(doc, "name", str)
        if not name or "/" in name or name in (".", ".."):
            raise BadRequest("Field 'name' must be a single path component")
        # Literal, as dCache's FsPath.checkChildName: a JSON field is not percent-decoded ("50%25" stays).
        self.ns.mkdir(login, path.rstrip("/") + "/" + check_name(name))

    def _mv(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        destination = field(doc, "destination", str)
        if not destination:
            raise BadRequest("Field 'destination' must not be empty")
        if not destination.startswith("/"):  # dCache resolves it against the source's parent
            parent = path.rsplit("/", 1)[0]
            destination = f"{parent}/{destination}"
        self.ns.move(login, path, _normalise(destination))

    def _chmod(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        self.ns.chmod(login, path, field(doc, "mode", int))

    def _chgrp(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        self.ns.chgrp(login, path, field(doc, "gid", int))

    def _set_xattr(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        attrs = field(doc, "attributes", dict)
        if not attrs or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in attrs.items()):
            raise BadRequest("Field 'attributes' must be a non-empty object of string names to string values")
        self.ns.set_xattrs(login, path, attrs, field(doc, "mode", str, required=False, default="EITHER"))

    def _rm_xattr(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        names = field(doc, "names", (str, list))
        names = [names] if isinstance(names, str) else names
        if not names or not all(isinstance(n, str) and n for n in names):
            raise BadRequest("Field 'names' must be a name or a non-empty list of names")
        self.ns.remove_xattrs(login, path, names)

    def _set_label(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        self.ns.set_label(login, path, _label(doc), add=True)

    def _rm_label(self, login: Login, path: str, doc: dict[str, Any]) -> None:
        self.ns.set_label(login, path, _label(doc), add=False)


def _label(doc: dict[str, Any]) -> str:
    label = field(doc, "label", str)
    if not label or len(label) > 255 or any(ord(c) < 0x20 for c in label):
        raise BadRequest("Field 'label' must be 1 to 255 printable characters")
    return label


def _normalise(path: str) -> str:
    """A destination path from a JSON body: the REST path rules, without percent-decoding (as dCache)."""
    return normalise_path(path)
