"""Third-party copy pieces in-process: host policy, URL checks, digests, markers, billing events."""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from airflow_dcache.hooks._perfmarkers import parse_perf_marker_stream
from airflow_dcache.server.services.errors import BadRequest, NotAuthenticated
from airflow_dcache.server.services.events import EventBus, TransferEvent
from airflow_dcache.server.services.login import ANONYMOUS, Login
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.third_party_copy import (
    CopyFailure,
    CopyRequest,
    Direction,
    HostPolicy,
    Progress,
    ThirdPartyCopyService,
    TpcSettings,
    check_remote_url,
    marker_text,
    parse_digest,
    redact,
)
from airflow_dcache.server.services.transfers import TransferService
from airflow_dcache.server.storage.namespace_db import NamespaceDB
from airflow_dcache.server.storage.pool import Pool

ADMIN = Login(uid=0, gids=(0,), username="admin", admin=True)


@pytest.mark.parametrize(("patterns", "host", "address", "allowed"), [
    ((), "localhost", "127.0.0.1", True),
    ((), "x", "127.8.9.1", True),
    ((), "x", "::1", True),
    ((), "x", "::ffff:127.0.0.1", True),
    ((), "x", "192.0.2.1", False),
    ((), "x", "10.0.0.1", False),
    ((), "x", "2001:db8::1", False),
    ((), "x", "not-an-ip", False),
    (("192.0.2.0/24",), "x", "192.0.2.77", True),
    (("192.0.2.0/24",), "x", "192.0.3.1", False),
    (("2001:db8::/32",), "x", "2001:db8::5", True),
    (("198.51.100.7",), "x", "198.51.100.7", True),
    (("storage.example.org",), "storage.example.org", "203.0.113.9", True),
    (("storage.example.org",), "other.example.org", "203.0.113.9", False),
    (("*.example.org",), "a.b.example.org", "203.0.113.9", True),
    (("*.example.org",), "example.org", "203.0.113.9", False),
    (("*.example.org",), "evilexample.org", "203.0.113.9", False),
])
def test_host_policy(patterns, host, address, allowed):
    policy = HostPolicy(patterns)
    assert (policy.name_allowed(host) or policy.address_allowed(address)) is allowed


@pytest.mark.parametrize("pattern", ["bad host!", "*", "a..b", "*.*.org", "300.1.2.3/40x"])
def test_host_policy_rejects_bad_patterns(pattern):
    with pytest.raises(ValueError, match="bad host pattern"):
        HostPolicy([pattern])


@pytest.mark.parametrize(("url", "message"), [
    ("relative/path", "absolute URL"),
    ("/abs/path", "absolute URL"),
    ("gsiftp://host/p", "unsupported scheme 'gsiftp'"),
    ("davs://host/p", "unsupported scheme"),
    ("http://u:p@host/p", "Credentials in the remote URL"),
    ("http://host:70000/p", "bad port"),
    ("http:///p", "absolute URL"),
])
def test_check_remote_url(url, message):
    with pytest.raises(BadRequest, match=message):
        check_remote_url(url)


def test_check_remote_url_accepts_http_and_https():
    assert check_remote_url(" https://[::1]:8443/a?b=c ") == "https://[::1]:8443/a?b=c"
    assert check_remote_url("HTTP://127.0.0.1/a") == "HTTP://127.0.0.1/a"


def test_redact_hides_tokens():
    assert redact("https://h:1/p?authz=SECRET&x=1") == "https://h:1/p?authz=REDACTED&x=1"
    assert redact("http://h/p?access_token=abc") == "http://h/p?access_token=REDACTED"
    assert redact("http://user:pw@h/p") == "http://h/p"


@pytest.mark.parametrize(("header", "value"), [
    ("adler32=0a1b2c3d", "0a1b2c3d"),
    ("ADLER32=A1B2C3", "00a1b2c3"),
    ("md5=1B2M2Y8AsgTpgAmY7PhCfg==, adler32=00000001", "00000001"),
    ("md5=1B2M2Y8AsgTpgAmY7PhCfg==", None),
    ("adler32=zzz", None),
    ("", None),
    (None, None),
])
def test_parse_digest(header, value):
    assert parse_digest(header) == value


