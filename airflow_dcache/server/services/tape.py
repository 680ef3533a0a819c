"""Emulated tape and QoS: flushes, stages, pins and the transitions between disk, tape and disk+tape.

Transitions run in the background exactly as dCache's QoS engine does: the request returns at
once, ``targetQos`` is reported until the work is done, and every step shows up as storage
events (IN_ATTRIB) and billing records (``store``/``restore``). State lives in the namespace, so
unfinished transitions resume after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from airflow_dcache.server.services import permissions as perm
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import BadRequest, Conflict
from airflow_dcache.server.services.events import NamespaceEvent, TransferEvent
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.storage.hsm import HsmStore
from airflow_dcache.server.storage.namespace_db import Inode, now_ms

log = logging.getLogger(__name__)

QOS_NAMES = ("disk", "tape", "disk+tape", "volatile")
# dCache's allowed transitions by current QoS (files), from QosManagement.
FILE_TRANSITIONS = {
    "disk": ("tape", "disk+tape"),
    "tape": ("disk+tape",),
    "disk+tape": ("tape",),
    "volatile": ("disk", "tape", "disk+tape"),
}
DIRECTORY_TRANSITIONS = {"disk": ("tape",), "tape": ("disk",), "disk+tape": (), "volatile": ()}
# Every java.util.concurrent.TimeUnit, as (numerator, denominator) milliseconds per unit. dCache reads
# a pin lifetime's unit with TimeUnit.valueOf(unit) and converts with toMillis (truncating), both in the
# frontend's pin action ("lifetime-unit") and the bulk PIN activity ("lifetimeUnit"). valueOf is
# case-sensitive and neither caller upper-cases first, so "minutes" is refused (dCache: a 500, here a 400).
_UNIT_MILLIS: dict[str, tuple[int, int]] = {
    "NANOSECONDS": (1, 1_000_000), "MICROSECONDS": (1, 1_000), "MILLISECONDS": (1, 1), "SECONDS": (1_000, 1),
    "MINUTES": (60_000, 1), "HOURS": (3_600_000, 1), "DAYS": (86_400_000, 1),
}
LIFETIME_UNITS: tuple[str, ...] = tuple(_UNIT_MILLIS)


def normalise_qos(name: str) -> str:
    """Accept dCache's spellings (``tape+disk`` for ``disk+tape``, any case)."""
    value = name.strip().lower()
    if value == "tape+disk":
        value = "disk+tape"
    if value not in QOS_NAMES:
        raise BadRequest(f"Unknown QoS '{name[:40]}': expected one of {', '.join(QOS_NAMES)}")
    return value


@dataclass(frozen=True)
class TapeSettings:
    flush_delay: float = 1.0
    stage_delay: float = 1.0
    default_qos: str = "disk"
    sweep_interval: float = 1.0


