"""The frontend storage-events API (``/api/v1/events``): channels, subscriptions and the SSE stream.

Status codes, messages and JSON shapes follow dCache's EventResources. Anonymous callers always
get 401. A channel belongs to the uid that created it: any login of that uid may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.http.frontend import API, json_response, read_json_object
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated, NotFound, PermissionDenied
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.storage_events.channel import Channel, Connection
from airflow_dcache.server.services.storage_events.registry import ChannelRegistry, EventType

EVENTS = API + "/events"
SSE = "text/event-stream"
_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ids count up from 0 per channel


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            ranges.append((media.lower(), q))
    return ranges


def wants_stream(request: web.Request) -> bool:
    """SSE if the client asks for text/event-stream at least as much as for JSON; JSON by default."""
    accept = request.headers.get("Accept")
    if not accept:
        return False
    sse = max((q for m, q in _media_ranges(accept) if m in (SSE, "text/*")), default=0.0)
    json_q = max((q for m, q in _media_ranges(accept) if m in ("application/json", "application/*", "*/*")),
                 default=0.0)
    if sse <= 0 and json_q <= 0:
        raise web.HTTPNotAcceptable(reason=f"Only {SSE} and application/json are available")
    return sse > 0 and sse >= json_q


def last_event_id(request: web.Request) -> int | None:
    """An integer ``Last-Event-ID`` asks for a replay; none (or empty) means only new events.

    dCache silently ignores a malformed value, so a client with a corrupted cursor would lose the
    replay without noticing; here it is refused with 400 so the mistake is seen at once.
    """
    value = request.headers.get("Last-Event-ID", "").strip()
    if not value:
        return None
    if not _EVENT_ID.fullmatch(value):
        raise BadRequest(f"Bad Last-Event-ID {value[:40]!r}: expected the integer id of a received event")
    return int(value)


class EventsApi:
    def __init__(self, auth: Authenticator, registry: ChannelRegistry) -> None:
        self.auth = auth
        self.registry = registry

    def install(self, app: web.Application) -> None:
        app.on_startup.append(self.registry.start)
        app.on_shutdown.append(self.registry.shutdown)  # SHUTDOWN to clients before connections close
        r = app.router
        r.add_get(EVENTS, self.info, allow_head=False)
        r.add_get(EVENTS + "/eventTypes", self.event_types, allow_head=False)
        r.add_get(EVENTS + "/eventTypes/{type}", self.event_type, allow_head=False)
        r.add_get(EVENTS + "/eventTypes/{type}/selector", self.selector_schema, allow_head=False)
        r.add_get(EVENTS + "/eventTypes/{type}/event", self.event_schema, allow_head=False)
        r.add_get(EVENTS + "/channels", self.list_channels, allow_head=False)
        r.add_post(EVENTS + "/channels", self.create_channel)
        channel = EVENTS + "/channels/{cid}"
        r.add_get(channel, self.get_channel, allow_head=False)
        r.add_patch(channel, self.patch_channel)
        r.add_delete(channel, self.delete_channel)
        r.add_get(channel + "/subscriptions", self.list_subscriptions, allow_head=False)
        r.add_post(channel + "/subscriptions/{type}", self.subscribe)
        r.add_get(channel + "/subscriptions/{type}/{sid}", self.get_subscription, allow_head=False)
        r.add_delete(channel + "/subscriptions/{type}/{sid}", self.delete_subscription)

    # -- helpers ---------------------------------------------------------------------------------
    def login(self, request: web.Request) -> Login:
        login = self.auth.authenticate(request)
        if login.anonymous:
            raise NotAuthenticated("Authentication required")
        return login

    def _type(self, request: web.Request) -> EventType:
        event_type = self.registry.types.get(request.match_info["type"])
        if event_type is None:
            raise NotFound(f"No such event type: {request.match_info['type'][:64]}")
        return event_type

    def _channel(self, request: web.Request) -> tuple[Login, Channel]:
        login = self.login(request)
        channel = self.registry.get(request.match_info["cid"])
        if channel is None:
            raise NotFound("No such channel")
        if channel.uid != login.uid:
            raise PermissionDenied("Access denied")
        return login, channel

    @staticmethod
    def channel_url(request: web.Request, cid: str) -> str:
        return f"{request.url.origin()}{EVENTS}/channels/{cid}"

    # -- service information ---------------------------------------------------------------------
    async def info(self, request: web.Request) -> web.Response:
        self.login(request)
        s = self.registry.settings
        return json_response({"channels": {
            "maximumPerUser": s.channels_per_user,
            "lifetimeWhenDisconnected": {"minimum": s.disconnect_timeout_min, "maximum": s.disconnect_timeout_max,
                                         "default": s.disconnect_timeout},
        }})

    async def event_types(self, request: web.Request) -> web.Response:
        self.login(request)
        return json_response(sorted(self.registry.types))

    async def event_type(self, request: web.Request) -> web.Response:
        self.login(request)
        return json_response({"description": self._type(request).source.description})

    async def selector_schema(self, request: web.Request) -> web.Response:
        self.login(request)
        return json_response(self._type(request).selector_schema)

    async def event_schema(self, request: web.Request) -> web.Response:
        self.login(request)
        return json_response(self._type(request).event_schema)

    # -- channels --------------------------------------------------------------------------------
    async def list_channels(self, request: web.Request) -> web.Response:
        login = self.login(request)
        client_id = request.query.get("client-id")
        channels = self.registry.of_user(login.uid, client_id)
        return json_response([self.channel_url(request, c.id) for c in channels])

    async def create_channel(self, request: web.Request) -> web.Response:
        login = self.login(request)
        client_id = None
        if request.body_exists:
            doc = await read_json_object(request)
            client_id = doc.get("client-id")
            if client_id is not None and not isinstance(client_id, str):
                raise BadRequest("Field 'client-id' must be a string")
        channel = self.registry.create(login, client_id)
        return web.Response(status=201, headers={"Location": self.channel_url(request, channel.id)})

    async def get_channel(self, request: web.Request) -> web.StreamResponse:
        _, channel = self._channel(request)
        if wants_stream(request):
            return await self._stream(request, channel)
        return json_response({"timeout": channel.timeout})

    async def patch_channel(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        doc = await read_json_object(request)
        if "timeout" not in doc:
            raise BadRequest("Missing required field 'timeout'")
        timeout = doc["timeout"]
        s = self.registry.settings
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise BadRequest("Field 'timeout' must be an integer number of seconds")
        if not s.disconnect_timeout_min <= timeout <= s.disconnect_timeout_max:
            raise BadRequest(f"Bad timeout value: {timeout} is not between {s.disconnect_timeout_min} and "
                             f"{s.disconnect_timeout_max} seconds")
        channel.set_timeout(timeout)
        return web.Response(status=204)

    async def delete_channel(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        self.registry.delete(channel)
        return web.Response(status=204)

    async def _stream(self, request: web.Request, channel: Channel) -> web.StreamResponse:
        transport = request.transport
        conn = Connection(lambda: transport is None or transport.is_closing())
        channel.attach(conn, last_event_id(request))  # before any await: no event can slip past
        task = asyncio.current_task()
        if task is not None:
            self.registry.track_pump(task)
        response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            await channel.pump(conn, response.write)
        except ConnectionError:
            pass  # the client went away; the pump has detached it and started the GC timer
        finally:
            channel.detach(conn)
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # -- subscriptions ---------------------------------------------------------------------------
    async def list_subscriptions(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        base = self.channel_url(request, channel.id)
        return json_response([f"{base}/subscriptions/{t}/{sid}" for t, sid in channel.subscriptions])

    async def subscribe(self, request: web.Request) -> web.Response:
        login, channel = self._channel(request)
        name = request.match_info["type"]
        event_type = self.registry.types.get(name)
        if event_type is None:
            raise BadRequest(f"Unknown event type: {name[:64]}")
        try:
            doc = await read_json_object(request)
        except BadRequest as err:
            raise BadRequest(f"Bad selector: {err.message}") from None
        sub, created = event_type.source.subscribe(channel, login, doc, self.channel_url(request, channel.id))
        return web.Response(status=201 if created else 303, headers={"Location": sub.url})

    def _subscription(self, request: web.Request) -> tuple[Channel, Any]:
        _, channel = self._channel(request)
        sub = channel.subscriptions.get((request.match_info["type"], request.match_info["sid"]))
        if sub is None:
            raise NotFound("No such subscription")
        return channel, sub

    async def get_subscription(self, request: web.Request) -> web.Response:
        _, sub = self._subscription(request)
        return json_response(sub.selector())

    async def delete_subscription(self, request: web.Request) -> web.Response:
        channel, sub = self._subscription(request)
        channel.close_subscription(sub)
        return web.Response(status=204)
