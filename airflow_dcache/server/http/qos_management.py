"""``/api/v1/qos-management``: the QoS classes a client may ask for and their transitions."""

from __future__ import annotations

from aiohttp import web

from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.http.frontend import API, json_response
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated, NotFound
from airflow_dcache.server.services.tape import DIRECTORY_TRANSITIONS, FILE_TRANSITIONS, QOS_NAMES

_LATENCY = {"disk": "100", "tape": "600000", "disk+tape": "100", "volatile": "100"}
_REDUNDANCY = {"disk": "1", "tape": "1", "disk+tape": "2", "volatile": "0"}


class QosManagement:
    def __init__(self, auth: Authenticator, site: str) -> None:
        self.auth = auth
        self.site = site

    def install(self, app: web.Application) -> None:
        base = API + "/qos-management"
        app.router.add_get(base + "/qos/{kind}", self.list_classes)
        app.router.add_get(base + "/qos/{kind}/{qos}", self.capability)
        app.router.add_route("*", base + r"/namespace{tail:[\s\S]*}", self.deprecated)

    def _check(self, request: web.Request) -> str:
        if self.auth.authenticate(request).anonymous:
            raise NotAuthenticated("Authentication required")
        kind = request.match_info["kind"]
        if kind not in ("file", "directory"):
            raise NotFound(f"Unknown object type '{kind[:20]}': expected file or directory")
        return kind

    async def list_classes(self, request: web.Request) -> web.Response:
        self._check(request)
        return json_response({"name": list(QOS_NAMES), "message": "successful", "status": "200"})

    async def capability(self, request: web.Request) -> web.Response:
        kind = self._check(request)
        qos = request.match_info["qos"]
        table = FILE_TRANSITIONS if kind == "file" else DIRECTORY_TRANSITIONS
        if qos not in table:
            raise NotFound(f"Unknown QoS '{qos[:40]}'")
        metadata = {"cdmi_data_redundancy_provided": _REDUNDANCY[qos],
                    "cdmi_geographic_placement_provided": [self.site],
                    "cdmi_latency_provided": _LATENCY[qos]}
        return json_response({"status": "200", "message": "successful", "backendCapability": {
            "name": qos, "transition": list(table[qos]), "metadata": metadata}})

    async def deprecated(self, request: web.Request) -> web.Response:
        raise BadRequest("This resource is deprecated: use /api/v1/namespace/{path} with ?qos=true "
                         "and the 'qos' action instead")
