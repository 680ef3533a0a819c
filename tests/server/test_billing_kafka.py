"""Kafka billing records of the running service, read back by a real consumer from a real broker (tansu).

Shapes are checked key by key against reference §5.4-§5.6; durability by stopping the broker,
uploading, restarting the service and the broker, and reading every record exactly once, in order.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.conftest import DCacheServer, start_server
from tests.kafka_broker import KafkaBroker, Record, free_port, unique_topic

DOOR_CELL = "WebDAV-" + socket.gethostname().split(".")[0]
POOL_CELL = "main-pool1"
DOMAIN = "dCacheDomain"
FAST_RETRY = ["--kafka-config", "message.timeout.ms=2000"]

TRANSFER_WRITE_KEYS = [
    "version", "msgType", "date", "queuingTime", "cellName", "cellType", "cellDomain", "meanWriteBandwidth",
    "writeIdle", "writeActive", "localEndpoint", "status", "session", "subject", "pnfsid", "billingPath",
    "fileSize", "transferSize", "transferTime", "isWrite", "protocolInfo", "initiator", "isP2p", "transferPath",
]
TRANSFER_READ_KEYS = [{"meanWriteBandwidth": "meanReadBandwidth", "writeIdle": "readIdle",
                       "writeActive": "readActive"}.get(k, k) for k in TRANSFER_WRITE_KEYS]
REQUEST_KEYS = [
    "VERSION", "msgType", "date", "queuingTime", "cellName", "cellType", "cellDomain", "status", "session",
    "sessionDuration", "transferPath", "subject", "client", "clientChain", "mappedUID", "mappedGID", "owner",
    "pnfsid", "billingPath", "fileSize", "moverInfo",
]
REMOVE_KEYS = REQUEST_KEYS[:-1]
MOVER_REDUNDANT = {"subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo"}
ALICE_SUBJECT = ["UidPrincipal[1000]", "GidPrincipal[1000,primary]", "GidPrincipal[3000]",
                 "UserNamePrincipal[alice]", "Origin[127.0.0.1]"]


# -- helpers ---------------------------------------------------------------------------------------


def basic(server: DCacheServer, user: str = "alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()


def request(server: DCacheServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, query: str = "") -> tuple[int, int, bytes]:
    """One request on a fresh connection; returns (status, client port, body)."""
    parts = urlsplit(server.webdav)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    try:
        conn.connect()
        assert conn.sock is not None
        port = conn.sock.getsockname()[1]
        target = quote(path) + (f"?{query}" if query else "")
        conn.request(method, target, body=body, headers=headers if headers is not None else
                     {"Authorization": basic(server)})
        resp = conn.getresponse()
        return resp.status, port, resp.read()
    finally:
        conn.close()


def records_for(broker: KafkaBroker, topic: str, paths: list[str], per_path: int, timeout: float = 30.0,
                settle: float = 0.0) -> list[dict]:
    """Every record of ``topic`` about ``paths``, once ``per_path`` records arrived for each."""
    wanted = set(paths)

    def about(recs: list[Record]) -> list[dict]:
        out = []
        for rec in recs:
            doc = rec.json()
            if doc.get("billingPath") in wanted or doc.get("transferPath") in wanted:
                out.append(doc)
        return out

    def complete(recs: list[Record]) -> bool:
        got = about(recs)
        return all(sum(1 for d in got if d.get("billingPath") == p) >= per_path for p in paths)

    recs = broker.consume(topic, until=complete, timeout=timeout, settle=settle)
    return about(recs)


def spool_count(server: DCacheServer) -> int:
    path = server.data_dir / "billing-spool.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_date(value: str, lo_ms: int, hi_ms: int) -> None:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    assert lo_ms - 1000 <= parsed.timestamp() * 1000 <= hi_ms + 1000, (value, lo_ms, hi_ms)


# -- a service publishing to the session broker ----------------------------------------------------


@pytest.fixture(scope="module")
def billing_topic(kafka_broker: KafkaBroker) -> str:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    return topic


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory, kafka_broker: KafkaBroker, billing_topic: str):  # type: ignore[no-untyped-def]
    server = start_server(tmp_path_factory.mktemp("billing"), "--allow-insecure-macaroons",
                          "--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", billing_topic)
    yield server
    server.stop()


def test_upload_publishes_pool_transfer_then_door_request(billed: DCacheServer, kafka_broker: KafkaBroker,
                                                         billing_topic: str) -> None:
    body = b"x" * 300_000
    before = int(time.time() * 1000)
    status, client_port, _ = request(billed, "PUT", "/home/alice/up.bin", body)
    after = int(time.time() * 1000)
    assert status == 201
    transfer, req = records_for(kafka_broker, billing_topic, ["/home/alice/up.bin"], 2)

    meta = requests.get(f"{billed.api}/namespace/home/alice/up.bin", auth=billed.auth("alice"), timeout=10).json()
    pnfsid = meta["pnfsId"]
    webdav_port = urlsplit(billed.webdav).port

    assert list(transfer) == TRANSFER_WRITE_KEYS
    assert transfer["version"] == "1.0" and transfer["msgType"] == "transfer"
    assert (transfer["cellName"], transfer["cellType"], transfer["cellDomain"]) == (POOL_CELL, "pool", DOMAIN)
    assert transfer["queuingTime"] == 0 and transfer["status"] == {"code": 0, "msg": ""}
    assert_date(transfer["date"], before, after)
    assert transfer["session"].startswith(f"pool:{POOL_CELL}@{DOMAIN}:")
    assert transfer["subject"] == ALICE_SUBJECT
    assert transfer["pnfsid"] == pnfsid and len(pnfsid) == 36 and pnfsid == pnfsid.upper()
    assert transfer["billingPath"] == transfer["transferPath"] == "/home/alice/up.bin"
    assert transfer["fileSize"] == transfer["transferSize"] == len(body)
    assert isinstance(transfer["transferTime"], int) and 0 <= transfer["transferTime"] <= after - before
    assert transfer["isWrite"] == "write" and transfer["isP2p"] is False
    assert transfer["protocolInfo"] == {"protocol": "Http", "versionMajor": 1, "versionMinor": 1,
                                        "transferTag": "", "port": client_port, "host": "127.0.0.1"}
    assert transfer["localEndpoint"] == f"127.0.0.1:{webdav_port}"
    assert transfer["writeActive"].startswith("PT") and transfer["writeActive"].endswith("S")
    assert isinstance(transfer["meanWriteBandwidth"], float | int) and transfer["meanWriteBandwidth"] > 0
    assert transfer["initiator"] == req["session"]

    assert list(req) == REQUEST_KEYS
    assert req["VERSION"] == "1.0" and "version" not in req and req["msgType"] == "request"
    assert (req["cellName"], req["cellType"], req["cellDomain"]) == (DOOR_CELL, "door", DOMAIN)
    assert req["session"].startswith(f"door:{DOOR_CELL}@{DOMAIN}:")
    assert_date(req["date"], before, after)
    assert (req["client"], req["clientChain"], req["mappedUID"], req["mappedGID"], req["owner"]) == (
        "127.0.0.1", "127.0.0.1", 1000, 1000, "alice")
    assert req["subject"] == ALICE_SUBJECT and req["pnfsid"] == pnfsid and req["fileSize"] == len(body)
    assert req["billingPath"] == req["transferPath"] == "/home/alice/up.bin"
    assert isinstance(req["sessionDuration"], int)
    mover = req["moverInfo"]
    assert not MOVER_REDUNDANT & set(mover)
    assert mover == {k: v for k, v in transfer.items() if k not in MOVER_REDUNDANT}


def test_download_publishes_read_transfer_and_request(billed: DCacheServer, kafka_broker: KafkaBroker,
                                                     billing_topic: str) -> None:
    assert request(billed, "PUT", "/home/alice/down.txt", b"hello billing")[0] == 201
    status, client_port, data = request(billed, "GET", "/home/alice/down.txt")
    assert (status, data) == (200, b"hello billing")
    docs = records_for(kafka_broker, billing_topic, ["/home/alice/down.txt"], 4)
    assert [(d["msgType"], d.get("isWrite") or d["moverInfo"]["isWrite"]) for d in docs] == [
        ("transfer", "write"), ("request", "write"), ("transfer", "read"), ("request", "read")]
    read, req = docs[2], docs[3]
    assert list(read) == TRANSFER_READ_KEYS
    assert read["transferSize"] == read["fileSize"] == 13
    assert read["protocolInfo"]["port"] == client_port
    assert read["readActive"].startswith("PT") and "writeActive" not in read
    assert req["moverInfo"]["session"] == read["session"] and read["initiator"] == req["session"]


def test_webdav_delete_publishes_door_remove_rest_delete_none(billed: DCacheServer, kafka_broker: KafkaBroker,
                                                             billing_topic: str) -> None:
    for name in ("dav-del.txt", "rest-del.txt"):
        assert request(billed, "PUT", f"/home/alice/{name}", b"bye")[0] == 201
    meta = requests.get(f"{billed.api}/namespace/home/alice/dav-del.txt", auth=billed.auth("alice"), timeout=10)
    pnfsid = meta.json()["pnfsId"]
    before = int(time.time() * 1000)
    assert request(billed, "DELETE", "/home/alice/dav-del.txt")[0] == 204
    after = int(time.time() * 1000)
    rest = requests.delete(f"{billed.api}/namespace/home/alice/rest-del.txt", auth=billed.auth("alice"), timeout=10)
    assert rest.status_code == 200
    # A later upload is a marker: once its records are in, the deletes' records (if any) are too.
    assert request(billed, "PUT", "/home/alice/after-deletes.txt", b"m")[0] == 201
    docs = records_for(kafka_broker, billing_topic,
                       ["/home/alice/dav-del.txt", "/home/alice/rest-del.txt", "/home/alice/after-deletes.txt"], 2)
    removes = [d for d in docs if d["msgType"] == "remove"]
    assert len(removes) == 1
    rem = removes[0]
    assert list(rem) == REMOVE_KEYS
    assert rem["VERSION"] == "1.0" and (rem["cellName"], rem["cellType"]) == (DOOR_CELL, "door")
    assert (rem["billingPath"], rem["transferPath"], rem["pnfsid"], rem["fileSize"]) == (
        "/home/alice/dav-del.txt", "/home/alice/dav-del.txt", pnfsid, 3)
    assert (rem["client"], rem["clientChain"], rem["sessionDuration"], rem["queuingTime"]) == (
        "127.0.0.1", "unknown", 0, 0)
    assert rem["session"].startswith(f"door:{DOOR_CELL}@{DOMAIN}:") and rem["status"] == {"code": 0, "msg": ""}
    assert rem["subject"] == ALICE_SUBJECT and (rem["mappedUID"], rem["mappedGID"], rem["owner"]) == (
        1000, 1000, "alice")
    assert_date(rem["date"], before, after)
    assert [d["msgType"] for d in docs if d["billingPath"] == "/home/alice/rest-del.txt"] == ["transfer", "request"]


def test_a_door_tree_delete_bills_every_file_it_removes(billed: DCacheServer, kafka_broker: KafkaBroker,
                                                        billing_topic: str) -> None:
    """dCache's door deletes a tree file by file (Milton), each file with its ``remove`` record."""
    assert request(billed, "MKCOL", "/home/alice/tree")[0] == 201
    assert request(billed, "MKCOL", "/home/alice/tree/sub")[0] == 201
    files = ["/home/alice/tree/a.txt", "/home/alice/tree/sub/b.txt"]
    for path in files:
        assert request(billed, "PUT", path, b"leaf")[0] == 201
    assert request(billed, "DELETE", "/home/alice/tree")[0] == 204
    assert request(billed, "PROPFIND", "/home/alice/tree")[0] == 404
    docs = records_for(kafka_broker, billing_topic, files, 3)  # transfer + request, then the remove
    removes = sorted(d["billingPath"] for d in docs if d["msgType"] == "remove")
    assert removes == files
    assert all(d["cellType"] == "door" for d in docs if d["msgType"] == "remove")


