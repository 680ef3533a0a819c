"""What ``start_from`` costs a new watcher at start-up: ``DCacheStorageEventTrigger.run()`` on a directory
that already holds ``--files`` (10,000) files, against the bundled service.

One service is started (plain HTTP on 127.0.0.1, data in ``/dev/shm``); the files are uploaded by the
``trigger_events`` benchmark's uploader process. Then, each with its own connection id (hence its own
watch id, channel and state) and an in-memory ``asset_state_store`` as the trigger tests use:

* **now** (the default): the first listing only remembers the files; time until the watch is
  subscribed and its starting point is stored, and the events it yields (none expected).
* **existing**: the first listing reports every file. Time until the listing is done (the watch is
  subscribed), until the last file is yielded in a TriggerEvent, the number of batches (non-empty and
  flush), the largest batch in events and JSON bytes (caps: ``batch_max_events``/``batch_max_bytes``),
  the HTTP requests of the start, and the stored state's size. Default pacing.
* **restart**: the *existing* watcher is stopped once its cursor is stored and started again with the
  same state and the same ``start_from``: the time to resume, the files reported again (none
  expected: the policy is applied once, a stored watermark is caught up from instead) and the one
  empty flush batch a resumed watcher yields (``docs/triggers.md`` §10).

Run with the venv's python::

    .venv/bin/python benchmarks/trigger_start.py [--files 10000] [--rate 400]
    .venv/bin/airflow-dcache bench trigger_start ...

Exit status: 0 when every check passes (each file reported exactly once, caps kept, nothing re-listed
on restart, one resume flush), 1 when one fails, 2 when a phase failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also importable as benchmarks.trigger_start
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, run_async_benchmark
from trigger_events import ACTOR, REQUESTS, USER, MemoryStore, Service, _cancel, install_request_counter, upload

COMMIT_WAIT_S = 7.0  # past the trigger's COMMIT_DELAY (5 s) and its one-write-per-second limit


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Pump:
    """Drives one trigger's ``run()`` in a task (its own request-counting actor) and records every yield."""

    def __init__(self, trigger: Any, store: MemoryStore, actor: str) -> None:
        trigger.asset_state_store = store
        self.trigger, self.store, self.actor = trigger, store, actor
        self.started = time.monotonic()
        self.yielded: dict[str, float] = {}  # file name -> first yield (monotonic)
        self.reported = 0  # events in all yields, repeats included
        self.batches: list[tuple[int, int, bool]] = []  # (events, JSON bytes, flush)
        token = ACTOR.set(actor)
        try:
            self.task = asyncio.create_task(self._run())
        finally:
            ACTOR.reset(token)

    async def _run(self) -> None:
        async for event in self.trigger.run():
            now = time.monotonic()
            payload = event.payload
            self.batches.append((payload["count"], len(json.dumps(payload, separators=(",", ":"))),
                                 bool(payload["flush"])))
            self.reported += payload["count"]
            for item in payload["events"]:
                self.yielded.setdefault(item["name"], now)

    async def until(self, what: str, predicate: Any, timeout: float) -> float:
        """Seconds from the start until ``predicate()``; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic() - self.started
            if self.task.done():
                raise RuntimeError(f"{self.actor}: the trigger stopped: {self.task.exception()!r}")
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{self.actor}: not {what} after {timeout:.0f} s")

    def subscribed(self) -> bool:
        watch = self.trigger._watch
        return watch is not None and watch.subscribed_channel is not None

    async def stop(self) -> None:
        await _cancel(self.task)


def _state_summary(store: MemoryStore) -> dict[str, Any]:
    state = next(iter(store.data.values()), None) or {}
    return {"bytes": len(json.dumps(state, separators=(",", ":"))), "seen_keys": len(state.get("seen", {})),
            "start_from": state.get("start_from")}


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
    from airflow_dcache.triggers import DCacheStorageEventTrigger

    install_request_counter()
    service = Service(base)
    result: dict[str, Any] = {"files": args.files, "errors": []}
    try:
        directory = f"/home/{USER}/start-{uuid.uuid4().hex[:8]}"
        setup = DCacheAsyncHook(service.connection("bench_start_setup"))
        await setup.mkdir(directory)
        names = [f"e{i:06d}.h5" for i in range(args.files)]
        progress(f"uploading {len(names)} files at {args.rate:g}/s")
        t0 = time.monotonic()
        await upload(service, directory, names, args.rate, size=args.size)
        result["upload_s"] = round(time.monotonic() - t0, 1)
        listed = await setup.list_dir(directory)
        await setup.aclose()
        if len(listed) != len(names):
            raise RuntimeError(f"{len(listed)} of {len(names)} files in {directory}")

        def make(conn: str, start_from: str) -> Any:
            return DCacheStorageEventTrigger(dcache_conn_id=conn, paths=[directory], include=["*.h5"],
                                             start_from=start_from, max_directories=args.max_directories)

        # -- now: the first listing only remembers
        progress("phase now")
        store = MemoryStore()
        pump = Pump(make(service.connection("bench_start_now"), "now"), store, "start:now")
        listed_s = await pump.until("subscribed", pump.subscribed, args.timeout)
        stored_s = await pump.until("state stored", lambda: bool(store.data), args.timeout)
        await asyncio.sleep(args.settle)
        await pump.stop()
        result["now"] = {"listed_s": listed_s, "state_stored_s": stored_s, "events_reported": pump.reported,
                         "requests": sum(REQUESTS["start:now"].values()), "state": _state_summary(store)}

        # -- existing: the first listing reports every file
        progress("phase existing")
        store = MemoryStore()
        conn = service.connection("bench_start_existing")
        pump = Pump(make(conn, "existing"), store, "start:existing")
        listed_s = await pump.until("subscribed", pump.subscribed, args.timeout)
        all_s = await pump.until("all files yielded", lambda: len(pump.yielded) >= len(names), args.timeout)
        await asyncio.sleep(COMMIT_WAIT_S)  # the flush batch (3 s) and the cursor commit past the last batch
        await pump.stop()
        requests = dict(REQUESTS["start:existing"])
        full = [b for b in pump.batches if b[0]]
        trigger = pump.trigger
        result["existing"] = {
            "listed_s": listed_s, "all_yielded_s": all_s, "events_per_s": len(names) / all_s,
            "files_yielded": len(pump.yielded), "events_reported": pump.reported,
            "batches": len(full), "flush_batches": sum(1 for b in pump.batches if b[2]),
            "max_batch_events": max((b[0] for b in full), default=0),
            "max_batch_bytes": max((b[1] for b in full), default=0),
            "caps": {"batch_max_events": trigger.batch_max_events, "batch_max_bytes": trigger.batch_max_bytes},
            "requests": sum(requests.values()), "requests_by_kind": requests, "state": _state_summary(store),
        }

        # -- restart: same state, same policy: resume, nothing listed again
        progress("phase restart")
        pump = Pump(make(conn, "existing"), store, "start:restart")
        resumed_s = await pump.until("subscribed", pump.subscribed, args.timeout)
        flush_s = await pump.until("the resume flush batch", lambda: any(b[2] for b in pump.batches), 30)
        await asyncio.sleep(args.settle)
        await pump.stop()
        result["restart"] = {"resumed_s": resumed_s, "flush_s": flush_s, "events_reported": pump.reported,
                             "flush_batches": sum(1 for b in pump.batches if b[2]),
                             "requests": sum(REQUESTS["start:restart"].values())}
    except Exception as exc:
        result["errors"].append(repr(exc))
    finally:
        service.stop()
    return result


def build_table(result: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    rows: list[list[object]] = []
    checks: dict[str, bool] = {}
    n = result["files"]

    def verdict(name: str, ok: bool) -> str:
        checks[name] = ok
        return "PASS" if ok else "FAIL"

    now, ex, rs = result.get("now"), result.get("existing"), result.get("restart")
    if now:
        rows.append([f'start_from="now": listing {n:,} files, watch subscribed (s)', f"{now['listed_s']:.1f}", "", ""])
        rows.append(['start_from="now": starting point stored (s)', f"{now['state_stored_s']:.1f}", "", ""])
        rows.append(['start_from="now": files reported', now["events_reported"], "0",
                     verdict("now reports nothing", now["events_reported"] == 0)])
    if ex:
        rows.append([f'start_from="existing": listing {n:,} files, watch subscribed (s)', f"{ex['listed_s']:.1f}",
                     "", ""])
        rows.append(['start_from="existing": last file yielded (s)', f"{ex['all_yielded_s']:.1f}", "", ""])
        rows.append(['start_from="existing": files/s, start to last yield', f"{ex['events_per_s']:,.0f}", "", ""])
        ok = ex["files_yielded"] == n and ex["events_reported"] == n
        rows.append(['start_from="existing": files reported (each once)', f"{ex['events_reported']:,}", f"{n:,}",
                     verdict("each file once", ok)])
        rows.append(['start_from="existing": batches (+ flush)', f"{ex['batches']} (+{ex['flush_batches']})", "", ""])
        caps = ex["caps"]
        ok = ex["max_batch_events"] <= caps["batch_max_events"] and ex["max_batch_bytes"] <= caps["batch_max_bytes"]
        rows.append(['start_from="existing": largest batch, events / KiB',
                     f"{ex['max_batch_events']} / {ex['max_batch_bytes'] / 1024:.0f}",
                     f"<= {caps['batch_max_events']} / {caps['batch_max_bytes'] / 1024:.0f}",
                     verdict("batch caps", ok)])
        rows.append(['start_from="existing": HTTP requests at start', ex["requests"], "", ""])
        rows.append(['start_from="existing": stored state, KiB (seen keys)',
                     f"{ex['state']['bytes'] / 1024:.0f} ({ex['state']['seen_keys']:,})", "", ""])
    if rs:
        rows.append(["restart with the stored state: resumed (s)", f"{rs['resumed_s']:.1f}", "", ""])
        rows.append(["restart with the stored state: files reported again", rs["events_reported"], "0",
                     verdict("not re-listed", rs["events_reported"] == 0)])
        rows.append(["restart with the stored state: empty flush batches (s)",
                     f"{rs['flush_batches']} ({rs['flush_s']:.1f} s)", "1", verdict("one resume flush",
                                                                                  rs["flush_batches"] == 1)])
    return format_table(["measure", "value", "expected", "result"], rows), checks


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="airflow-dcache bench trigger_start", description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000, help="files already in the watched directory")
    p.add_argument("--rate", type=float, default=400.0, help="uploads/s while preparing them (open loop)")
    p.add_argument("--size", type=int, default=256, help="bytes per file")
    p.add_argument("--max-directories", type=int, default=1000, help="the trigger's max_directories")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait for stray events after a start")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on each wait (s)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the service's data (default /dev/shm)")
    p.add_argument("--out", type=Path, default=None, help="JSON results path (default benchmarks/results/)")
    args = p.parse_args(list(argv))
    if not 1 <= args.files <= 200_000:
        p.error("--files must be between 1 and 200,000")
    if not 0 < args.rate <= 2000:
        p.error("--rate must be in (0, 2000]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_async_benchmark("trigger_start", args, run, build_table, tmp_dir=args.tmp_dir, extra=None,
                               hide_settings=())


if __name__ == "__main__":
    sys.exit(main())
