"""``/api/v1/labels``: every label in use, and a label's virtual directory of files, in dCache's shapes.

dCache (LabelsResources) answers ``GET /labels`` with ``{"labels": [...]}`` and
``GET /labels/{label}`` with a JsonFileAttributes whose only field is ``children``: one entry per
labelled file, named by its file name, with the locality/locations/qos/xattr/labels flags honoured.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from airflow_dcache.server.http.frontend import API, Frontend, json_response, parse_bool
from airflow_dcache.server.services.errors import BadRequest, NotFound

_CHILD_FLAGS = ("locality", "locations", "qos", "xattr", "labels")


def _range(request: web.Request) -> slice:
    """dCache's offset/limit handling, with its messages."""
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        raise BadRequest("limit and offset must be an integer value.") from None
    if offset < 0 or (limit is not None and limit < 0):
        raise BadRequest("limit and offset can not be less than zero.")
    return slice(offset, None if limit is None else offset + limit)


class Labels:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.ns = frontend.ns

    def install(self, app: web.Application) -> None:
        app.router.add_get(API + "/labels", self.list_labels)
        app.router.add_get(API + "/labels/{label:.+}", self.virtual_directory)

    async def list_labels(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response({"labels": self.ns.db.all_labels()[_range(request)]})

    async def virtual_directory(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        label = request.match_info["label"].strip("/")
        window = _range(request)
        flags = {name: parse_bool(request, name) for name in _CHILD_FLAGS}
        if not label or "/" in label or label not in self.ns.db.all_labels():
            raise NotFound(f"No such file or directory: /{label}")
        children: list[dict[str, Any]] = []
        for entry in self.ns.labelled(login, label)[window]:
            name = entry.inode.name
            children.append(dict(self.frontend.attributes(entry, flags), fileName=name, sourcePath=name))
        return json_response({"children": children})
