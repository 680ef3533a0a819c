"""Disk full on the billing spool: uploads get 507 before they commit, nothing is half-written, no record is lost.

Only the spool lives on a small tmpfs (``--billing-spool-dir``; mounting needs root, else the tests skip);
the namespace and the pool stay on the ordinary disk. The broker is a real tansu.

* Broker down: uploads fill the spool with their records until it reaches its reserve; the next
  upload gets a JSON 507 and leaves nothing (no name, no pool file, no namespace event, no record),
  the spool stays a sound database holding exactly the committed uploads' records, reads keep
  working. A filler file then takes the last byte: uploads still 507, reads still work. The filler
  goes, the broker comes back: the spool drains, gives its space back, uploads succeed again, and
  every record of every committed upload and read arrives exactly once, in order.
* Broker up: a filler fills the spool's file system while an upload's body is still arriving; the
  upload is refused at its commit (its pool replica discarded), reads work, and once the filler is
  gone uploads succeed and every record arrives once, in order.
* The spool itself: an append that meets ENOSPC is rolled back whole; the file stays sound.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import sqlite3
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from tests.conftest import DCacheServer
from tests.kafka_broker import KafkaBroker, Record, unique_topic
from tests.server.test_billing_kafka import FAST_RETRY, wait_for
from tests.server.test_events_support import Events, SseClient, fresh_dir, inotify

SPOOL_FS = 1 << 20  # the tmpfs for the spool; its reserve is then 128 KiB (an eighth)
MAX_UPLOADS = 3000  # bound of the loop that fills the spool
FILL_TIMEOUT = 180.0
READS_WHILE_FULL = 30
OUTAGE_MIN = 4.0  # seconds the broker stays down: longer than message.timeout.ms (2 s, FAST_RETRY)
PAD = "p" * 150  # long names make long records, so the spool fills with fewer uploads
Expected = tuple[str, str, str | None]  # (msgType, billingPath, isWrite)


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def spool_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards (requested first, so it outlives the service)."""
    mount_point = tmp_path / "spool-fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the billing spool needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SPOOL_FS}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the billing spool: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def start_billed(start_dcache: Any, broker: KafkaBroker, topic: str, spool_dir: Path, name: str) -> DCacheServer:
    return start_dcache("--kafka-bootstrap", broker.bootstrap, "--kafka-topic", topic, *FAST_RETRY,
                        "--billing-spool-dir", str(spool_dir), name=name)


