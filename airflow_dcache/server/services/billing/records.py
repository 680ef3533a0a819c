"""Pure serializers for dCache's Kafka billing records (reference §5.3-§5.6).

Each message class mirrors the dCache message it stands for (``MoverInfoMessage``,
``DoorRequestInfoMessage``, ``StorageInfoMessage``, ``RemoveFileInfoMessage``) and each
``*_record`` function returns the record as an insertion-ordered dict in the key order of the
reference's examples; :func:`encode` writes it as org.json would. ``None`` values are dropped on
encoding, exactly as org.json drops null values, so optional fields simply stay ``None``.

Version key: door ``request``/``remove`` records use ``"VERSION"``, every other type ``"version"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from airflow_dcache.server.services.billing.javafmt import (
    JavaDouble,
    iso_offset_date_time,
    java_duration,
    to_json_bytes,
)

VERSION = "1.0"
UNKNOWN = "Unknown"  # dCache's default billingPath/transferPath


@dataclass(frozen=True)
class Cell:
    """A dCache cell address plus its type (``pool`` or ``door``)."""

    name: str
    type: str
    domain: str

    def transaction(self, epoch_ms: int, counter: int) -> str:
        """The default transaction id: ``<cellType>:<cell>@<domain>:<epochMillis>-<counter>``."""
        return f"{self.type}:{self.name}@{self.domain}:{epoch_ms}-{counter}"


@dataclass(frozen=True)
class Status:
    code: int = 0
    msg: str | None = ""

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


@dataclass(frozen=True)
class ProtocolInfo:
    """dCache's ``IpProtocolInfo`` as the mover serializer writes it."""

    protocol: str  # "Http" | "Https" | ...
    host: str  # client IP, InetAddress.getHostAddress() form
    port: int  # client port
    version_major: int = 1
    version_minor: int = 1
    transfer_tag: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "versionMajor": self.version_major, "versionMinor": self.version_minor,
                "transferTag": self.transfer_tag, "port": self.port, "host": self.host}


@dataclass(frozen=True)
class IoStats:
    """What a mover recorded for one direction: mean bandwidth (bytes/s) and idle/active time."""

    mean_bandwidth: float
    idle_ms: int
    active_ms: int


@dataclass(frozen=True)
class MoverInfo:
    """``MoverInfoMessage``: published by the pool as ``msgType`` ``transfer``."""

    cell: Cell
    date_ms: int
    session: str
    subject: Sequence[str]
    pnfsid: str
    file_size: int
    transfer_size: int
    transfer_time: int
    is_write: bool
    protocol_info: ProtocolInfo
    initiator: str
    billing_path: str = UNKNOWN
    transfer_path: str = UNKNOWN
    storage_info: str | None = None
    queuing_time: int = 0
    status: Status = field(default_factory=Status)
    read: IoStats | None = None
    write: IoStats | None = None
    local_endpoint: str | None = None
    is_p2p: bool = False


@dataclass(frozen=True)
class DoorRequestInfo:
    """``DoorRequestInfoMessage``: the door's ``request`` record (and its ``remove`` record)."""

    cell: Cell
    date_ms: int
    session: str
    subject: Sequence[str]
    client: str
    uid: int
    gid: int
    owner: str | None
    pnfsid: str | None
    file_size: int
    billing_path: str = UNKNOWN
    transfer_path: str = UNKNOWN
    msg_type: str = "request"
    session_duration: int = 0
    client_chain: str = "unknown"
    storage_info: str | None = None
    queuing_time: int = 0
    status: Status = field(default_factory=Status)
    mover: MoverInfo | None = None


@dataclass(frozen=True)
class HsmInfo:
    type: str  # e.g. "osm"
    instance: str
    provider: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "instance": self.instance, "provider": self.provider}


@dataclass(frozen=True)
class StorageInfoMsg:
    """``StorageInfoMessage``: the pool's ``store`` (flush to tape) or ``restore`` (stage) record."""

    msg_type: str  # "store" | "restore"
    cell: Cell
    date_ms: int
    transaction: str
    pnfsid: str
    file_size: int
    storage_info: str | None
    transfer_time: int
    billing_path: str = UNKNOWN
    queuing_time: int = 0
    status: Status = field(default_factory=Status)
    hsm: HsmInfo | None = None
    locations: Sequence[str] | None = None


@dataclass(frozen=True)
class PoolRemoveInfo:
    """``RemoveFileInfoMessage`` from a pool (only with ``set report remove on``)."""

    cell: Cell
    date_ms: int
    transaction: str
    pnfsid: str
    file_size: int
    reason: str
    subject: Sequence[str] = ("UidPrincipal[0]", "GidPrincipal[0,primary]")
    billing_path: str = UNKNOWN
    storage_info: str | None = None
    queuing_time: int = 0
    code: int = 0


# -- helpers ---------------------------------------------------------------------------------------


def storage_info_string(storage_class: str | None, hsm: str | None) -> str | None:
    """``"<storageClass>@<hsm>"``, or ``None`` (key omitted) when the file has no storage info."""
    if not storage_class or not hsm:
        return None
    return f"{storage_class}@{hsm}"


def subject_principals(uid: int, gids: Sequence[int], username: str | None, origin: str | None = None,
                       macaroon: str | None = None) -> list[str]:
    """The ``toString()`` of each principal of a dCache login subject; the first gid is primary."""
    principals = [f"UidPrincipal[{uid}]"]
    principals += [f"GidPrincipal[{gid},primary]" if i == 0 else f"GidPrincipal[{gid}]" for i, gid in enumerate(gids)]
    if username:
        principals.append(f"UserNamePrincipal[{username}]")
    if origin:
        principals.append(f"Origin[{origin}]")
    if macaroon:
        principals.append(f"MacaroonPrincipal[{macaroon}]")
    return principals


