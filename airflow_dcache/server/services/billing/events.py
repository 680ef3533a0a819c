"""From the service's :class:`TransferEvent` to the billing records dCache would publish for it.

* ``upload``   → pool ``transfer`` (``isWrite`` ``write``) then door ``request`` (with ``moverInfo``)
* ``download`` → pool ``transfer`` (``isWrite`` ``read``) then door ``request``
* ``remove``   → door ``remove`` (published by the WebDAV door only; REST deletes publish none)
* ``store``    → pool ``store``; ``restore`` → pool ``restore`` (published by the tape emulation)

Details come from ``TransferEvent.extra`` (all optional):

* from the door (:func:`~airflow_dcache.server.services.billing.door.door_details`): ``protocol``,
  ``client_port``, ``local_endpoint``, ``macaroon``; third-party copies add ``remote`` (the other
  endpoint's URL, whose host and port then fill ``protocolInfo`` as dCache's remote movers do)
* from the tape emulation: ``hsm`` (the HSM instance; also its type unless ``hsm_type`` is given),
  ``hsm_provider``, ``hsm_uri`` or ``locations`` (tape URIs), ``storage_class`` (``"foo:video"``);
  ``storage_class`` plus the HSM type make ``storageInfo`` (``"foo:video@osm"``), omitted otherwise.
"""

from __future__ import annotations

import itertools
import socket
import threading
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from urllib.parse import urlsplit

from airflow_dcache.server.services.billing import records as r
from airflow_dcache.server.services.billing.javafmt import java_host_address
from airflow_dcache.server.services.events import TransferEvent

DEFAULT_DOMAIN = "dCacheDomain"


def default_door_cell_name() -> str:
    """dCache's ``webdav.cell.name`` default: ``WebDAV-${host.name}`` (the short host name)."""
    return "WebDAV-" + (socket.gethostname().split(".")[0] or "localhost")