def test_marker_format():
    progress = Progress(started=1000.0)
    before = marker_text(progress, now=1001)
    assert before == ("Perf Marker\n    Timestamp: 1001\n    State: Running\n    State description: Mover created\n"
                      "    Stripe Index: 0\n    Total Stripe Count: 1\nEnd\n")
    progress.connected_at = 1000.5
    progress.remote_address = "127.0.0.1:2880"
    progress.transferred = 4096
    progress.last_transferred = 1003.7
    assert marker_text(progress, now=1004) == (
        "Perf Marker\n    Timestamp: 1004\n    State: Running\n    State description: Mover created\n"
        "    Stripe Index: 0\n    Stripe Start Time: 1000\n    Stripe Last Transferred: 1003\n"
        "    Stripe Transfer Time: 4\n    Stripe Bytes Transferred: 4096\n    Stripe Status: RUNNING\n"
        "    Total Stripe Count: 1\n    RemoteConnections: tcp:127.0.0.1:2880\nEnd\n")
    markers, _ = parse_perf_marker_stream(marker_text(progress, now=1004) + "success: Created\n")
    assert markers[0].bytes_transferred == 4096 and markers[0].remote_connections == "tcp:127.0.0.1:2880"


def test_copy_failure_is_one_line():
    assert CopyFailure("a\nb\r\n  c").message == "a b c"


# -- in-process transfers with billing events ------------------------------------------------------
@pytest.fixture
def services(tmp_path):
    db = NamespaceDB(tmp_path / "ns.db")
    pool = Pool("main-pool1", tmp_path / "pool")
    bus = EventBus()
    ns = NamespaceService(db, pool, bus)
    transfers = TransferService(ns)
    events: list[TransferEvent] = []
    bus.subscribe(lambda e: events.append(e) if isinstance(e, TransferEvent) else None)
    yield ns, transfers, events
    db.close()


@pytest.fixture
async def remote() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    store: dict[str, bytes] = {"/src": b"remote data " * 100}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            store[request.path] = await request.read()
            return web.Response(status=201)
        if request.path not in store:
            return web.Response(status=404)
        data = store[request.path]
        headers = {"Digest": f"adler32={zlib.adler32(data) & 0xFFFFFFFF:08x}"}
        return web.Response(body=b"" if request.method == "HEAD" else data, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", store
    await runner.cleanup()


async def test_pull_and_push_publish_billing_events(services, remote):
    ns, transfers, events = services
    url, store = remote
    tpc = ThirdPartyCopyService(ns, transfers, TpcSettings(marker_period=0.1))

    pull = CopyRequest(Direction.PULL, "/data/pulled", f"{url}/src?authz=SECRET", client="192.0.2.4")
    assert tpc.authorise(ADMIN, pull) is None
    progress = Progress()
    await tpc.run(ADMIN, pull, progress)
    assert progress.transferred == len(store["/src"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", progress.remote_address or "")
    upload = events[-1]
    assert upload.kind == "upload" and upload.path == "/data/pulled" and upload.client == "192.0.2.4"
    assert upload.extra == {"protocol": "RemoteHttpDataTransfer", "tpc": "pull",
                            "remote": f"{url}/src?authz=REDACTED"}

    push = CopyRequest(Direction.PUSH, "/data/pulled", f"{url}/dst")
    entry = tpc.authorise(ADMIN, push)
    assert entry is not None
    await tpc.run(ADMIN, push, Progress(), entry)
    assert store["/dst"] == store["/src"]
    download = events[-1]
    assert download.kind == "download" and download.transferred == len(store["/src"])
    assert download.extra == {"protocol": "RemoteHttpDataTransfer", "tpc": "push", "remote": f"{url}/dst"}


async def test_failed_pull_publishes_nothing_and_leaves_nothing(services, remote):
    ns, transfers, events = services
    url, _ = remote
    tpc = ThirdPartyCopyService(ns, transfers)
    with pytest.raises(CopyFailure, match=r"^rejected GET: 404 Not Found$"):
        await tpc.run(ADMIN, CopyRequest(Direction.PULL, "/data/x", f"{url}/missing"), Progress())
    assert events == []
    assert list(ns.pool.tmp_dir.iterdir()) == []


def test_anonymous_is_refused(services):
    ns, transfers, _ = services
    tpc = ThirdPartyCopyService(ns, transfers)
    with pytest.raises(NotAuthenticated, match="Anonymous third-party copy"):
        tpc.authorise(ANONYMOUS, CopyRequest(Direction.PULL, "/data/x", "http://127.0.0.1/x"))


async def test_hostname_resolving_elsewhere_is_refused(services):
    ns, transfers, _ = services
    tpc = ThirdPartyCopyService(ns, transfers)
    await tpc.check_host("http://localhost:1/x")  # loopback: fine
    with pytest.raises(BadRequest, match="not allowed"):
        await tpc.check_host("http://192.0.2.1/x")
    allowed = ThirdPartyCopyService(ns, transfers, TpcSettings(allow_hosts=("192.0.2.0/24",)))
    await allowed.check_host("http://192.0.2.1/x")