def _header(version_key: str, msg_type: str, cell: Cell, date_ms: int, queuing_time: int,
            tz: tzinfo | None) -> dict[str, Any]:
    return {version_key: VERSION, "msgType": msg_type, "date": iso_offset_date_time(date_ms, tz),
            "queuingTime": queuing_time}


def _cell(o: dict[str, Any], cell: Cell) -> None:
    o["cellName"] = cell.name
    o["cellType"] = cell.type
    o["cellDomain"] = cell.domain


# -- serializers -----------------------------------------------------------------------------------


def transfer_record(m: MoverInfo, tz: tzinfo | None = None) -> dict[str, Any]:
    """The pool's ``transfer`` record (``MoverInfoMessageSerializer``)."""
    o = _header("version", "transfer", m.cell, m.date_ms, m.queuing_time, tz)
    _cell(o, m.cell)
    if m.read is not None:
        o["meanReadBandwidth"] = JavaDouble(m.read.mean_bandwidth)
    if m.write is not None:
        o["meanWriteBandwidth"] = JavaDouble(m.write.mean_bandwidth)
    if m.read is not None:
        o["readIdle"] = java_duration(m.read.idle_ms)
    if m.write is not None:
        o["writeIdle"] = java_duration(m.write.idle_ms)
    if m.read is not None:
        o["readActive"] = java_duration(m.read.active_ms)
    if m.write is not None:
        o["writeActive"] = java_duration(m.write.active_ms)
    o["localEndpoint"] = m.local_endpoint
    o["status"] = m.status.to_json()
    o["session"] = m.session
    o["subject"] = list(m.subject)
    o["pnfsid"] = m.pnfsid
    o["billingPath"] = m.billing_path
    o["fileSize"] = m.file_size
    o["storageInfo"] = m.storage_info
    o["transferSize"] = m.transfer_size
    o["transferTime"] = m.transfer_time
    o["isWrite"] = "write" if m.is_write else "read"
    o["protocolInfo"] = m.protocol_info.to_json()
    o["initiator"] = m.initiator
    o["isP2p"] = m.is_p2p
    o["transferPath"] = m.transfer_path
    return o


# DoorRequestMessageSerializer drops these from the nested mover record: the door record has them.
_REDUNDANT_MOVER_KEYS = ("subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo")


def door_record(d: DoorRequestInfo, tz: tzinfo | None = None) -> dict[str, Any]:
    """The door's ``request`` or ``remove`` record (``DoorRequestMessageSerializer``, key ``VERSION``)."""
    o = _header("VERSION", d.msg_type, d.cell, d.date_ms, d.queuing_time, tz)
    _cell(o, d.cell)
    o["status"] = d.status.to_json()
    o["session"] = d.session
    o["sessionDuration"] = d.session_duration
    o["transferPath"] = d.transfer_path
    o["subject"] = list(d.subject)
    o["client"] = d.client
    o["clientChain"] = d.client_chain
    o["mappedUID"] = d.uid
    o["mappedGID"] = d.gid
    o["owner"] = d.owner
    o["pnfsid"] = d.pnfsid
    o["billingPath"] = d.billing_path
    o["fileSize"] = d.file_size
    o["storageInfo"] = d.storage_info
    if d.mover is not None:
        mover = transfer_record(d.mover, tz)
        for key in _REDUNDANT_MOVER_KEYS:
            mover.pop(key, None)
        o["moverInfo"] = mover
    return o


def storage_record(s: StorageInfoMsg, tz: tzinfo | None = None) -> dict[str, Any]:
    """The pool's ``store``/``restore`` record (``StorageInfoMessageSerializer``)."""
    if s.msg_type not in ("store", "restore"):
        raise ValueError(f"not a storage message type: {s.msg_type!r}")
    o = _header("version", s.msg_type, s.cell, s.date_ms, s.queuing_time, tz)
    o["transaction"] = s.transaction
    _cell(o, s.cell)
    o["status"] = s.status.to_json()
    o["session"] = s.transaction
    o["pnfsid"] = s.pnfsid
    o["billingPath"] = s.billing_path
    o["fileSize"] = s.file_size
    o["storageInfo"] = s.storage_info
    o["transferTime"] = s.transfer_time
    o["hsm"] = s.hsm.to_json() if s.hsm is not None else None
    o["locations"] = list(s.locations) if s.locations is not None else None
    return o


def pool_remove_record(r: PoolRemoveInfo, tz: tzinfo | None = None) -> dict[str, Any]:
    """The pool's ``remove`` record (``RemoveFileInfoMessageSerializer``); ``status.msg`` is the reason."""
    o = _header("version", "remove", r.cell, r.date_ms, r.queuing_time, tz)
    o["transaction"] = r.transaction
    _cell(o, r.cell)
    o["status"] = Status(r.code, r.reason).to_json()
    o["session"] = r.transaction
    o["subject"] = list(r.subject)
    o["pnfsid"] = r.pnfsid
    o["billingPath"] = r.billing_path
    o["fileSize"] = r.file_size
    o["storageInfo"] = r.storage_info
    return o


def encode(record: dict[str, Any]) -> bytes:
    """The record's Kafka value: UTF-8 org.json text, nulls omitted."""
    return to_json_bytes(record)
