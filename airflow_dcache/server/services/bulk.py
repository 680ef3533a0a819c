"""dCache's bulk service: PIN, UNPIN, STAGE, RELEASE, DELETE, UPDATE_QOS and LOG_TARGET over many paths.

Requests are stored before they are acknowledged and executed in the background with the
submitter's own rights; on restart every unfinished request resumes where it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from airflow_dcache.macaroons.caveats import CaveatError, parse_duration
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServiceError,
    TooManyRequests,
)
from airflow_dcache.server.services.jsonbody import parse_json
from airflow_dcache.server.services.login import Grant, Login
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.tape import TapeService, lifetime_ms, normalise_qos
from airflow_dcache.server.storage.bulk_db import ArchivedRequest, BulkDB, BulkRequestRow, BulkTargetRow
from airflow_dcache.server.storage.namespace_db import now_ms

log = logging.getLogger(__name__)

ACTIVITIES = ("PIN", "UNPIN", "STAGE", "RELEASE", "DELETE", "UPDATE_QOS", "LOG_TARGET")
EXPANSIONS = {"NONE": 500, "TARGETS": 10, "ALL": 1}  # max targets per request, as dCache's defaults
FINISHED = ("COMPLETED", "CANCELLED")
MAX_UNFINISHED_PER_USER = 5000
DEFAULT_PIN_LIFETIME, DEFAULT_PIN_UNIT = 5, "MINUTES"  # bulk.plugin!pin.default-lifetime(.unit)
DEFAULT_STAGE_MS = 2 * 86_400_000
ARCHIVE_AFTER_S = 14 * 86_400  # dCache's bulk.limits.archiver-window
ARCHIVER_PERIOD_S = 6 * 3600  # and how often its archiver runs
_CONCURRENCY = 32
_KEYS = {"activity", "target", "target_prefix", "expand_directories", "cancel_on_failure", "clear_on_success",
         "clear_on_failure", "prestore", "arguments"}


def _canonical(key: str) -> str:
    """camelCase, snake_case and kebab-case spellings name the same key."""
    out = []
    for ch in key:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append("_" if ch == "-" else ch)
    canonical = "".join(out)
    return "prestore" if canonical == "pre_store" else canonical


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{name} must be true or false")


def login_to_json(login: Login) -> str:
    doc = asdict(login)
    doc["activities"] = sorted(a.value for a in login.activities)
    doc["expiry"] = login.expiry.isoformat() if login.expiry else None
    if login.grants is not None:  # a bearer token's per-path scopes
        doc["grants"] = [{"path": g.path, "activities": sorted(a.value for a in g.activities)} for g in login.grants]
    return json.dumps(doc)


def login_from_json(text: str) -> Login:
    doc = json.loads(text)
    doc["gids"] = tuple(doc["gids"])
    doc["activities"] = frozenset(Activity(a) for a in doc["activities"])
    doc["expiry"] = datetime.fromisoformat(doc["expiry"]) if doc["expiry"] else None
    if doc.get("grants") is not None:
        doc["grants"] = tuple(Grant(g["path"], frozenset(Activity(a) for a in g["activities"])) for g in doc["grants"])
    return Login(**doc)


def pin_lifetime_ms(args: dict[str, str]) -> int | None:
    """dCache's PinActivity.configure: ``lifetime`` (default 5) in ``lifetimeUnit``, any TimeUnit name
    (default MINUTES, also when only ``lifetime`` is given).

    ``-1`` ``MILLISECONDS`` is a permanent pin (None: no expiry), as dCache's pin manager reads a
    lifetime of -1 ms (11.1). Any other negative lifetime is refused: dCache would store a pin that
    expired before it was made.
    """
    try:
        value = float(args.get("lifetime", DEFAULT_PIN_LIFETIME))
    except ValueError:
        raise BadRequest("arguments.lifetime must be a number") from None
    if value < 0:
        if int(value) == -1 and args.get("lifetimeUnit") == "MILLISECONDS":
            return None
        raise BadRequest("arguments.lifetime must be a non-negative number, or -1 with lifetimeUnit "
                         "MILLISECONDS for a permanent pin")
    return lifetime_ms(value, args.get("lifetimeUnit", DEFAULT_PIN_UNIT), field="arguments.lifetime",
                       unit_field="arguments.lifetimeUnit")


def _error_type(err: Exception) -> str:
    return "diskCacheV111.util.CacheException" if isinstance(err, ServiceError) else type(err).__name__


class BulkService:
    def __init__(self, db: BulkDB, namespace: NamespaceService, tape: TapeService, *,
                 archive_after_s: float = ARCHIVE_AFTER_S,
                 max_requests_per_user: int = MAX_UNFINISHED_PER_USER) -> None:
        self.max_requests_per_user = max_requests_per_user  # bulk.limits.max-requests-per-user
        self.db = db
        self.ns = namespace
        self.tape = tape
        self.archive_after_s = archive_after_s
        self._running: dict[str, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(_CONCURRENCY)
        self._archiver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for row in self.db.requests(statuses=["QUEUED", "STARTED", "CANCELLING"]):
            self._launch(row.id)
        self._archiver = asyncio.create_task(self._archive_forever(), name="bulk-archiver")

    async def _archive_forever(self) -> None:
        """Archive finished requests nobody cleared once older than the window (dCache: 14 days, every 6 h).

        A failing pass (a locked or full disk) is logged and retried next period; the archiver never dies.
        """
        period = min(ARCHIVER_PERIOD_S, max(0.2, self.archive_after_s / 2))
        while True:
            try:
                await self.archive_expired()
            except Exception:
                log.exception("bulk archiver pass failed; retrying in %.0f s", period)
            await asyncio.sleep(period)

    async def archive_expired(self) -> int:
        """One archiver pass; yields to the event loop between requests so a large backlog never stalls it."""
        cutoff = now_ms() - int(self.archive_after_s * 1000)
        done = 0
        for rid in self.db.finished_before(cutoff):
            if rid not in self._running:
                done += self.db.archive(rid)
            await asyncio.sleep(0)
        return done

    async def stop(self) -> None:
        if self._archiver is not None:
            self._archiver.cancel()
            await asyncio.gather(self._archiver, return_exceptions=True)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- submission ------------------------------------------------------------------------------
    def submit(self, login: Login, doc: dict[str, Any], *, kind: str = "bulk") -> str:
        req = self._parse(doc)
        if self.db.count_unfinished(login.uid) >= self.max_requests_per_user:
            # dCache: BulkQuotaExceededException, which the frontend answers with 429 (not 413)
            raise TooManyRequests(f"Too many unfinished bulk requests (limit {self.max_requests_per_user})")
        rid = str(uuid.uuid4())
        prefix = req["target_prefix"]
        paths = [self._join(prefix, t) for t in req["target"]]
        self.db.insert({
            "id": rid, "owner_uid": login.uid, "owner_gid": login.primary_gid, "login": login_to_json(login),
            "activity": req["activity"], "arguments": json.dumps(req["arguments"]), "target_prefix": prefix,
            "expand": req["expand_directories"], "cancel_on_failure": int(req["cancel_on_failure"]),
            "clear_on_success": int(req["clear_on_success"]), "clear_on_failure": int(req["clear_on_failure"]),
            "status": "QUEUED", "arrived_at": now_ms(), "started_at": None, "last_modified": now_ms(), "kind": kind,
        }, paths)
        self._launch(rid)
        return rid

    @staticmethod
    def _join(prefix: str, target: str) -> str:
        if not prefix or prefix == "/":
            return target if target.startswith("/") else "/" + target
        return prefix.rstrip("/") + "/" + target.lstrip("/")

    def _parse(self, doc: dict[str, Any]) -> dict[str, Any]:
        req: dict[str, Any] = {}
        unknown = []
        for key, value in doc.items():
            canonical = _canonical(key)
            if canonical not in _KEYS:
                unknown.append(key)
            elif canonical in req:
                raise BadRequest(f"value for {canonical} defined more than once")
            else:
                req[canonical] = value
        if unknown:
            raise BadRequest(f"unsupported arguments: {sorted(unknown)}")
        activity = req.get("activity")
        if not isinstance(activity, str) or activity.upper() not in ACTIVITIES:
            raise BadRequest(f"activity must be one of {', '.join(ACTIVITIES)}")
        req["activity"] = activity.upper()
        targets = req.get("target")
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
            raise BadRequest("target must be a list of paths (or a comma-separated string)")
        if not targets:
            raise BadRequest("request contains no targets.")
        expand = str(req.get("expand_directories") or "NONE").upper()
        if expand not in EXPANSIONS:
            raise BadRequest("expand_directories must be NONE, TARGETS or ALL")
        if len(targets) > EXPANSIONS[expand]:
            # dCache 11.2.4/12.0 (BulkContentTooLargeException): 413, with BulkService's wording
            raise PayloadTooLarge(f"The number of targets {len(targets)} exceeds maximum {EXPANSIONS[expand]} "
                                  f"for directory expansion {expand}.")
        prefix = req.get("target_prefix") or ""
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise BadRequest("target_prefix must be an absolute path")
        args = req.get("arguments") or {}
        if not isinstance(args, dict):
            raise BadRequest("arguments must be a JSON object")
        args = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
        self._check_arguments(req["activity"], args)
        return {"activity": req["activity"], "target": targets, "target_prefix": prefix,
                "expand_directories": expand, "arguments": args,
                "cancel_on_failure": _bool(req.get("cancel_on_failure", False), "cancel_on_failure"),
                "clear_on_success": _bool(req.get("clear_on_success", False), "clear_on_success"),
                "clear_on_failure": _bool(req.get("clear_on_failure", False), "clear_on_failure")}

    @staticmethod
    def _check_arguments(activity: str, args: dict[str, str]) -> None:
        """Validate at submission so a bad request is a 400, not a request of failed targets."""
        if activity == "PIN":
            pin_lifetime_ms(args)
        if activity == "RELEASE" and not args.get("id"):
            raise BadRequest("RELEASE requires arguments.id (the stage request id)")
        if activity == "UPDATE_QOS":
            if "qosPolicy" in args:
                raise BadRequest("QoS policies are not supported by this service; use targetQos")
            normalise_qos(args.get("targetQos", ""))
        if activity == "STAGE" and "diskLifetime" in args:
            try:
                lifetimes = parse_json(args["diskLifetime"])  # bounded: json.loads let deep nesting 500
                assert isinstance(lifetimes, dict)
                for value in lifetimes.values():
                    parse_duration(value)
            except (ValueError, AssertionError, CaveatError, TypeError, BadRequest):
                raise BadRequest("arguments.diskLifetime must be a JSON object of path to ISO-8601 duration") from None
        if activity == "DELETE" and "skipDirs" in args:
            _bool(args["skipDirs"], "arguments.skipDirs")

    # -- execution -------------------------------------------------------------------------------
    def _launch(self, rid: str) -> None:
        if rid not in self._running:
            self._running[rid] = asyncio.create_task(self._run(rid))

    async def _run(self, rid: str) -> None:
        try:
            row = self.db.get(rid)
            if row is None:
                return
            if row.status == "CANCELLING":
                self.db.cancel_targets(rid)
                self._finish(row, "CANCELLED")
                return
            self.db.set_status(rid, "STARTED", started=True)
            login = login_from_json(row.login)
            await self._expand(row, login)
            work = [t for t in self.db.targets(rid) if t.state in ("CREATED", "READY", "RUNNING")]
            await asyncio.gather(*(self._one(row, login, t) for t in work))
            row = self.db.get(rid)
            if row is not None:
                self._finish(row, "CANCELLED" if row.status == "CANCELLING" else "COMPLETED")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bulk request %s failed", rid)
        finally:
            self._running.pop(rid, None)

    async def _expand(self, row: BulkRequestRow, login: Login) -> None:
        """Add children of directory targets (TARGETS: one level, ALL: recursively), files first."""
        if row.expand == "NONE":
            return
        known = {t.path for t in self.db.targets(row.id)}
        queue = list(known)
        while queue:
            path = queue.pop(0)
            try:
                entry = self.ns.stat(login, path)
                if not entry.inode.is_dir:
                    continue
                children = self.ns.list_dir(login, path)
            except ServiceError:
                continue
            for child in sorted(children, key=lambda c: c.inode.is_dir):
                if child.path not in known:
                    known.add(child.path)
                    self.db.add_target(row.id, child.path)
                    if child.inode.is_dir and row.expand == "ALL":
                        queue.append(child.path)

    async def _one(self, row: BulkRequestRow, login: Login, target: BulkTargetRow) -> None:
        async with self._limit:
            current = self.db.get(row.id)
            if current is None or current.status == "CANCELLING":
                return
            fresh = next((t for t in self.db.targets(row.id, target.tid, 1)), None)
            if fresh is None or fresh.state == "CANCELLED":
                return
            self.db.update_target(target.tid, "RUNNING")
            try:
                if login.expiry is not None and login.expiry <= datetime.now(login.expiry.tzinfo):
                    raise PermissionDenied("the credential of this request has expired")
                skipped = await self._activity(row.activity)(row, login, target.path)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                message = err.message if isinstance(err, ServiceError) else "internal error"
                if not isinstance(err, ServiceError):
                    log.exception("bulk target %s of %s failed", target.path, row.id)
                self.db.update_target(target.tid, "FAILED", error=(_error_type(err), message))
                if row.cancel_on_failure:
                    self.cancel(row.id)
                return
            if self._target_state(row.id, target.tid) == "RUNNING":
                self.db.update_target(target.tid, "SKIPPED" if skipped else "COMPLETED")

    def _target_state(self, rid: str, tid: int) -> str | None:
        rows = self.db.targets(rid, tid, 1)
        return rows[0].state if rows else None

    def _activity(self, name: str) -> Callable[[BulkRequestRow, Login, str], Awaitable[bool]]:
        return {"PIN": self._pin, "UNPIN": self._unpin, "STAGE": self._stage, "RELEASE": self._release,
                "DELETE": self._delete, "UPDATE_QOS": self._update_qos, "LOG_TARGET": self._log}[name]

    def _file(self, login: Login, path: str) -> bool:
        """True for a file; directories are skipped by file-only activities."""
        return not self.ns.stat(login, path).inode.is_dir

    async def _pin(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path):
            return True
        args = row.args
        entry = self.tape.pin(login, path, pin_lifetime_ms(args), args.get("id") or row.id)
        await self.tape.stage(entry.inode.id)
        return False

    async def _unpin(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path):
            return True
        self.tape.unpin(login, path, row.args.get("id"))
        return False

    async def _stage(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path):
            return True
        entry = self.ns.stat(login, path)
        if not entry.inode.on_tape:
            raise BadRequest("Cannot stage DISK only files")
        lifetimes = json.loads(row.args.get("diskLifetime", "{}"))
        duration = lifetimes.get(path) or lifetimes.get(entry.ns_path)
        lifetime = int(parse_duration(duration).total_seconds() * 1000) if duration else DEFAULT_STAGE_MS
        self.tape.pin(login, path, lifetime, row.id)
        await self.tape.stage(entry.inode.id)
        return False

    async def _release(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path):
            return True
        self.tape.unpin(login, path, row.args["id"])
        return False

    async def _delete(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path) and _bool(row.args.get("skipDirs", "false"), "skipDirs"):
            return True
        self.ns.delete(login, path)
        return False

    async def _update_qos(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        if not self._file(login, path):
            return True
        entry = self.tape.request_qos(login, path, row.args["targetQos"])
        await self.tape.settle(entry.inode.id)
        return False

    async def _log(self, row: BulkRequestRow, login: Login, path: str) -> bool:
        entry = self.ns.stat(login, path)
        log.info("bulk %s LOG_TARGET %s %s", row.id, path, entry.inode)
        return False

    def _finish(self, row: BulkRequestRow, status: str) -> None:
        self.db.set_status(row.id, status)
        targets = self.db.targets(row.id)
        failed = any(t.state == "FAILED" for t in targets)
        if (status == "COMPLETED" and not failed and row.clear_on_success) or (failed and row.clear_on_failure):
            self.db.archive(row.id)

    # -- queries and control ---------------------------------------------------------------------
    def owned(self, login: Login, rid: str) -> BulkRequestRow:
        row = self.db.get(rid)
        if row is None:
            raise NotFound(f"request {rid[:64]} not found")
        if not login.superuser and row.owner_uid != login.uid:
            raise PermissionDenied(f"request {rid[:64]} belongs to another user")
        return row

    def cancel(self, rid: str, paths: list[str] | None = None) -> None:
        row = self.db.get(rid)
        if row is None or row.status in FINISHED:
            return
        if paths is None:
            self.db.set_status(rid, "CANCELLING")
            self.db.cancel_targets(rid)
            if rid not in self._running:
                self._finish(row, "CANCELLED")
        else:
            self.db.cancel_targets(rid, paths)

    def clear(self, login: Login, rid: str, cancel_if_running: bool) -> None:
        row = self.owned(login, rid)
        if row.status not in FINISHED:
            if not cancel_if_running:
                raise BadRequest(f"request {rid} is still running; use cancelIfRunning=true")
            self.cancel(rid)
            task = self._running.get(rid)
            if task is not None:
                task.cancel()
            self.db.set_status(rid, "CANCELLED")  # it is archived now, so it must be in a terminal state
        self.db.archive(rid)  # as dCache: a cleared request moves to the archive

    def archived(self, login: Login, uid: str) -> ArchivedRequest:
        """One archived request; only its owner (uid:gid), root or an asserted admin may read it, as dCache."""
        info = self.db.archived(uid)
        if info is None:
            raise NotFound(f"archived request {uid[:64]} not found")
        if not login.superuser and info.owner != f"{login.uid}:{login.primary_gid}":
            raise PermissionDenied(f"Subject does not have permission to read archived request {uid[:64]}")
        return info