class TapeService:
    def __init__(self, namespace: NamespaceService, hsm: HsmStore, settings: TapeSettings) -> None:
        self.ns = namespace
        self.db = namespace.db
        self.pool = namespace.pool
        self.hsm = hsm
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stages: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        namespace.events.subscribe(self._on_event)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        for node in self.db.with_qos_target():  # resume transitions interrupted by a restart
            self._schedule(node.id)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._stages.values()]
        if self._sweeper:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, event: object) -> None:
        if isinstance(event, NamespaceEvent) and event.kind == "IN_DELETE_SELF" and not event.is_dir:
            # the tape copy goes with the file; unlinking is I/O, so off the event loop
            asyncio.get_running_loop().run_in_executor(None, self.hsm.remove, event.inode_id)
        if (isinstance(event, TransferEvent) and event.kind == "upload"
                and self.settings.default_qos != "disk"):
            self._set_target(event.inode_id, self.settings.default_qos)

    # -- QoS -------------------------------------------------------------------------------------
    def request_qos(self, login: Login, path: str, target: str) -> Entry:
        """Start a transition and return at once (the namespace ``qos`` action and bulk UPDATE_QOS)."""
        wanted = normalise_qos(target)
        entry = self.ns.authorise_attr_write(login, path)
        node = entry.inode
        if node.is_dir:
            raise BadRequest("Transition for directories not supported")
        current = node.current_qos
        if wanted != current and wanted not in FILE_TRANSITIONS[current]:
            raise BadRequest(f"Transition from {current} to {wanted} is not supported")
        if wanted in ("disk", "disk+tape") and not node.on_disk:
            perm.require_activity(login, Activity.STAGE, path)
        if wanted == current and node.qos_target is None:
            return entry
        self._set_target(node.id, wanted)
        return entry

    async def settle(self, inode_id: str) -> None:
        """Wait until the file's transition has finished (bulk UPDATE_QOS completes only then)."""
        node = self.db.get(inode_id)
        if node is None or node.qos_target is None:
            return
        self._schedule(inode_id)
        task = self._tasks.get(inode_id)
        if task is not None:
            await asyncio.shield(task)
        node = self.db.get(inode_id)
        if node is not None and node.qos_target is not None:
            raise Conflict(f"QoS transition to {node.qos_target} did not complete")

    def _set_target(self, inode_id: str, target: str) -> None:
        self.db.set_replicas(inode_id, qos_target=target)
        node = self.db.get(inode_id)
        if node is not None:
            self.ns.emit("IN_ATTRIB", node)
            self._schedule(inode_id)

    def _schedule(self, inode_id: str) -> None:
        task = self._tasks.get(inode_id)
        if task is None or task.done():
            self._tasks[inode_id] = asyncio.create_task(self._transition(inode_id))

    async def _transition(self, inode_id: str) -> None:
        try:
            while (node := self.db.get(inode_id)) is not None and node.qos_target is not None:
                target = node.qos_target
                if "tape" in target and not node.on_tape:
                    await self._flush(node)
                if target in ("disk", "disk+tape") and not node.on_disk:
                    await self.stage(inode_id)
                node = self.db.get(inode_id)
                if node is None:
                    return
                if node.qos_target != target:
                    continue  # retargeted while we worked
                sticky = 1 if target in ("disk", "disk+tape") else 0
                self.db.set_replicas(inode_id, disk_sticky=sticky, qos_target=None)
                if target == "tape":
                    self._evict_if_unneeded(inode_id)
                fresh = self.db.get(inode_id)
                if fresh is not None:
                    self.ns.emit("IN_ATTRIB", fresh)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("QoS transition of %s failed; it will be retried at the next start", inode_id)
        finally:
            self._tasks.pop(inode_id, None)

    # -- flush and stage -------------------------------------------------------------------------
    async def _flush(self, node: Inode) -> None:
        await asyncio.sleep(self.settings.flush_delay)
        started = now_ms()
        if self.db.get(node.id) is None:
            return
        await asyncio.to_thread(self.hsm.store, self.pool.data_path(node.id), node.id)
        if self.db.get(node.id) is None:  # deleted while copying
            self.hsm.remove(node.id)
            return
        self.db.set_replicas(node.id, on_tape=1)
        self._billing("store", node, started)
        fresh = self.db.get(node.id)
        if fresh is not None:
            self.ns.emit("IN_ATTRIB", fresh)

    async def stage(self, inode_id: str) -> None:
        """Bring a tape-only file back to disk; concurrent callers share one recall."""
        task = self._stages.get(inode_id)
        if task is None or task.done():
            task = asyncio.create_task(self._recall(inode_id))
            self._stages[inode_id] = task
        await asyncio.shield(task)

    async def _recall(self, inode_id: str) -> None:
        node = self.db.get(inode_id)
        if node is None or node.on_disk:
            return
        if not node.on_tape or not self.hsm.has(inode_id):
            raise Conflict(f"No tape copy of {inode_id} to stage from")
        await asyncio.sleep(self.settings.stage_delay)
        started = now_ms()
        await asyncio.to_thread(self.hsm.restore, inode_id, self.pool.data_path(inode_id))
        if self.db.get(inode_id) is None:
            self.pool.remove(inode_id)
            return
        self.db.set_replicas(inode_id, on_disk=1)
        self._billing("restore", node, started)
        fresh = self.db.get(inode_id)
        if fresh is not None:
            self.ns.emit("IN_ATTRIB", fresh)

    async def bring_online(self, login: Login, entry: Entry) -> None:
        """A read of a NEARLINE file stages it first, if the credential may trigger stages."""
        if entry.inode.on_disk:
            return
        perm.require_activity(login, Activity.STAGE, entry.path)
        await self.stage(entry.inode.id)

    def _evict_if_unneeded(self, inode_id: str) -> None:
        """Drop a disk copy that neither QoS (sticky) nor a pin needs, when tape holds the data."""
        node = self.db.get(inode_id)
        if node is None or not node.on_disk or not node.on_tape or node.disk_sticky:
            return
        if node.qos_target is not None or self.db.pinned(inode_id, now_ms()):
            return
        self.pool.remove(inode_id)
        self.db.set_replicas(inode_id, on_disk=0)
        self.ns.emit("IN_ATTRIB", node)

    # -- pins ------------------------------------------------------------------------------------
    def _for_stage(self, login: Login, path: str) -> Entry:
        perm.require_activity(login, Activity.STAGE, path)
        entry = self.ns.stat(login, path)
        perm.require_within(login, entry.ns_path, path)
        if entry.inode.is_dir:
            raise BadRequest(f"Cannot pin a directory: {path}")
        perm.require_mode(login, entry.inode, perm.READ, path)
        return entry

    def pin(self, login: Login, path: str, lifetime_ms: int | None, pin_id: str) -> Entry:
        """Record a pin (keeps the disk copy until released or expired); staging is the caller's choice."""
        entry = self._for_stage(login, path)
        expires = None if lifetime_ms is None else now_ms() + lifetime_ms
        self.db.add_pin(entry.inode.id, pin_id, login.uid, expires)
        return entry

    def stage_in_background(self, inode_id: str) -> None:
        """Fire-and-forget recall, as the frontend's ``pin`` action does."""
        task = asyncio.create_task(self.stage(inode_id))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors surface as state

    def unpin(self, login: Login, path: str, pin_id: str | None = None) -> int:
        entry = self._for_stage(login, path)
        removed = self.db.remove_pins(entry.inode.id, pin_id=pin_id, uid=None if login.superuser else login.uid)
        self._evict_if_unneeded(entry.inode.id)
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                for inode_id in self.db.expire_pins(now_ms()):
                    self._evict_if_unneeded(inode_id)
            except Exception:
                log.exception("pin expiry sweep failed")

    def _billing(self, kind: str, node: Inode, started: int) -> None:
        self.ns.events.publish(TransferEvent(
            kind, self.db.path_of(node.id), node.id, node.size, node.size, started, now_ms(),
            "root", 0, (0,), "", extra={"hsm": self.hsm.name, "hsm_uri": self.hsm.uri(node.id)}))