def test_macaroon_upload_names_the_macaroon(billed: DCacheServer, kafka_broker: KafkaBroker,
                                            billing_topic: str) -> None:
    minted = requests.post(f"{billed.webdav}/home/alice/", auth=billed.auth("alice"), timeout=10,
                           headers={"Content-Type": "application/macaroon-request"},
                           data=json.dumps({"caveats": ["activity:UPLOAD"], "validity": "PT5M"}))
    assert minted.status_code == 200, minted.text
    token = minted.json()["macaroon"]
    status, _, _ = request(billed, "PUT", "/home/alice/by-macaroon.txt", b"m", headers={}, query=f"authz={token}")
    assert status == 201
    transfer, req = records_for(kafka_broker, billing_topic, ["/home/alice/by-macaroon.txt"], 2)
    principals = [p for p in transfer["subject"] if p.startswith("MacaroonPrincipal[")]
    assert len(principals) == 1
    iid, _, sig = principals[0][len("MacaroonPrincipal["):-1].partition(":")
    assert iid and len(base64.b64decode(sig)) == 6
    assert transfer["subject"][:5] == ALICE_SUBJECT and req["subject"] == transfer["subject"]


def test_records_are_compact_with_null_key_on_one_partition(billed: DCacheServer, kafka_broker: KafkaBroker,
                                                            billing_topic: str) -> None:
    assert request(billed, "PUT", "/home/alice/raw.txt", b"raw")[0] == 201
    records_for(kafka_broker, billing_topic, ["/home/alice/raw.txt"], 2)
    raw = kafka_broker.consume(billing_topic)
    assert raw and all(r.key is None and r.partition == 0 for r in raw)
    for r in raw:
        assert r.value is not None
        text = r.value.decode("utf-8")
        assert ": " not in text and ", " not in text and "null" not in text
        assert json.loads(text)["status"]["code"] == 0


