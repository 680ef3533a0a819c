"""``/api/v1/labels``: every label in use, and a label's virtual directory of files, in dCache's shapes.

dCache (LabelsResources) answers ``GET /labels`` with ``{"labels": [...]}`` and
``GET /labels/{label}`` with a JsonFileAttributes whose only field is ``children``: one entry per
labelled file, named by its file name, with the locality/locations/qos/xattr/labels flags honoured.
There ``{label}`` is the REST ``{path}`` parameter (``@Path("{path : .*}")`` through
``PathMapper.asDcachePath``), so ``/labels/%2Fx`` and ``/labels//x`` name label ``x`` here too.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.frontend import API, Frontend, json_response, parse_bool
from airflow_dcache.server.services.errors import BadRequest, NotFound

_CHILD_FLAGS = ("locality", "locations", "qos", "xattr", "labels")


def _range(request: web.Request) -> tuple[int, int | None]:
    """dCache's offset/limit handling, with its messages."""
    raw_offset, raw_limit = request.query.get("offset", "0"), request.query.get("limit")
    for raw in (raw_offset, raw_limit):
        if raw is not None and not re.fullmatch(r"-?[0-9]{1,9}", raw.strip()):
            raise BadRequest("limit and offset must be an integer value.")
    offset = int(raw_offset)
    limit = None if raw_limit is None else int(raw_limit)
    if offset < 0 or (limit is not None and limit < 0):
        raise BadRequest("limit and offset can not be less than zero.")
    return offset, limit


class Labels:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.ns = frontend.ns

    def install(self, app: web.Application) -> None:
        app.router.add_get(API + "/labels", self.list_labels)
        app.router.add_get(API + "/labels/{label:.+}", self.virtual_directory)

    async def list_labels(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        offset, limit = _range(request)
        labels = self.ns.visible_labels(login)
        return json_response({"labels": labels[offset:None if limit is None else offset + limit]})

    async def virtual_directory(self, request: web.Request) -> web.Response:
        login = self.frontend.login(request)
        # The raw path decoded once (never match_info's); a label may hold a backslash, a file name may not.
        label = self.frontend.rest_path(request, backslash=True)[1:]
        offset, limit = _range(request)
        flags = {name: parse_bool(request, name) for name in _CHILD_FLAGS}
        entries = self.ns.labelled(login, label, offset, limit)
        if entries is None:  # no such label, or none of its files is visible: the same answer for both
            raise NotFound(f"No such file or directory: /{label}")
        children: list[dict[str, Any]] = []
        for entry in entries:
            name = entry.inode.name
            children.append(dict(self.frontend.attributes(entry, flags), fileName=name, sourcePath=name))
        return json_response({"children": children})
