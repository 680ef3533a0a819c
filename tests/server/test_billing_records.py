"""Billing serializers against the reference's examples (§5.5, §5.6) and the JVM value formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from airflow_dcache.server.services.billing import javafmt as jf
from airflow_dcache.server.services.billing import records as r
from airflow_dcache.server.services.billing.door import macaroon_principal
from airflow_dcache.server.services.billing.events import RecordBuilder
from airflow_dcache.server.services.billing.settings import (
    BillingConfigError,
    KafkaSettings,
    parse_bootstrap,
    parse_config_options,
    parse_topic,
)
from airflow_dcache.server.services.events import TransferEvent

CEST = timezone(timedelta(hours=2))
PNFSID = "0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A"
PATH = "/data/foo/clip.mp4"
POOL = r.Cell("pool_a", "pool", "poolDomain")
DOOR = r.Cell("WebDAV-door01", "door", "webdavDomain")
DOOR_SESSION = "door:WebDAV-door01@webdavDomain:AAYYz1cNu2A:1715674866:12"
ALICE = ["UidPrincipal[1000]", "GidPrincipal[1000,primary]", "UserNamePrincipal[alice]", "Origin[198.51.100.7]"]

# §5.5, record 1 (from the pool), verbatim.
EXAMPLE_TRANSFER = """
{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07.512+02:00","queuingTime":0,
 "cellName":"pool_a","cellType":"pool","cellDomain":"poolDomain",
 "meanWriteBandwidth":1.2582912E8,"writeIdle":"PT0.004S","writeActive":"PT0.83S",
 "localEndpoint":"192.0.2.21:20473",
 "status":{"code":0,"msg":""},
 "session":"pool:pool_a@poolDomain:1715674867512-88",
 "subject":["UidPrincipal[1000]","GidPrincipal[1000,primary]","UserNamePrincipal[alice]",
            "Origin[198.51.100.7]","MacaroonPrincipal[pFM052rS:k3ozT6qZ]"],
 "pnfsid":"0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A","billingPath":"/data/foo/clip.mp4",
 "fileSize":104857600,"storageInfo":"foo:video@osm",
 "transferSize":104857600,"transferTime":842,"isWrite":"write",
 "protocolInfo":{"protocol":"Https","versionMajor":1,"versionMinor":1,"transferTag":"",
                 "port":53122,"host":"198.51.100.7"},
 "initiator":"door:WebDAV-door01@webdavDomain:AAYYz1cNu2A:1715674866:12",
 "isP2p":false,"transferPath":"/data/foo/clip.mp4"}
"""

# §5.5, record 2 (from the door), verbatim; its moverInfo is shortened in the reference.
EXAMPLE_REQUEST = """
{"VERSION":"1.0","msgType":"request","date":"2024-05-14T10:21:07.530+02:00","queuingTime":0,
 "cellName":"WebDAV-door01","cellType":"door","cellDomain":"webdavDomain",
 "status":{"code":0,"msg":""},
 "session":"door:WebDAV-door01@webdavDomain:AAYYz1cNu2A:1715674866:12","sessionDuration":1187,
 "transferPath":"/data/foo/clip.mp4",
 "subject":["UidPrincipal[1000]","GidPrincipal[1000,primary]","UserNamePrincipal[alice]","Origin[198.51.100.7]"],
 "client":"198.51.100.7","clientChain":"198.51.100.7","mappedUID":1000,"mappedGID":1000,"owner":"alice",
 "pnfsid":"0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A","billingPath":"/data/foo/clip.mp4",
 "fileSize":104857600,"storageInfo":"foo:video@osm",
 "moverInfo":{"version":"1.0","msgType":"transfer","date":"2024-05-14T10:21:07.512+02:00","queuingTime":0,
   "cellName":"pool_a","cellType":"pool","cellDomain":"poolDomain","status":{"code":0,"msg":""},
   "session":"pool:pool_a@poolDomain:1715674867512-88","transferSize":104857600,"transferTime":842,
   "isWrite":"write","protocolInfo":{"protocol":"Https","versionMajor":1,"versionMinor":1,"transferTag":"",
   "port":53122,"host":"198.51.100.7"},"isP2p":false,"transferPath":"/data/foo/clip.mp4"}}