# -- outages ---------------------------------------------------------------------------------------


def test_outage_records_survive_service_restart_in_order(start_dcache, kafka_broker_factory) -> None:  # type: ignore[no-untyped-def]
    broker = kafka_broker_factory("outage")
    topic = unique_topic()
    broker.create_topic(topic)
    server = start_dcache("--kafka-bootstrap", broker.bootstrap, "--kafka-topic", topic, *FAST_RETRY)
    assert request(server, "PUT", "/home/alice/before.txt", b"b")[0] == 201
    assert len(records_for(broker, topic, ["/home/alice/before.txt"], 2)) == 2

    broker.stop()
    paths = [f"/home/alice/outage-{i}.txt" for i in range(6)]
    started = time.monotonic()
    for path in paths:
        assert request(server, "PUT", path, path.encode())[0] == 201
    assert time.monotonic() - started < 30  # not held up by the broker (a blocking producer waits 60 s)
    wait_for(lambda: spool_count(server) >= 2 * len(paths), 10, "the outage records to be spooled")

    server.restart()  # SIGTERM: the spool is all that carries the records over
    assert spool_count(server) >= 2 * len(paths)
    broker.start()  # an empty broker (memory storage) on the same port
    broker.create_topic(topic)
    docs = records_for(broker, topic, paths, 2, timeout=60, settle=2.0)
    assert [(d["msgType"], d["billingPath"]) for d in docs] == [
        (kind, path) for path in paths for kind in ("transfer", "request")]
    wait_for(lambda: spool_count(server) == 0, 15, "the spool to drain")