@dataclass
class RecordBuilder:
    """Turns transfer events into encoded records; owns the transaction counter of both cells."""

    pool: r.Cell
    door: r.Cell
    tz: tzinfo | None = None  # None: the local zone, as the JVM's ZoneId.systemDefault()
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_service(cls, pool_name: str, *, door_cell: str | None = None, domain: str = DEFAULT_DOMAIN,
                    tz: tzinfo | None = None) -> RecordBuilder:
        return cls(r.Cell(pool_name, "pool", domain), r.Cell(door_cell or default_door_cell_name(), "door", domain),
                   tz)

    def _next(self) -> int:
        with self._lock:
            return next(self._counter)

    def records(self, event: TransferEvent) -> list[dict[str, Any]]:
        """The records for ``event`` in publication order; ``[]`` for kinds billing ignores."""
        if event.kind in ("upload", "download"):
            mover = self._mover(event)
            return [r.transfer_record(mover, self.tz), r.door_record(self._request(event, mover), self.tz)]
        if event.kind == "remove":
            return [r.door_record(self._remove(event), self.tz)]
        if event.kind in ("store", "restore"):
            return [r.storage_record(self._storage(event), self.tz)]
        return []

    def encoded(self, event: TransferEvent) -> list[bytes]:
        return [r.encode(rec) for rec in self.records(event)]

    # -- pieces ------------------------------------------------------------------------------------

    def _subject(self, event: TransferEvent) -> list[str]:
        origin = java_host_address(event.client) if event.client else None
        return r.subject_principals(event.uid, event.gids or (event.uid,), event.username, origin,
                                    (event.extra or {}).get("macaroon"))

    @staticmethod
    def _storage_info(event: TransferEvent) -> str | None:
        extra = event.extra or {}
        return r.storage_info_string(extra.get("storage_class"), extra.get("hsm_type") or extra.get("hsm"))

    @staticmethod
    def _protocol_info(event: TransferEvent) -> r.ProtocolInfo:
        extra = event.extra or {}
        protocol = str(extra.get("protocol") or "Http")
        host = java_host_address(event.client) if event.client else ""
        port = extra.get("client_port") or 0
        remote = extra.get("remote")
        if remote:  # a third-party copy: the mover's peer is the remote endpoint
            try:
                parts = urlsplit(str(remote))
                if parts.hostname:
                    host = java_host_address(parts.hostname)
                    port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                pass
        return r.ProtocolInfo(protocol, host, int(port))

    @staticmethod
    def _status(event: TransferEvent) -> r.Status:
        return r.Status(event.status, event.message)

    def _door_session(self, event: TransferEvent) -> str:
        return self.door.transaction(event.started_ms, self._next())

    def _mover(self, event: TransferEvent) -> r.MoverInfo:
        elapsed = max(0, event.finished_ms - event.started_ms)
        stats = None
        if event.transferred > 0:
            active = max(1, elapsed)  # never divide by a zero clock reading
            stats = r.IoStats(mean_bandwidth=event.transferred * 1000.0 / active, idle_ms=0, active_ms=elapsed)
        is_write = event.kind == "upload"
        return r.MoverInfo(
            cell=self.pool, date_ms=event.finished_ms,
            session=self.pool.transaction(event.finished_ms, self._next()),
            subject=self._subject(event), pnfsid=event.inode_id, file_size=event.size,
            transfer_size=event.transferred, transfer_time=elapsed, is_write=is_write,
            protocol_info=self._protocol_info(event),
            initiator=self._door_session(event), billing_path=event.path, transfer_path=event.path,
            storage_info=self._storage_info(event), status=self._status(event),
            read=None if is_write else stats, write=stats if is_write else None,
            local_endpoint=(event.extra or {}).get("local_endpoint"),
        )

    def _request(self, event: TransferEvent, mover: r.MoverInfo) -> r.DoorRequestInfo:
        client = java_host_address(event.client) if event.client else "unknown"
        return r.DoorRequestInfo(
            cell=self.door, date_ms=event.finished_ms, session=mover.initiator, subject=mover.subject,
            client=client, client_chain=client, uid=event.uid,
            gid=event.gids[0] if event.gids else event.uid, owner=event.username or None,
            pnfsid=event.inode_id, file_size=event.size, billing_path=event.path, transfer_path=event.path,
            session_duration=max(0, event.finished_ms - event.started_ms), storage_info=mover.storage_info,
            status=self._status(event), mover=mover,
        )

    def _remove(self, event: TransferEvent) -> r.DoorRequestInfo:
        return r.DoorRequestInfo(
            cell=self.door, date_ms=event.finished_ms, session=self.door.transaction(event.finished_ms, self._next()),
            subject=self._subject(event), client=java_host_address(event.client) if event.client else "unknown",
            uid=event.uid, gid=event.gids[0] if event.gids else event.uid, owner=event.username or None,
            pnfsid=event.inode_id, file_size=event.size, billing_path=event.path, transfer_path=event.path,
            msg_type="remove", session_duration=0, client_chain="unknown", status=self._status(event),
        )

    def _storage(self, event: TransferEvent) -> r.StorageInfoMsg:
        extra = event.extra or {}
        instance = extra.get("hsm_instance") or extra.get("hsm")
        hsm_type = extra.get("hsm_type") or instance
        hsm = None
        if hsm_type:
            hsm = r.HsmInfo(str(hsm_type), str(instance), str(extra.get("hsm_provider") or "copy"))
        locations = extra.get("locations")
        if locations is None and extra.get("hsm_uri"):
            locations = [extra["hsm_uri"]]
        return r.StorageInfoMsg(
            msg_type=event.kind, cell=self.pool, date_ms=event.finished_ms,
            transaction=self.pool.transaction(event.finished_ms, self._next()), pnfsid=event.inode_id,
            file_size=event.size, storage_info=self._storage_info(event),
            transfer_time=max(0, event.finished_ms - event.started_ms), billing_path=event.path,
            status=self._status(event), hsm=hsm,
            locations=[str(x) for x in locations] if locations is not None else [],
        )