MAX_LIFETIME_MS = 100 * 365 * 86_400_000  # a pin beyond a century is a mistake (and overflows timestamps)


def lifetime_ms(value: object, unit: object, *, field: str = "lifetime", unit_field: str | None = None) -> int:
    """Parse a pin lifetime and its unit into milliseconds, as dCache's ``TimeUnit.valueOf(unit).toMillis``.

    ``unit`` is a TimeUnit name spelled exactly (``MILLISECONDS``, not ``milliseconds``); missing or
    empty means SECONDS, as the frontend's ``Strings.emptyToNull`` does. A sub-millisecond result
    truncates, so 500 MICROSECONDS is 0 ms.
    """
    unit_field = unit_field or f"{field}-unit"
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or not math.isfinite(value):
        raise BadRequest(f"Field '{field}' must be a non-negative number")
    unit_name = "SECONDS" if unit is None or unit == "" else unit
    if not isinstance(unit_name, str) or unit_name not in _UNIT_MILLIS:
        shown = repr(unit_name[:40]) if isinstance(unit_name, str) else type(unit_name).__name__
        raise BadRequest(f"Field '{unit_field}' must be a java.util.concurrent.TimeUnit name, spelled in upper "
                         f"case: one of {', '.join(LIFETIME_UNITS)}; got {shown}")
    numerator, denominator = _UNIT_MILLIS[unit_name]
    millis = value * numerator / denominator  # a float may overflow to inf: compare first
    if not millis <= MAX_LIFETIME_MS:
        raise BadRequest(f"Field '{field}' is too long: at most {MAX_LIFETIME_MS // 86_400_000} days")
    return int(millis)