"""

# §5.6, the WebDAV DELETE, verbatim.
EXAMPLE_REMOVE = """
{"VERSION":"1.0","msgType":"remove","date":"2024-05-14T11:02:44.101+02:00","queuingTime":0,
 "cellName":"WebDAV-door01","cellType":"door","cellDomain":"webdavDomain",
 "status":{"code":0,"msg":""},
 "session":"door:WebDAV-door01@webdavDomain:1715677364101-4711","sessionDuration":0,
 "transferPath":"/data/foo/clip.mp4",
 "subject":["UidPrincipal[1000]","GidPrincipal[1000,primary]","UserNamePrincipal[alice]","Origin[198.51.100.7]"],
 "client":"198.51.100.7","clientChain":"unknown","mappedUID":1000,"mappedGID":1000,"owner":"alice",
 "pnfsid":"0000C9B4E3A29F7E4B0C8D9A3F1E2D3C4B5A","billingPath":"/data/foo/clip.mp4","fileSize":104857600}
"""


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def example_mover() -> r.MoverInfo:
    return r.MoverInfo(
        cell=POOL, date_ms=ms("2024-05-14T10:21:07.512+02:00"), session="pool:pool_a@poolDomain:1715674867512-88",
        subject=[*ALICE, "MacaroonPrincipal[pFM052rS:k3ozT6qZ]"], pnfsid=PNFSID, file_size=104857600,
        transfer_size=104857600, transfer_time=842, is_write=True,
        protocol_info=r.ProtocolInfo("Https", "198.51.100.7", 53122), initiator=DOOR_SESSION,
        billing_path=PATH, transfer_path=PATH, storage_info=r.storage_info_string("foo:video", "osm"),
        write=r.IoStats(mean_bandwidth=1.2582912e8, idle_ms=4, active_ms=830), local_endpoint="192.0.2.21:20473",
    )


def example_request() -> r.DoorRequestInfo:
    return r.DoorRequestInfo(
        cell=DOOR, date_ms=ms("2024-05-14T10:21:07.530+02:00"), session=DOOR_SESSION, subject=ALICE,
        client="198.51.100.7", client_chain="198.51.100.7", uid=1000, gid=1000, owner="alice", pnfsid=PNFSID,
        file_size=104857600, billing_path=PATH, transfer_path=PATH, session_duration=1187,
        storage_info="foo:video@osm", mover=example_mover(),
    )


def roundtrip(record: dict) -> dict:
    """What a consumer sees: the bytes on the wire, parsed."""
    return json.loads(r.encode(record))


# -- §5.5 / §5.6 -----------------------------------------------------------------------------------


def test_pool_transfer_matches_reference_example_exactly() -> None:
    expected = json.loads(EXAMPLE_TRANSFER)
    got = roundtrip(r.transfer_record(example_mover(), CEST))
    assert got == expected
    assert list(got) == list(expected)  # same key order as the reference
    assert '"meanWriteBandwidth":1.2582912E8' in r.encode(r.transfer_record(example_mover(), CEST)).decode()


def test_door_request_matches_reference_example() -> None:
    expected = json.loads(EXAMPLE_REQUEST)
    got = roundtrip(r.door_record(example_request(), CEST))
    mover = got.pop("moverInfo")
    expected_mover = expected.pop("moverInfo")
    # The reference writes ".530"; java.time's ISO_OFFSET_DATE_TIME drops trailing zeros of the fraction.
    assert got["date"] == "2024-05-14T10:21:07.53+02:00"
    assert datetime.fromisoformat(expected["date"]) == datetime.fromisoformat(got["date"])
    expected["date"] = got["date"]
    assert got == expected
    assert list(got) == list(expected)
    # The reference shortened moverInfo; the real one also has the bandwidth, idle/active and endpoint keys.
    extra_keys = {"meanWriteBandwidth", "writeIdle", "writeActive", "localEndpoint"}
    assert set(mover) - set(expected_mover) == extra_keys
    assert {k: v for k, v in mover.items() if k not in extra_keys} == expected_mover
    assert [k for k in mover if k not in extra_keys] == list(expected_mover)
    for redundant in ("subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo"):
        assert redundant not in mover


def test_door_remove_matches_reference_example_exactly() -> None:
    remove = r.DoorRequestInfo(
        cell=DOOR, date_ms=ms("2024-05-14T11:02:44.101+02:00"),
        session=DOOR.transaction(1715677364101, 4711), subject=ALICE, client="198.51.100.7", uid=1000, gid=1000,
        owner="alice", pnfsid=PNFSID, file_size=104857600, billing_path=PATH, transfer_path=PATH,
        msg_type="remove",
    )
    expected = json.loads(EXAMPLE_REMOVE)
    got = roundtrip(r.door_record(remove, CEST))
    assert got == expected
    assert list(got) == list(expected)


def test_pool_remove_record_shape() -> None:
    rec = roundtrip(r.pool_remove_record(r.PoolRemoveInfo(
        cell=POOL, date_ms=ms("2024-05-14T11:05:00.000+02:00"), transaction="pool:pool_a@poolDomain:1-90",
        pnfsid=PNFSID, file_size=104857600, reason="sweeper", storage_info="foo:video@osm"), CEST))
    assert list(rec) == ["version", "msgType", "date", "queuingTime", "transaction", "cellName", "cellType",
                         "cellDomain", "status", "session", "subject", "pnfsid", "billingPath", "fileSize",
                         "storageInfo"]
    assert rec["subject"] == ["UidPrincipal[0]", "GidPrincipal[0,primary]"]
    assert rec["billingPath"] == "Unknown"
    assert rec["status"] == {"code": 0, "msg": "sweeper"}
    assert rec["date"] == "2024-05-14T11:05:00+02:00"  # java.time prints no fraction for a whole second


@pytest.mark.parametrize("kind", ["store", "restore"])
def test_storage_record_shape(kind: str) -> None:
    msg = r.StorageInfoMsg(
        msg_type=kind, cell=POOL, date_ms=ms("2024-05-14T12:00:00.250+02:00"),
        transaction="pool:pool_a@poolDomain:1715680800250-91", pnfsid=PNFSID, file_size=104857600,
        storage_info="foo:video@osm", transfer_time=1234, billing_path=PATH,
        hsm=r.HsmInfo("osm", "osm", "script"), locations=["osm://osm/?store=foo&group=video&bfid=x"])
    rec = roundtrip(r.storage_record(msg, CEST))
    assert list(rec) == ["version", "msgType", "date", "queuingTime", "transaction", "cellName", "cellType",
                         "cellDomain", "status", "session", "pnfsid", "billingPath", "fileSize", "storageInfo",
                         "transferTime", "hsm", "locations"]
    assert rec["msgType"] == kind and rec["cellType"] == "pool" and rec["version"] == "1.0"
    assert rec["session"] == rec["transaction"]
    assert rec["hsm"] == {"type": "osm", "instance": "osm", "provider": "script"}
    assert rec["date"] == "2024-05-14T12:00:00.25+02:00"
    with pytest.raises(ValueError):
        r.storage_record(r.StorageInfoMsg("transfer", POOL, 0, "t", PNFSID, 0, None, 0))


def test_nulls_are_omitted_not_written() -> None:
    mover = r.MoverInfo(cell=POOL, date_ms=0, session="s", subject=[], pnfsid=PNFSID, file_size=0, transfer_size=0,
                        transfer_time=0, is_write=False, protocol_info=r.ProtocolInfo("Http", "127.0.0.1", 1),
                        initiator="i")
    text = r.encode(r.transfer_record(mover, CEST)).decode()
    assert "null" not in text
    rec = json.loads(text)
    for key in ("storageInfo", "localEndpoint", "meanReadBandwidth", "readActive", "meanWriteBandwidth"):
        assert key not in rec
    assert rec["billingPath"] == "Unknown" and rec["isWrite"] == "read" and rec["isP2p"] is False
    no_msg = roundtrip({"status": r.Status(3, None).to_json()})
    assert no_msg == {"status": {"code": 3}}


# -- from TransferEvent ----------------------------------------------------------------------------


def event(kind: str, **kw: object) -> TransferEvent:
    base: dict = dict(kind=kind, path=PATH, inode_id=PNFSID, size=104857600, transferred=104857600,
                      started_ms=ms("2024-05-14T10:21:06.343+02:00"), finished_ms=ms("2024-05-14T10:21:07.185+02:00"),
                      username="alice", uid=1000, gids=(1000, 3000), client="198.51.100.7")
    base.update(kw)
    return TransferEvent(**base)


def builder() -> RecordBuilder:
    return RecordBuilder(POOL, DOOR, CEST)


def test_upload_event_gives_pool_transfer_then_door_request() -> None:
    extra = {"protocol": "Https", "client_port": 53122, "local_endpoint": "192.0.2.21:20473",
             "macaroon": "pFM052rS:k3ozT6qZ"}
    transfer, request = (json.loads(v) for v in builder().encoded(event("upload", extra=extra)))
    assert (transfer["msgType"], transfer["cellType"], transfer["isWrite"]) == ("transfer", "pool", "write")
    assert transfer["subject"] == ["UidPrincipal[1000]", "GidPrincipal[1000,primary]", "GidPrincipal[3000]",
                                   "UserNamePrincipal[alice]", "Origin[198.51.100.7]",
                                   "MacaroonPrincipal[pFM052rS:k3ozT6qZ]"]
    assert transfer["protocolInfo"] == {"protocol": "Https", "versionMajor": 1, "versionMinor": 1,
                                        "transferTag": "", "port": 53122, "host": "198.51.100.7"}
    assert transfer["transferTime"] == 842 and transfer["writeActive"] == "PT0.842S"
    assert transfer["writeIdle"] == "PT0S" and transfer["meanWriteBandwidth"] == pytest.approx(104857600 / 0.842)
    assert "readActive" not in transfer and "storageInfo" not in transfer
    assert transfer["date"] == "2024-05-14T10:21:07.185+02:00"
    assert transfer["session"].startswith("pool:pool_a@poolDomain:")
    assert transfer["initiator"] == request["session"] and request["session"].startswith("door:WebDAV-door01@")
    assert request["VERSION"] == "1.0" and "version" not in request
    assert (request["msgType"], request["cellType"], request["client"], request["clientChain"]) == (
        "request", "door", "198.51.100.7", "198.51.100.7")
    assert (request["mappedUID"], request["mappedGID"], request["owner"]) == (1000, 1000, "alice")
    assert request["sessionDuration"] == 842
    assert request["moverInfo"]["session"] == transfer["session"]


def test_download_event_reads() -> None:
    transfer, request = (json.loads(v) for v in builder().encoded(event("download", transferred=10)))
    assert transfer["isWrite"] == "read" and transfer["transferSize"] == 10
    assert "readActive" in transfer and "writeActive" not in transfer
    assert transfer["protocolInfo"]["protocol"] == "Http" and transfer["protocolInfo"]["port"] == 0
    assert request["moverInfo"]["isWrite"] == "read"


def test_remove_event_gives_one_door_remove() -> None:
    (only,) = builder().encoded(event("remove", transferred=0))
    rec = json.loads(only)
    assert list(rec) == list(json.loads(EXAMPLE_REMOVE))
    assert rec["clientChain"] == "unknown" and rec["sessionDuration"] == 0 and "moverInfo" not in rec


def test_tape_events_and_ignored_kinds() -> None:
    (store,) = builder().encoded(event("store", username="root", uid=0, gids=(0,), client="",
                                       extra={"hsm": "main-hsm", "hsm_uri": "main-hsm://main-hsm/?bfid=X"}))
    rec = json.loads(store)
    assert rec["msgType"] == "store" and rec["hsm"] == {"type": "main-hsm", "instance": "main-hsm",
                                                        "provider": "copy"}
    assert rec["locations"] == ["main-hsm://main-hsm/?bfid=X"] and "storageInfo" not in rec
    (restore,) = builder().encoded(event("restore", extra={"hsm": "osm", "storage_class": "foo:video"}))
    assert json.loads(restore)["storageInfo"] == "foo:video@osm"
    assert builder().encoded(event("mkdir")) == []


def test_third_party_copy_uses_remote_endpoint() -> None:
    tpc = event("upload", extra={"protocol": "RemoteHttpsDataTransfer", "tpc": "pull",
                                 "remote": "https://remote.example:8443/x"})
    info = json.loads(builder().encoded(tpc)[0])["protocolInfo"]
    assert (info["protocol"], info["host"], info["port"]) == ("RemoteHttpsDataTransfer", "remote.example", 8443)


def test_counter_makes_sessions_unique() -> None:
    b = builder()
    sessions = {json.loads(v)["session"] for _ in range(50) for v in b.encoded(event("upload"))}
    assert len(sessions) == 100


# -- JVM formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("millis", "text"), [
    (0, "PT0S"), (4, "PT0.004S"), (830, "PT0.83S"), (1000, "PT1S"), (1500, "PT1.5S"), (60000, "PT1M"),
    (62500, "PT1M2.5S"), (3600000, "PT1H"), (3723004, "PT1H2M3.004S"), (90061000, "PT25H1M1S"),
])
def test_java_duration(millis: int, text: str) -> None:
    assert jf.java_duration(millis) == text


@pytest.mark.parametrize(("value", "text"), [
    (1.2582912e8, "1.2582912E8"), (1e7, "1.0E7"), (9999999.0, "9999999"), (123.0, "123"), (2.5, "2.5"),
    (0.001, "0.001"), (0.00015, "1.5E-4"), (0.0, "0"), (1e22, "1.0E22"), (104857600 / 0.842, "1.2453396674584323E8"),
])
def test_org_json_double(value: float, text: str) -> None:
    assert jf.org_json_number(value) == text


def test_java_double_to_string_keeps_point() -> None:
    assert jf.java_double_to_string(123.0) == "123.0"
    assert jf.java_double_to_string(0.0) == "0.0"
    assert jf.java_double_to_string(-2.5e-5) == "-2.5E-5"


@pytest.mark.parametrize(("tz", "millis", "text"), [
    (CEST, 512, "2024-05-14T10:21:07.512+02:00"),
    (CEST, 510, "2024-05-14T10:21:07.51+02:00"),
    (CEST, 0, "2024-05-14T10:21:07+02:00"),
    (UTC, 512, "2024-05-14T08:21:07.512Z"),
    (timezone(timedelta(hours=-5, minutes=-30)), 1, "2024-05-14T02:51:07.001-05:30"),
])
def test_iso_offset_date_time(tz: timezone, millis: int, text: str) -> None:
    base = int(datetime(2024, 5, 14, 8, 21, 7, tzinfo=UTC).timestamp()) * 1000
    assert jf.iso_offset_date_time(base + millis, tz) == text
    assert datetime.fromisoformat(text).timestamp() * 1000 == pytest.approx(base + millis)


def test_date_in_local_zone_by_default() -> None:
    now = 1715674867512
    expected = datetime.fromtimestamp(now / 1000).astimezone()
    assert datetime.fromisoformat(jf.iso_offset_date_time(now)) == expected


@pytest.mark.parametrize(("host", "java", "uri"), [
    ("198.51.100.7", "198.51.100.7", "198.51.100.7:80"),
    ("::1", "0:0:0:0:0:0:0:1", "[::1]:80"),
    ("2001:db8::7", "2001:db8:0:0:0:0:0:7", "[2001:db8::7]:80"),
    ("::ffff:10.1.2.3", "10.1.2.3", "10.1.2.3:80"),
    ("dcache.example.org", "dcache.example.org", "dcache.example.org:80"),
])
def test_addresses(host: str, java: str, uri: str) -> None:
    assert jf.java_host_address(host) == java
    assert jf.uri_host_port(host, 80) == uri


def test_org_json_string_escapes() -> None:
    text = jf.to_json({"p": '</a b/"c"\\\n\t\x01\x85\u2028é', "n": None, "l": [1, True, None]})
    assert text == '{"p":"<\\/a b/\\"c\\"\\\\\\n\\t\\u0001\\u0085\\u2028é","l":[1,true,null]}'
    assert json.loads(text)["p"] == '</a b/"c"\\\n\t\x01\x85\u2028é'
    assert jf.to_json('a"b\\\x01\n\x7f') == '"a\\"b\\\\\\u0001\\n\x7f"'  # ASCII-only fast path


def test_macaroon_principal_name() -> None:
    from airflow_dcache.macaroons.codec import add_first_party_caveat, create, deserialize, serialize

    token = serialize(add_first_party_caveat(create(b"k" * 32, "id-1", "loc"), "iid:pFM052rS"))
    sig = deserialize(token).signature
    import base64

    assert macaroon_principal(token) == "pFM052rS:" + base64.b64encode(sig[:6]).decode()
    assert (macaroon_principal(serialize(create(b"k" * 32, "id-1"))) or "").startswith("-:")
    assert macaroon_principal("not a macaroon") is None and macaroon_principal(None) is None


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["127.0.0.1:9092", "localhost:1", "a:9092,b.example.org:9093", "[::1]:9092"])
def test_bootstrap_accepts(good: str) -> None:
    assert parse_bootstrap(good) == good


@pytest.mark.parametrize("bad", ["", "localhost", "localhost:", ":9092", "host:0", "host:65536", "host:abc",
                                 "a:1,,b:2", "http://host:9092", "[::1]", "ho st:1"])
def test_bootstrap_rejects_naming_the_option(bad: str) -> None:
    with pytest.raises(BillingConfigError, match="--kafka-bootstrap"):
        parse_bootstrap(bad)


def test_topic_and_config_options() -> None:
    assert parse_topic("billing") == "billing"
    for bad in ("", "a b", "x" * 250, ".."):
        with pytest.raises(BillingConfigError, match="--kafka-topic"):
            parse_topic(bad)
    assert parse_config_options(["linger.ms=1", "client.id = x "]) == (("linger.ms", "1"), ("client.id", "x"))
    for bad in ("linger.ms", "=1", "acks=1", "enable.idempotence=false", "bootstrap.servers=x:1"):
        with pytest.raises(BillingConfigError, match="--kafka-config"):
            parse_config_options([bad])
    conf = KafkaSettings("h:1", options=(("message.timeout.ms", "3000"),)).producer_config()
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["message.timeout.ms"] == "3000" and conf["bootstrap.servers"] == "h:1"
