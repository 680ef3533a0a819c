"""Load: 64 concurrent clients mixing uploads, downloads, listings and event streams.

Each client loops until the deadline picking an operation (40 % upload of 16-256 KiB, 30 % download
with a checksum check, 20 % listing — PROPFIND Depth 1 or the frontend's children — and 10 % an
event stream held open for a second). Pass: no 5xx, no transport error, every download
byte-identical, the service's RSS bounded. Figures (ops, p50/p99 per kind, RSS) are printed and,
with ``DCACHE_RESULTS=<file>``, appended as a JSON line. CI: 10 s; soak: 60 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import statistics
import time
from collections import defaultdict

import aiohttp
import pytest

from tests.security.test_fuzz import _rss_kib

CLIENTS = 64
RSS_LIMIT_KIB = 1_500_000


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _client(n: int, server, deadline: float, seeds: dict[str, str], lat: dict[str, list[float]],
                  failures: list[str]) -> None:
    auth = aiohttp.BasicAuth(*server.auth("alice"))
    rnd = random.Random(n)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(auth=auth, timeout=timeout) as s:
        mine: dict[str, str] = {}
        i = 0
        while time.monotonic() < deadline:
            i += 1
            roll = rnd.random()
            started = time.monotonic()
            try:
                if roll < 0.4:
                    kind = "upload"
                    data = os.urandom(rnd.randint(16, 256) * 1024)
                    path = f"/home/alice/load/c{n}/f{i}"
                    async with s.put(f"{server.webdav}{path}", data=data) as r:
                        status = r.status
                        await r.read()
                    if status == 201:
                        mine[path] = hashlib.sha256(data).hexdigest()
                elif roll < 0.7:
                    kind = "download"
                    pool = mine or seeds
                    path = rnd.choice(list(pool))
                    async with s.get(f"{server.webdav}{path}") as r:
                        status = r.status
                        body = await r.read()
                    if status == 200 and hashlib.sha256(body).hexdigest() != pool[path]:
                        failures.append(f"download of {path} differs")
                elif roll < 0.9:
                    kind = "listing"
                    if rnd.random() < 0.5:
                        async with s.request("PROPFIND", f"{server.webdav}/home/alice/load/seed/",
                                             headers={"Depth": "1"}) as r:
                            status = r.status
                            await r.read()
                    else:
                        async with s.get(f"{server.api}/namespace/home/alice/load/seed?children=true") as r:
                            status = r.status
                            await r.read()
                else:
                    kind = "events"
                    status = await _stream(s, server, rnd)
            except (aiohttp.ClientError, TimeoutError) as err:
                failures.append(f"{type(err).__name__}: {err}")
                continue
            lat[kind].append(time.monotonic() - started)
            if status >= 400:  # a 5xx is the defect looked for; a 4xx would mean the mix itself is wrong
                failures.append(f"{kind} answered {status}")


async def _stream(s: aiohttp.ClientSession, server, rnd: random.Random) -> int:
    async with s.post(f"{server.api}/events/channels") as r:
        if r.status != 201:
            return r.status
        channel = r.headers["Location"]
    try:
        async with s.post(f"{channel}/subscriptions/inotify", json={"path": "/home/alice/load"}) as r:
            if r.status not in (201, 303):
                return r.status
        async with s.get(channel, headers={"Accept": "text/event-stream"}) as r:
            if r.status != 200:
                return r.status
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(r.content.readany(), timeout=max(0.01, end - time.monotonic()))
                except TimeoutError:
                    break
        return 200
    finally:
        async with s.delete(channel) as r:
            await r.read()


async def _seed(server) -> dict[str, str]:
    seeds = {}
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth(*server.auth("alice"))) as s:
        for i in range(20):
            data = os.urandom(64 * 1024)
            path = f"/home/alice/load/seed/s{i}"
            async with s.put(f"{server.webdav}{path}", data=data) as r:
                assert r.status == 201
            seeds[path] = hashlib.sha256(data).hexdigest()
    return seeds


async def _run(server, seconds: float) -> dict[str, object]:
    seeds = await _seed(server)
    lat: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    rss_start = _rss_kib(server.process.pid)
    rss_max = rss_start
    deadline = time.monotonic() + seconds
    tasks = [asyncio.create_task(_client(n, server, deadline, seeds, lat, failures)) for n in range(CLIENTS)]
    while not all(t.done() for t in tasks):
        rss_max = max(rss_max, _rss_kib(server.process.pid))
        await asyncio.wait(tasks, timeout=0.5)
    for t in tasks:
        t.result()
    all_lat = [x for v in lat.values() for x in v]
    return {
        "clients": CLIENTS, "seconds": seconds, "ops": len(all_lat), "failures": failures[:20],
        "failed": len(failures), "rss_start_mib": rss_start // 1024, "rss_max_mib": rss_max // 1024,
        "p50_ms": round(1000 * statistics.median(all_lat), 1) if all_lat else 0,
        "p99_ms": round(1000 * _pct(all_lat, 0.99), 1),
        "by_kind": {k: {"ops": len(v), "p50_ms": round(1000 * statistics.median(v), 1),
                        "p99_ms": round(1000 * _pct(v, 0.99), 1)} for k, v in sorted(lat.items())},
    }


def load(start_dcache, seconds: float, name: str) -> dict[str, object]:
    server = start_dcache("--allow-insecure-macaroons", name=name)
    figures = asyncio.run(_run(server, seconds))
    print(f"\nload {seconds:g} s x {CLIENTS} clients: {json.dumps(figures)}")
    out = os.environ.get("DCACHE_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")
    assert server.process.poll() is None
    assert figures["failed"] == 0, figures["failures"]
    assert int(figures["rss_max_mib"]) * 1024 < RSS_LIMIT_KIB  # type: ignore[call-overload]
    assert set(figures["by_kind"]) == {"upload", "download", "listing", "events"}  # type: ignore[arg-type]
    return figures


def test_load_64_clients_10s(start_dcache):
    load(start_dcache, 10.0, "load-ci")


@pytest.mark.soak
def test_soak_load_64_clients_60s(start_dcache):
    load(start_dcache, 60.0, "load-soak")