def test_broker_returning_while_service_runs_gets_spooled_records(start_dcache, kafka_broker_factory) -> None:  # type: ignore[no-untyped-def]
    broker = kafka_broker_factory("flap")
    topic = unique_topic()
    broker.create_topic(topic)
    server = start_dcache("--kafka-bootstrap", broker.bootstrap, "--kafka-topic", topic, *FAST_RETRY)
    assert request(server, "PUT", "/home/alice/warm.txt", b"w")[0] == 201
    records_for(broker, topic, ["/home/alice/warm.txt"], 2)
    broker.stop()
    paths = [f"/home/alice/flap-{i}.txt" for i in range(3)]
    for path in paths:
        assert request(server, "PUT", path, b"f")[0] == 201
    time.sleep(3)  # past message.timeout.ms: the publisher has given up on its producer at least once
    broker.start()
    broker.create_topic(topic)
    later = "/home/alice/flap-after.txt"
    assert request(server, "PUT", later, b"a")[0] == 201
    docs = records_for(broker, topic, [*paths, later], 2, timeout=60, settle=1.0)
    assert [(d["msgType"], d["billingPath"]) for d in docs] == [
        (kind, path) for path in [*paths, later] for kind in ("transfer", "request")]


def test_unreachable_broker_at_start_still_serves_and_spools(start_dcache) -> None:  # type: ignore[no-untyped-def]
    server = start_dcache("--kafka-bootstrap", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert request(server, "PUT", "/home/alice/nobroker.txt", b"n")[0] == 201
    assert request(server, "GET", "/home/alice/nobroker.txt")[0] == 200
    assert request(server, "DELETE", "/home/alice/nobroker.txt")[0] == 204
    assert time.monotonic() - started < 30  # not held up by the broker (a blocking producer waits 60 s)
    wait_for(lambda: spool_count(server) == 5, 10, "five spooled records")


@pytest.mark.parametrize(("args", "option"), [
    (["--kafka-bootstrap", "localhost"], "--kafka-bootstrap"),
    (["--kafka-bootstrap", "127.0.0.1:99999"], "--kafka-bootstrap"),
    (["--kafka-bootstrap", "127.0.0.1:²"], "--kafka-bootstrap"),
    (["--kafka-bootstrap", "http://127.0.0.1:9092"], "--kafka-bootstrap"),
    (["--kafka-bootstrap", "127.0.0.1:9092", "--kafka-topic", "bad topic"], "--kafka-topic"),
    (["--kafka-bootstrap", "127.0.0.1:9092", "--kafka-config", "acks=0"], "--kafka-config"),
    (["--kafka-bootstrap", "127.0.0.1:9092", "--kafka-config", "no.such.property=1"], "--kafka-config"),
    (["--kafka-topic", "billing2"], "--kafka-bootstrap"),
])
def test_bad_kafka_options_stop_the_start_naming_the_option(tmp_path: Path, args: list[str], option: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_dcache.cli", "server", "--data-dir", str(tmp_path / "d"),
         "--webdav-port", "0", "--frontend-port", "0", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert done.stdout == ""  # never announced itself as ready
    assert option in done.stderr and "error:" in done.stderr


def test_flush_to_tape_publishes_pool_store(start_dcache, kafka_broker: KafkaBroker) -> None:  # type: ignore[no-untyped-def]
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    server = start_dcache("--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", topic,
                          "--default-qos", "disk+tape", "--tape-flush-delay", "0.1")
    assert request(server, "PUT", "/home/alice/taped.bin", b"t" * 100)[0] == 201
    path = "/home/alice/taped.bin"
    recs = kafka_broker.consume(topic, timeout=30,
                                until=lambda rs: any(r.json()["msgType"] == "store" for r in rs))
    docs = [r.json() for r in recs if r.json().get("billingPath") == path]
    assert [d["msgType"] for d in docs] == ["transfer", "request", "store"]
    store = docs[2]
    assert list(store) == ["version", "msgType", "date", "queuingTime", "transaction", "cellName", "cellType",
                           "cellDomain", "status", "session", "pnfsid", "billingPath", "fileSize", "transferTime",
                           "hsm", "locations"]
    assert (store["cellName"], store["cellType"], store["fileSize"]) == (POOL_CELL, "pool", 100)
    assert store["session"] == store["transaction"] and store["pnfsid"] == docs[0]["pnfsid"]
    assert store["hsm"]["type"] and store["locations"] and store["status"] == {"code": 0, "msg": ""}
