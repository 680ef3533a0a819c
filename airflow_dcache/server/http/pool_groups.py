"""``/api/v1/poolgroups``: dCache's PoolGroupInfoResources, answered from this service's one pool.

The model is a stock dCache's (``skel/share/services/poolmanager.batch``): one pool group,
``default``, that the link ``default-link`` points to. It holds the instance's one pool,
``<site>-pool1``. The JSON shapes are dCache's, from its frontend's ``PoolGroup`` and
``PoolGroupInfo``. Keys that would be null are left out, as the frontend's Jackson (``NON_NULL``) does.

What is answered, and how truthfully:

- ``GET /poolgroups`` and ``GET /poolgroups/{group}``: name, links, pools and ``nestedPoolGroups``.
  An unknown group is a 400 with "No such pool group: …", as dCache's ``NoSuchElementException``
  from the pool selection unit is mapped by its ErrorResponseProvider.
- ``GET /poolgroups/{group}/pools``: the sorted pool names. ``ALL`` (any case) means every pool, as
  in ``PoolInfoCollectorUtils.listPools``.
- ``GET /poolgroups/{group}/space``: ``groupSpaceData`` (dCache's PoolSpaceData) and per pool
  ``costDataForPools`` holding just that ``space``. ``total`` is the bytes of the pool's replicas
  plus the free space of its file system, which is ``free``. ``precious`` counts the replicas still
  waiting for a flush to tape. ``removable`` counts the cached replicas that no QoS and no pin keep.
  ``lru``, ``gap`` and ``breakEven`` (pool cost configuration) are not modelled, so they are left out.
- ``GET /poolgroups/{group}/queues``: the same ``costDataForPools``. The mover, store, restore and
  p2p queues are not modelled (the door streams data itself), so those keys are absent.
- ``GET /poolgroups/{group}/usage``: ``cellDataForPools`` maps each pool to null. That is what dCache
  answers while its pool-info collector has no data for a pool, and this service has no cells.
- ``GET /poolgroups/{group}/histograms/queues`` and ``/histograms/files``: ``{}``, dCache's answer
  for a group whose histograms it has not collected (for any name, so no 400 here either).
- Not routed, so 404: ``/{group}/storageunits``, ``/{group}/storageunits/space`` and
  ``/{group}/storageunits/{key}/space``. Storage units (``class@hsm`` from directory tags) are not
  modelled, and dCache too answers 404 when it has no storage-unit data for a group.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.frontend import API, Frontend, json_response
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.storage.namespace_db import now_ms

GROUP = "default"  # poolmanager.batch: psu create pgroup default
LINK = "default-link"  # psu create link default-link any-store world-net any-protocol; addto link … default
ALL = "all"  # PoolInfoCollectorUtils.ALL, compared ignoring case
_YIELD_EVERY = 500  # namespace look-ups between yields to the event loop while classifying replicas


class PoolGroups:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.ns = frontend.ns

    def install(self, app: web.Application) -> None:
        base = API + "/poolgroups"
        app.router.add_get(base, self.list_groups)
        app.router.add_get(base + "/{group}", self.group)
        app.router.add_get(base + "/{group}/pools", self.pools)
        app.router.add_get(base + "/{group}/usage", self.usage)
        app.router.add_get(base + "/{group}/queues", self.queues)
        app.router.add_get(base + "/{group}/space", self.space)
        app.router.add_get(base + "/{group}/histograms/queues", self.histograms)
        app.router.add_get(base + "/{group}/histograms/files", self.histograms)

    # -- the selection model -----------------------------------------------------------------------
    def _all_pools(self) -> list[str]:
        return [self.ns.pool.name]

    def _group_doc(self, name: str) -> dict[str, Any]:
        if name != GROUP:
            raise BadRequest(f"No such pool group: {name[:100]}")
        return {"name": GROUP, "links": [LINK], "pools": sorted(self._all_pools()), "nestedPoolGroups": []}

    def _pools_of(self, name: str) -> list[str]:
        """dCache's listPools(group): ``ALL`` is every pool; an unknown group is refused."""
        if name.lower() == ALL:
            return sorted(self._all_pools())
        return list(self._group_doc(name)["pools"])

    # -- handlers ----------------------------------------------------------------------------------
    async def list_groups(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response([self._group_doc(GROUP)])

    async def group(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response(self._group_doc(request.match_info["group"]))

    async def pools(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response(self._pools_of(request.match_info["group"]))

    async def usage(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response({"cellDataForPools": dict.fromkeys(self._pools_of(request.match_info["group"]))})

    async def queues(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        pools = self._pools_of(request.match_info["group"])
        space = await self._space()
        return json_response({"costDataForPools": {p: _cost_data(space) for p in pools}})

    async def space(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        pools = self._pools_of(request.match_info["group"])
        space = await self._space()
        return json_response({"groupSpaceData": space, "costDataForPools": {p: _cost_data(space) for p in pools}})

    async def histograms(self, request: web.Request) -> web.Response:
        self.frontend.login(request)
        return json_response({})

    # -- space -------------------------------------------------------------------------------------
    async def _space(self) -> dict[str, int]:
        """dCache's PoolSpaceData for the one pool: what its disk holds and can still take."""
        pool = self.ns.pool
        replicas, free = await asyncio.to_thread(_scan, pool.data_dir)
        precious = removable = 0
        now = now_ms()
        for i, (file_id, size) in enumerate(replicas.items()):
            if i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            node = self.ns.db.get(file_id)
            if node is None or node.is_dir or not node.on_disk:
                continue  # a replica being deleted: it still takes space, nothing more
            if not node.on_tape and node.qos_target in ("tape", "disk+tape"):
                precious += size  # must reach tape before it may go
            elif (not node.disk_sticky and node.qos_target is None and not self.ns.db.pinned(file_id, now)):
                removable += size
        used = sum(replicas.values())
        return {"total": used + free, "free": free, "precious": precious, "removable": removable}


def _cost_data(space: dict[str, int]) -> dict[str, Any]:
    """dCache's PoolCostData with only what is modelled: its label and the pool's space."""
    return {"label": "Pool Cost Info", "space": dict(space)}


def _scan(data_dir: os.PathLike[str]) -> tuple[dict[str, int], int]:
    """The pool's replicas (file id → bytes) and the free bytes of its file system (as a non-root writer)."""
    replicas: dict[str, int] = {}
    with os.scandir(data_dir) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    replicas[entry.name] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # removed while we looked
                continue
    st = os.statvfs(data_dir)
    return replicas, st.f_bavail * st.f_frsize
