"""Storage-events benchmark: how fast an upload becomes an SSE notification, and what channels cost.

Phases, all against one server started for the run (plain HTTP on 127.0.0.1):

* **rate**: PUTs of small files through the WebDAV door, paced open-loop at 10, 100 and 1,000
  uploads/s (a PUT is started at its scheduled time whether or not earlier ones finished), into a
  directory watched by one SSE channel for ``IN_CLOSE_WRITE``. Latency = time the event is read by
  the SSE client - the upload's scheduled start. It therefore includes the upload itself and any
  queueing in the server; it also shows when the client fell behind its schedule (``lag``).
* **fan-out**: 1,000 channels (spread over several users, since a user may have 128), each
  subscribed to the same directory and connected. Server RSS is read before the channels exist and
  once they are all connected and idle. Then uploads at a low rate; per upload, the latency until
  *every* channel has the event, and per (upload, channel) delivery latency.
* **polling reference**: the same kind of uploads, detected instead by a client that lists the
  directory (``GET /api/v1/namespace/{dir}?children=true``) every 1 s and every 100 ms.

SSE clients run in a separate process (this script with ``--receiver``) so the uploader's event
loop does not delay reading events; both processes time with CLOCK_MONOTONIC, which is system-wide.

Run with the venv's python (the users file needs ``airflow_dcache``'s password hashing)::

    .venv/bin/python benchmarks/events.py [--rates 10,100,1000] [--duration 10] [--channels 1000]
    .venv/bin/airflow-dcache bench events ...

Exit status: 0 all targets met, 1 a target missed, 2 a phase failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also importable as benchmarks.events
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from _common import (
    LOOPBACK,
    MB,
    RssSampler,
    default_results_path,
    exit_on_termination,
    format_table,
    machine_info,
    read_status_bytes,
    stop_process,
    write_json,
)

P99_TARGET_MS = 50.0  # at the highest rate
RSS_TARGET_BYTES = 100 * MB  # extra server RSS for the fan-out's idle channels
CHANNELS_PER_USER = 100  # below dCache's 128 per user
SERVER_START_TIMEOUT = 60.0
DRAIN_SECONDS = 10.0  # how long to wait for late events after the last upload
SCRIPT = Path(__file__).resolve()


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------


class Server:
    """Our server as a subprocess on free ports, with ``users`` bench users sharing one password."""

    def __init__(self, base: Path, users: int) -> None:
        from airflow_dcache.server.storage.users import hash_password, write_users

        self.password = secrets.token_urlsafe(12)
        self.users = [f"bench{i}" for i in range(users)]
        hashed = hash_password(self.password, iterations=1000)
        users_file = base / "users.json"
        write_users(
            users_file,
            [
                {"username": name, "uid": 2000 + i, "gids": [2000], "home": f"/home/{name}", "password_hash": hashed}
                for i, name in enumerate(self.users)
            ],
        )
        self.log = (base / "server.log").open("w")
        cmd = [
            sys.executable,
            "-m",
            "airflow_dcache.cli",
            "server",
            "--data-dir",
            str(base / "data"),
            "--users",
            str(users_file),
            "--host",
            LOOPBACK,
            "--webdav-port",
            "0",
            "--frontend-port",
            "0",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, SERVER_START_TIMEOUT)
        if not line:
            raise RuntimeError(f"server did not start; see {base / 'server.log'}")
        info = json.loads(line)
        self.webdav, self.api, self.pid = info["webdav"], info["api"], int(info["pid"])

    def auth(self, user: str | None = None) -> tuple[str, str]:
        return (user or self.users[0], self.password)

    def rss(self) -> int:
        return read_status_bytes(self.pid, "VmRSS") or 0

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)
        self.log.close()


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _readline(stream: Any, timeout: float) -> str:
    """One line from a subprocess pipe, bounded in time (a thread does the blocking read)."""
    import threading

    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


# --------------------------------------------------------------------------------------------------
# Receiver process: SSE clients that record when each IN_CLOSE_WRITE arrives
# --------------------------------------------------------------------------------------------------


async def _receive(config: dict[str, Any]) -> None:
    import aiohttp

    channels: list[str] = config["channels"]
    auths = [basic(u, p) for u, p in config["auths"]]
    got: dict[str, list[tuple[int, float]]] = {}
    connected = 0
    errors: list[str] = []
    ready = asyncio.Event()

    async def one(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal connected
        try:
            async with session.get(channels[index], headers={**auths[index], "Accept": "text/event-stream"}) as resp:
                if resp.status != 200:
                    errors.append(f"{resp.status} for {channels[index]}")
                    return
                connected += 1
                if connected == len(channels):
                    ready.set()
                event = ""
                while True:
                    line = await resp.content.readline()
                    if not line:
                        return
                    if line.startswith(b"event: "):
                        event = line[7:].strip().decode()
                    elif line.startswith(b"data: ") and event == "inotify":
                        t = time.monotonic()
                        name = json.loads(line[6:])["event"].get("name")
                        if name is not None:
                            got.setdefault(name, []).append((index, t))
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors.append(repr(exc))

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(len(channels))]
        try:
            await asyncio.wait_for(ready.wait(), timeout=60)
        except TimeoutError:
            errors.append(f"only {connected} of {len(channels)} streams connected")
        print(json.dumps({"ready": connected, "errors": errors[:5]}), flush=True)
        loop = asyncio.get_running_loop()
        # Wait for "stop" on stdin (bounded by the configured maximum lifetime).
        stop = loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.wait([stop], timeout=config["max_seconds"])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"events": got, "errors": errors[:5]}), flush=True)


class Receiver:
    def __init__(self, channels: list[str], auths: list[tuple[str, str]], max_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"channels": channels, "auths": auths, "max_seconds": max_seconds}) + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, 90)
        doc = json.loads(line) if line else {"ready": 0, "errors": ["receiver did not answer"]}
        if doc["ready"] != len(channels):
            self.close()
            raise RuntimeError(f"receiver connected {doc['ready']} of {len(channels)} streams: {doc['errors']}")

    def results(self) -> dict[str, list[tuple[int, float]]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, 60)
        self.close()
        if not line:
            raise RuntimeError("receiver gave no results")
        return {k: [(int(i), float(t)) for i, t in v] for k, v in json.loads(line)["events"].items()}

    def close(self) -> None:
        stop_process(self.proc, timeout=10)


# --------------------------------------------------------------------------------------------------
# Client side of the phases
# --------------------------------------------------------------------------------------------------


class Client:
    def __init__(self, server: Server) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        self.server = server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=60)
        )

    def _auth(self, user: str | None = None) -> dict[str, str]:
        return basic(*self.server.auth(user))

    async def close(self) -> None:
        await self.session.close()

    async def mkdir(self, parent: str, name: str) -> str:
        async with self.session.post(
            f"{self.server.api}/namespace{parent}", json={"action": "mkdir", "name": name}, headers=self._auth()
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"mkdir {parent}/{name}: {r.status} {await r.text()}")
        return f"{parent}/{name}"

    async def channel_with_watch(self, user: str, path: str) -> str:
        async with self.session.post(f"{self.server.api}/events/channels", headers=self._auth(user)) as r:
            if r.status != 201:
                raise RuntimeError(f"create channel: {r.status} {await r.text()}")
            url = r.headers["Location"]
        async with self.session.post(
            f"{url}/subscriptions/inotify", headers=self._auth(user), json={"path": path, "flags": ["IN_CLOSE_WRITE"]}
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"subscribe: {r.status} {await r.text()}")
        return url

    async def uploads(
        self, directory: str, count: int, rate: float, body: bytes, jitter: bool = False
    ) -> dict[str, dict[str, float]]:
        """Open-loop PUTs: upload i starts at t0 + i/rate (plus a uniform random part of its slot with
        ``jitter``, so uploads have no fixed phase relative to a poller). Returns timings (monotonic)."""
        timings: dict[str, dict[str, float]] = {}
        failures: list[str] = []
        auth = self._auth()

        async def put(name: str, scheduled: float) -> None:
            started = time.monotonic()
            try:
                async with self.session.put(f"{self.server.webdav}{directory}/{name}", data=body, headers=auth) as r:
                    await r.read()
                    if r.status != 201:
                        failures.append(f"{name}: {r.status}")
                        return
            except (TimeoutError, self.aiohttp.ClientError) as exc:
                failures.append(f"{name}: {exc!r}")
                return
            timings[name] = {"scheduled": scheduled, "started": started, "done": time.monotonic()}

        t0 = time.monotonic() + 0.1
        tasks = []
        for i in range(count):
            scheduled = t0 + (i + (random.random() if jitter else 0.0)) / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"u{i:06d}"
            tasks.append(asyncio.create_task(put(name, scheduled)))
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        if failures:
            raise RuntimeError(f"{len(failures)} uploads failed, e.g. {failures[:3]}")
        return timings

    async def poll(
        self, directory: str, interval: float, stop: asyncio.Event, seen: dict[str, float], costs: list[float]
    ) -> None:
        """List the directory every ``interval`` until ``stop``; remember when each name first showed up."""
        url = f"{self.server.api}/namespace{directory}?children=true"
        auth = self._auth()
        next_at = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            async with self.session.get(url, headers=auth) as r:
                doc = await r.json()
            now = time.monotonic()
            costs.append(now - started)
            for child in doc.get("children", []):
                seen.setdefault(child["fileName"], now)
            next_at += interval
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - time.monotonic()))


# --------------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------------


async def rate_phase(server: Server, client: Client, rate: float, duration: float, body: bytes) -> dict[str, Any]:
    directory = await client.mkdir(f"/home/{server.users[0]}", f"rate-{int(rate)}-{uuid.uuid4().hex[:6]}")
    channel = await client.channel_with_watch(server.users[0], directory)
    count = max(1, int(rate * duration))
    receiver = Receiver([channel], [server.auth()], max_seconds=duration + 120)
    try:
        timings = await client.uploads(directory, count, rate, body)
        await asyncio.sleep(min(DRAIN_SECONDS, 1.0 + count / 2000))  # late events; the receiver keeps reading
        events = receiver.results()
    finally:
        receiver.close()
    latencies = [events[n][0][1] - t["scheduled"] for n, t in timings.items() if n in events]
    after_response = [events[n][0][1] - t["done"] for n, t in timings.items() if n in events]
    lag = [t["started"] - t["scheduled"] for t in timings.values()]
    put_time = [t["done"] - t["started"] for t in timings.values()]
    return {
        "rate": rate,
        "duration_s": duration,
        "uploads": count,
        "received": len(latencies),
        "latency": summary_ms(latencies),
        "after_put_response": summary_ms(after_response),
        "put_time": summary_ms(put_time),
        "client_lag": summary_ms(lag),
    }


async def fanout_phase(
    server: Server, client: Client, channels: int, uploads: int, rate: float, body: bytes
) -> dict[str, Any]:
    directory = await client.mkdir(f"/home/{server.users[0]}", f"fanout-{uuid.uuid4().hex[:6]}")
    await asyncio.sleep(0.5)
    rss_before = server.rss()
    owners = [server.users[i // CHANNELS_PER_USER] for i in range(channels)]
    sem = asyncio.Semaphore(32)

    async def make(user: str) -> str:
        async with sem:
            return await client.channel_with_watch(user, directory)

    urls = await asyncio.gather(*(make(u) for u in owners))
    receiver = Receiver(list(urls), [server.auth(u) for u in owners], max_seconds=uploads / rate + 180)
    try:
        await asyncio.sleep(1.0)  # let the connections settle
        rss_idle = server.rss()
        with RssSampler(server.pid, interval=0.05, max_seconds=uploads / rate + 120) as sampler:
            timings = await client.uploads(directory, uploads, rate, body)
            await asyncio.sleep(2.0)
        events = receiver.results()
    finally:
        receiver.close()
    to_all: list[float] = []
    each: list[float] = []
    complete = 0
    for name, t in timings.items():
        arrivals = events.get(name, [])
        each.extend(at - t["scheduled"] for _, at in arrivals)
        if len({i for i, _ in arrivals}) == channels:
            complete += 1
            to_all.append(max(at for _, at in arrivals) - t["scheduled"])
    extra = rss_idle - rss_before
    return {
        "channels": channels,
        "uploads": uploads,
        "rate": rate,
        "uploads_delivered_to_all": complete,
        "deliveries": len(each),
        "latency_to_all": summary_ms(to_all),
        "latency_each": summary_ms(each),
        "rss_before_bytes": rss_before,
        "rss_idle_channels_bytes": rss_idle,
        "rss_extra_bytes": extra,
        "rss_extra_per_channel_bytes": extra / channels if channels else None,
        "rss_during_fanout": sampler.stats.to_json(),
    }


async def polling_phase(
    server: Server, client: Client, interval: float, rate: float, duration: float, body: bytes
) -> dict[str, Any]:
    directory = await client.mkdir(f"/home/{server.users[0]}", f"poll-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    seen: dict[str, float] = {}
    costs: list[float] = []
    poller = asyncio.create_task(client.poll(directory, interval, stop, seen, costs))
    await asyncio.sleep(random.random() * interval)  # no fixed phase between polls and uploads
    count = max(1, int(rate * duration))
    timings = await client.uploads(directory, count, rate, body, jitter=True)
    await asyncio.sleep(interval * 2 + 0.2)
    stop.set()
    await asyncio.wait_for(poller, timeout=30)
    latencies = [seen[n] - t["scheduled"] for n, t in timings.items() if n in seen]
    return {
        "interval_s": interval,
        "rate": rate,
        "uploads": count,
        "detected": len(latencies),
        "latency": summary_ms(latencies),
        "polls": len(costs),
        "poll_request": summary_ms(costs),
    }


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="airflow-dcache bench events", description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="10,100,1000", help="uploads/s of the rate phase (comma list)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate (and per polling run)")
    p.add_argument("--channels", type=int, default=1000, help="channels of the fan-out phase (0 skips it)")
    p.add_argument("--fanout-uploads", type=int, default=20, help="uploads during the fan-out phase")
    p.add_argument("--fanout-rate", type=float, default=2.0, help="uploads/s during the fan-out phase")
    p.add_argument("--poll-intervals", default="1,0.1", help="polling reference intervals in seconds ('' skips)")
    p.add_argument("--poll-rate", type=float, default=10.0, help="uploads/s during the polling runs")
    p.add_argument("--size", type=int, default=1024, help="bytes per uploaded file")
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the server's data lives (default: /dev/shm if present, so the pool's fsync "
        "does not dominate; give a disk path to include it)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON results path (default benchmarks/results/)")
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(list(argv))
    if args.duration <= 0 or args.duration > 600:
        p.error("--duration must be in (0, 600]")
    if not 0 <= args.channels <= 10_000:
        p.error("--channels must be between 0 and 10000")
    return args


def _rates(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if any(v <= 0 or v > 10_000 for v in values):
        raise SystemExit("error: rates must be in (0, 10000]")
    return values


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    users = max(1, math.ceil(args.channels / CHANNELS_PER_USER))
    server = Server(base, users)
    body = os.urandom(args.size)
    result: dict[str, Any] = {"rate": [], "fanout": None, "polling": [], "errors": []}
    client = Client(server)
    try:
        await client.uploads(await client.mkdir(f"/home/{server.users[0]}", "warmup"), 50, 200.0, body)
        for rate in _rates(args.rates):
            try:
                result["rate"].append(await rate_phase(server, client, rate, args.duration, body))
            except Exception as exc:
                result["errors"].append(f"rate {rate}: {exc}")
        if args.channels:
            try:
                result["fanout"] = await fanout_phase(
                    server, client, args.channels, args.fanout_uploads, args.fanout_rate, body
                )
            except Exception as exc:
                result["errors"].append(f"fan-out: {exc}")
        for interval in _rates(args.poll_intervals) if args.poll_intervals else []:
            try:
                result["polling"].append(
                    await polling_phase(server, client, interval, args.poll_rate, args.duration, body)
                )
            except Exception as exc:
                result["errors"].append(f"polling {interval}: {exc}")
    finally:
        await client.close()
        server.stop()
    return result


def _latency_row(scenario: str, rate: float, sent: int, seen: int, lat: dict[str, Any],
                 put_p50: str = "-", target: str = "-", verdict: str = "-") -> list[object]:
    return [scenario, f"{rate:g}", sent, seen, fmt(lat["p50_ms"]), fmt(lat["p99_ms"]), fmt(lat["max_ms"]),
            put_p50, target, verdict]


def build_table(result: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    rows: list[list[object]] = []
    checks: dict[str, bool] = {}
    top = max((r["rate"] for r in result["rate"]), default=None)
    for r in result["rate"]:
        lat = r["latency"]
        target, verdict = "-", "-"
        if r["rate"] == top and top >= 1000:
            ok = lat["p99_ms"] is not None and lat["p99_ms"] <= P99_TARGET_MS and r["received"] == r["uploads"]
            checks[f"p99 at {top:g}/s"] = ok
            target, verdict = f"p99<={P99_TARGET_MS:g}ms", "PASS" if ok else "FAIL"
        rows.append(_latency_row("SSE, 1 channel", r["rate"], r["uploads"], r["received"], lat,
                                 fmt(r["put_time"]["p50_ms"]), target, verdict))
    f = result["fanout"]
    if f:
        rows.append(_latency_row(f"SSE, {f['channels']} channels (to all)", f["rate"], f["uploads"],
                                 f["uploads_delivered_to_all"], f["latency_to_all"]))
        rows.append(_latency_row(f"SSE, {f['channels']} channels (each)", f["rate"], f["uploads"] * f["channels"],
                                 f["deliveries"], f["latency_each"]))
    for p in result["polling"]:
        rows.append(_latency_row(f"polling every {p['interval_s']:g} s", p["rate"], p["uploads"], p["detected"],
                                 p["latency"]))
    table = format_table(
        ["scenario", "uploads/s", "uploads", "seen", "p50 ms", "p99 ms", "max ms", "PUT p50 ms", "target", "result"],
        rows,
    )
    if f:
        ok = f["rss_extra_bytes"] <= RSS_TARGET_BYTES
        checks[f"RSS of {f['channels']} idle channels"] = ok
        table += (
            f"\n\nserver RSS: {f['rss_before_bytes'] / MB:.1f} MB before, {f['rss_idle_channels_bytes'] / MB:.1f} MB"
            f" with {f['channels']} connected idle channels: +{f['rss_extra_bytes'] / MB:.1f} MB"
            f" ({f['rss_extra_per_channel_bytes'] / 1000:.1f} kB/channel); target <= {RSS_TARGET_BYTES / MB:.0f} MB:"
            f" {'PASS' if ok else 'FAIL'}"
        )
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.receiver:
        asyncio.run(_receive(json.loads(sys.stdin.readline())))
        return 0
    root = args.tmp_dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    base = Path(tempfile.mkdtemp(prefix="bench-events-", dir=root))
    started = time.time()
    try:
        with exit_on_termination():
            result = asyncio.run(run(args, base))
    finally:
        if not args.keep_tmp:
            shutil.rmtree(base, ignore_errors=True)
    table, checks = build_table(result)
    print(table)
    for error in result["errors"]:
        print(f"error: {error}", file=sys.stderr)
    out = args.out or default_results_path("events")
    write_json(
        out,
        {
            "benchmark": "events",
            "loadavg_at_end": os.getloadavg(),
            "machine": machine_info(),
            "data_dir_parent": str(root or tempfile.gettempdir()),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "receiver"},
            "targets": {"p99_ms_at_top_rate": P99_TARGET_MS, "idle_channels_extra_rss_bytes": RSS_TARGET_BYTES},
            "checks": checks,
            "results": result,
            "table": table,
            "wall_seconds": round(time.time() - started, 1),
        },
    )
    print(f"\nresults: {out}")
    if result["errors"]:
        return 2
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