def fill(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s file system (written until ENOSPC).

    The running service may free a few blocks meanwhile (its SQLite spool truncates its journal), so
    the filler tops up until the file system stays full, a bounded number of rounds.
    """
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    block = b"\0" * 4096
    try:
        for _ in range(2 * SPOOL_FS // len(block) + 16):  # bounded: the tmpfs is smaller than this
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError("the spool's file system never filled")
        for _ in range(50):
            for size in (4096, 512, 64, 1):  # the last partial block too
                with contextlib.suppress(OSError):
                    for _ in range(SPOOL_FS // size if size == 4096 else 4096 // size):
                        os.write(fd, b"\0" * size)
            if os.statvfs(directory).f_bavail == 0:
                break
            time.sleep(0.05)
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def spool_rows(spool_dir: Path) -> tuple[str, list[Expected]]:
    """``PRAGMA integrity_check`` of the spool and its records in spool order, each parsed as JSON."""
    conn = sqlite3.connect(f"file:{spool_dir / 'billing-spool.db'}?mode=ro", uri=True, timeout=10)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT value FROM records ORDER BY seq").fetchall()
    finally:
        conn.close()
    return str(check), [key(json.loads(bytes(value))) for (value,) in rows]


def key(doc: dict[str, Any]) -> Expected:
    return doc["msgType"], doc["billingPath"], doc.get("isWrite")


def written(path: str) -> list[Expected]:
    return [("transfer", path, "write"), ("request", path, None)]


def read(path: str) -> list[Expected]:
    return [("transfer", path, "read"), ("request", path, None)]


def delivered(broker: KafkaBroker, topic: str, folder: str, count: int, timeout: float = 120.0) -> list[Expected]:
    """The records about ``folder`` on the topic, once ``count`` arrived (plus 2 s for extras)."""
    def about(recs: list[Record]) -> list[Expected]:
        docs = [rec.json() for rec in recs]
        return [key(d) for d in docs if str(d.get("billingPath", "")).startswith(folder + "/")]

    return about(broker.consume(topic, until=lambda recs: len(about(recs)) >= count, timeout=timeout, settle=2.0))


def listing(session: requests.Session, server: DCacheServer, folder: str) -> set[str]:
    r = session.request("PROPFIND", f"{server.webdav}{folder}/", headers={"Depth": "1"})
    assert r.status_code == 207, (r.status_code, r.text[:300])
    hrefs = [unquote(str(e.text)).rstrip("/") for e in ET.fromstring(r.content).iter("{DAV:}href")]
    return {posixpath.basename(h) for h in hrefs if h != folder}


def pool_files(server: DCacheServer) -> tuple[int, list[str]]:
    """(replicas in the pool, temporary files left in the pool)."""
    pool = server.data_dir / "pools" / "main-pool1"
    return sum(1 for p in (pool / "data").iterdir() if p.is_file()), [p.name for p in (pool / "tmp").iterdir()]


def assert_refused(r: requests.Response, path: str) -> None:
    assert r.status_code == 507, (path, r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["status"] == "507" and doc["title"] == "Insufficient Storage", doc
    assert doc["detail"].startswith("No space left for billing records"), doc
    assert "Traceback" not in r.text and "/spool" not in doc["detail"]  # no internals, no server paths


def assert_absent(session: requests.Session, server: DCacheServer, folder: str, paths: list[str],
                  committed: list[str]) -> None:
    """The refused ``paths`` left no name, no size, no pool replica; the folder holds exactly ``committed``."""
    for path in paths:
        assert session.head(f"{server.webdav}{path}").status_code == 404, path
    assert listing(session, server, folder) == {posixpath.basename(p) for p in committed}
    wait_for(lambda: pool_files(server) == (len(committed), []), 10, "the pool to hold just the committed files")


def no_events_for(sse: SseClient, refused: list[str], committed: list[str], timeout: float = 15.0) -> None:
    """The folder's inotify stream names every committed file and no refused one."""
    names = {posixpath.basename(p) for p in committed}
    seen: set[str] = set()
    got = []
    deadline = time.monotonic() + timeout
    while not names <= seen and time.monotonic() < deadline:
        batch = inotify(sse.collect(timeout=0.5))
        got += batch
        seen |= {name for name, mask in batch if name and "IN_CLOSE_WRITE" in mask}
    got += inotify(sse.quiet(0.5))
    assert names <= seen, f"missing events for {sorted(names - seen)[:3]}"
    bad = {posixpath.basename(p) for p in refused} & {name for name, _ in got}
    assert not bad, f"namespace events for refused uploads: {sorted(bad)[:3]}"


def server_log(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return out + err


# -- broker down ----------------------------------------------------------------------------------


def test_spool_full_with_broker_down_refuses_uploads_and_loses_no_record(
        spool_fs: Path, start_dcache: Any, kafka_broker_factory: Any, capfd: pytest.CaptureFixture[str]) -> None:
    broker = kafka_broker_factory("spool-full", start=False)  # down from the start: every record is spooled
    topic = unique_topic()
    spool_dir = spool_fs / "spool"
    server = start_billed(start_dcache, broker, topic, spool_dir, "spool-full")
    s = requests.Session()
    s.auth = server.auth("alice")
    folder = fresh_dir(server)
    events = Events(server, "alice")
    channel = events.channel()
    events.subscribe(channel, {"path": folder})
    sse = events.stream(channel)
    statuses: Counter[int] = Counter()
    committed: list[str] = []
    refused: list[str] = []
    expected: list[Expected] = []
    try:
        # 1. Uploads until the spool reaches its reserve; each committed one spooled its two records.
        outage_started = time.monotonic()
        deadline = outage_started + FILL_TIMEOUT
        for i in range(MAX_UPLOADS):
            assert time.monotonic() < deadline, f"the spool did not fill in {FILL_TIMEOUT:.0f} s ({i} uploads)"
            path = f"{folder}/u{i:04d}-{PAD}.txt"
            r = s.put(f"{server.webdav}{path}", data=path.encode())
            statuses[r.status_code] += 1
            if r.status_code != 201:
                assert_refused(r, path)
                refused.append(path)
                break
            committed.append(path)
            expected += written(path)
        assert refused, f"no 507 after {MAX_UPLOADS} uploads"
        filled_after = len(committed)
        assert filled_after >= 20, "the spool refused uploads long before it was full"
        again = f"{folder}/again-{PAD}.txt"
        assert_refused(r := s.put(f"{server.webdav}{again}", data=b"x"), again)
        statuses[r.status_code] += 1
        refused.append(again)
        assert_absent(s, server, folder, refused, committed)
        wait_for(lambda: len(spool_rows(spool_dir)[1]) == len(expected), 10, "every committed record spooled")
        check, rows = spool_rows(spool_dir)
        assert check == "ok" and rows == expected, "the spool is not exactly the committed uploads' records"

        # 2. Reads keep working while the spool is full; their records go into the reserve.
        first = committed[0]
        got = s.get(f"{server.webdav}{first}")
        assert got.status_code == 200 and got.content == first.encode()
        expected += read(first)
        assert s.request("PROPFIND", f"{server.webdav}{first}", headers={"Depth": "0"}).status_code == 207

        # 3. A filler takes the last byte: the spool cannot grow at all. Uploads 507, reads still work
        #    (their records wait in memory, in order), the spool is untouched.
        filler = fill(spool_fs)
        for j in range(3):
            path = f"{folder}/full-{j}-{PAD}.txt"
            r = s.put(f"{server.webdav}{path}", data=b"refused")
            statuses[r.status_code] += 1
            assert_refused(r, path)
            refused.append(path)
        for second in committed[1:READS_WHILE_FULL + 1]:  # more records than the WAL's working area holds
            got = s.get(f"{server.webdav}{second}")
            assert got.status_code == 200 and got.content == second.encode()
            expected += read(second)  # spooled, or held in memory in order until the spool has room
        assert_absent(s, server, folder, refused, committed)
        check, rows = spool_rows(spool_dir)
        held = len(expected) - len(rows)
        assert check == "ok" and rows == expected[:len(rows)], "the spool changed while it was full"
        assert held > 0, "the reads' records all fitted: holding them in memory was not exercised"
        r = s.put(f"{server.webdav}{folder}/held-{PAD}.txt", data=b"refused")  # refused while records wait
        statuses[r.status_code] += 1
        assert_refused(r, f"{folder}/held-{PAD}.txt")
        refused.append(f"{folder}/held-{PAD}.txt")

        # 4. Space returns and so does the broker: the spool drains by itself, in order, each record once.
        filler.unlink()  # the held records go to the spool down to its floor; the rest wait for the drain
        wait_for(lambda: len(spool_rows(spool_dir)[1]) > len(rows), 15, "held records to be spooled")
        check, rows = spool_rows(spool_dir)
        assert check == "ok" and rows == expected[:len(rows)]
        time.sleep(max(0.0, outage_started + OUTAGE_MIN - time.monotonic()))  # past message.timeout.ms
        broker.start()
        broker.create_topic(topic)
        assert delivered(broker, topic, folder, len(expected)) == expected, "records lost, repeated or reordered"
        wait_for(lambda: not spool_rows(spool_dir)[1], 30, "the spool to drain")
        st = os.statvfs(spool_fs)
        assert st.f_bavail * st.f_frsize > SPOOL_FS // 2, "the drained spool kept the space of the outage"
        for j in range(3):
            path = f"{folder}/after-{j}.txt"
            r = s.put(f"{server.webdav}{path}", data=path.encode())
            statuses[r.status_code] += 1
            assert r.status_code == 201, (path, r.status_code, r.text[:300])
            committed.append(path)
            expected += written(path)
        got_records = delivered(broker, topic, folder, len(expected))
        assert got_records == expected, "billing records lost, duplicated or out of order"
        wait_for(lambda: not spool_rows(spool_dir)[1], 30, "the spool to drain again")
        assert_absent(s, server, folder, refused, committed)
        no_events_for(sse, refused, committed)
    finally:
        sse.close()
        events.cleanup()
    log = server_log(capfd)
    assert "Traceback" not in log, log[-3000:]
    assert "Kafka delivery failed" in log, "the broker was not down long enough to fail a delivery"
    assert log.count("uploads are refused") <= 4, "the refusal is logged once per episode, not per upload"
    print(f"\nspool full, broker down: uploads committed {len(committed)} (spool full after {filled_after}), "
          f"refused {len(refused)}, statuses {dict(statuses)}, records expected {len(expected)} "
          f"(held in memory at the full disk: {held}), delivered {len(got_records)}, lost 0, duplicated 0")


# -- broker up ------------------------------------------------------------------------------------


def test_spool_full_with_broker_up_refuses_at_commit_and_recovers(
        spool_fs: Path, start_dcache: Any, kafka_broker_factory: Any, capfd: pytest.CaptureFixture[str]) -> None:
    broker = kafka_broker_factory("spool-full-up")
    topic = unique_topic()
    broker.create_topic(topic)
    spool_dir = spool_fs / "spool"
    server = start_billed(start_dcache, broker, topic, spool_dir, "spool-full-up")
    s = requests.Session()
    s.auth = server.auth("alice")
    folder = fresh_dir(server)
    statuses: Counter[int] = Counter()
    committed: list[str] = []
    refused: list[str] = []
    expected: list[Expected] = []

    def put(path: str, data: bytes) -> requests.Response:
        r = s.put(f"{server.webdav}{path}", data=data)
        statuses[r.status_code] += 1
        return r

    for i in range(3):
        path = f"{folder}/before-{i}.txt"
        assert put(path, path.encode()).status_code == 201
        committed.append(path)
        expected += written(path)
    assert delivered(broker, topic, folder, len(expected), timeout=30) == expected

    # An upload whose body is still arriving when the spool's file system fills: refused at its commit.
    slow = f"{folder}/slow-{PAD}.bin"
    release = threading.Event()
    answer: list[requests.Response] = []

    def body() -> Iterator[bytes]:
        yield os.urandom(3 << 20)  # more than the door's write batch (1 MiB): in the pool's temporary file
        release.wait(30)
        yield os.urandom(256 << 10)

    uploader = threading.Thread(target=lambda: answer.append(put(slow, body())))  # type: ignore[arg-type]
    uploader.start()
    filler: Path | None = None
    try:
        wait_for(lambda: bool(pool_files(server)[1]), 15, "the slow upload's bytes in the pool")
        filler = fill(spool_fs)
    finally:
        release.set()
        uploader.join(30)
    assert answer, "the slow upload got no answer"
    assert_refused(answer[0], slow)
    refused.append(slow)
    assert filler is not None

    r = put(f"{folder}/full.txt", b"refused")
    assert_refused(r, f"{folder}/full.txt")
    refused.append(f"{folder}/full.txt")
    got = s.get(f"{server.webdav}{committed[0]}")
    assert got.status_code == 200 and got.content == committed[0].encode()
    expected += read(committed[0])
    assert_absent(s, server, folder, refused, committed)

    filler.unlink()
    deadline = time.monotonic() + 15  # the publisher retries a failed append after at most 2 s
    path = f"{folder}/after.txt"
    while (r := put(path, path.encode())).status_code == 507 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    committed.append(path)
    expected += written(path)
    assert delivered(broker, topic, folder, len(expected), timeout=60) == expected, \
        "billing records lost, duplicated or out of order"
    wait_for(lambda: not spool_rows(spool_dir)[1], 30, "the spool to drain")
    assert spool_rows(spool_dir)[0] == "ok"
    assert_absent(s, server, folder, refused, committed)
    log = server_log(capfd)
    assert "Traceback" not in log, log[-3000:]
    print(f"\nspool full, broker up: uploads committed {len(committed)}, refused {len(refused)}, "
          f"statuses {dict(statuses)}, records expected and delivered {len(expected)}, lost 0")


# -- the spool itself -----------------------------------------------------------------------------


def test_a_failed_append_leaves_the_spool_as_it_was(spool_fs: Path) -> None:
    """ENOSPC in the middle of an append: the transaction is rolled back, the spool is sound and unchanged."""
    from airflow_dcache.server.services.billing.spool_space import SpaceAwareSpool, is_out_of_space

    spool = SpaceAwareSpool(spool_fs / "spool" / "billing-spool.db")
    try:
        def record(name: str) -> bytes:
            return json.dumps({"msgType": "transfer", "billingPath": name, "pad": "x" * 1000}).encode()

        before = [spool.append("t", [record(f"/kept-{i}")]) for i in range(20)]
        filler = fill(spool_fs)
        with pytest.raises(Exception) as failed:
            spool.append("t", [os.urandom(3000) for _ in range(200)])  # far more than the WAL's working area
        assert is_out_of_space(failed.value), failed.value
        assert [r.seq for r in spool.after(0, 1000)] == before and spool.count() == 20
        # a second, read-only connection sees a sound file holding exactly the records appended before
        assert spool_rows(spool.path.parent) == ("ok", [("transfer", f"/kept-{i}", None) for i in range(20)])
        filler.unlink()
        after = spool.append("t", [record("/next")])
        assert after > before[-1] and spool_rows(spool.path.parent)[1][-2:] == [("transfer", "/kept-19", None),
                                                                                 ("transfer", "/next", None)]
    finally:
        spool.close()
