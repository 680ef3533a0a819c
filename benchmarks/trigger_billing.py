"""Events/s the Kafka billing trigger sustains in its own work: parsing + mapping records, filtering, payloads.

No broker: the records are the bundled service's real serializer output, fed to the producer's
``build_batch`` (what runs per consumed burst) and the trigger's ``payloads`` (what runs per watcher).
``.venv/bin/python benchmarks/trigger_billing.py [--records 50000] [--repeat 3]``; JSON to
``benchmarks/results/trigger-billing.json`` and a table on stdout. Goal: >= 50,000 records/s. The
reference, measured in the same run on the same records: the standard library's ``json.loads`` of each
record and nothing else (what decoding alone costs before any mapping).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

from airflow_dcache.server.services.billing import records as rec
from airflow_dcache.triggers.billing import DCacheBillingEventTrigger

RESULTS = Path(__file__).parent / "results"


class _Message:
    """The five methods of ``confluent_kafka.Message`` that ``build_batch`` calls."""

    __slots__ = ("_offset", "_value")

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def topic(self) -> str:
        return "billing"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None


def records(count: int) -> list[bytes]:
    """Half pool transfers, half door requests (what an upload publishes), 1 in 10 under /data/in."""
    pool = rec.Cell("pool_a", "pool", "poolDomain")
    door = rec.Cell("WebDAV-door01", "door", "webdavDomain")
    out = []
    for i in range(count // 2):
        path = f"/data/{'in' if i % 10 == 0 else 'other'}/run{i}.h5"
        mover = rec.MoverInfo(cell=pool, date_ms=1_715_674_867_512 + i, session=f"pool:pool_a@poolDomain:{i}",
                              subject=rec.subject_principals(1000, [1000, 3000], "alice", origin="10.0.0.7"),
                              pnfsid=f"{i:036X}", file_size=1 << 20, transfer_size=1 << 20, transfer_time=80,
                              is_write=True, protocol_info=rec.ProtocolInfo("Https", "10.0.0.7", 40000 + i % 1000),
                              initiator=f"door:x:{i}", billing_path=path, transfer_path=path,
                              write=rec.IoStats(1.25e8, 1, 80), local_endpoint="10.0.0.2:20000")
        out.append(rec.encode(rec.transfer_record(mover)))
        out.append(rec.encode(rec.door_record(rec.DoorRequestInfo(
            cell=door, date_ms=1_715_674_867_530 + i, session=f"door:x:{i}", subject=mover.subject,
            client="10.0.0.7", uid=1000, gid=1000, owner="alice", pnfsid=mover.pnfsid, file_size=1 << 20,
            billing_path=path, transfer_path=path, mover=mover))))
    return out


def run(count: int, repeat: int, burst: int = 5000) -> dict[str, Any]:
    values = records(count)
    messages = [_Message(i, v) for i, v in enumerate(values)]
    trigger = DCacheBillingEventTrigger(topics=["billing"], site="main", include=["/data/in"], exclude=["*.tmp"])
    producer = DCacheBillingEventTrigger.create_shared_stream_producer(trigger.serialize()[1])
    parse, total, cpu, reference = [], [], [], []
    events = 0
    for _ in range(repeat):
        gc.collect()  # each repeat starts from the same heap, not the previous repeat's garbage
        r0 = time.perf_counter()
        decoded = [json.loads(v) for v in values]
        reference.append(count / (time.perf_counter() - r0))
        del decoded
        gc.collect()
        chunks: list[Any] = [messages[i:i + burst] for i in range(0, len(messages), burst)]
        # burst by burst, as the stream runs: the producer maps a burst, the watcher takes its payloads, and
        # the burst is let go before the next one is consumed
        mapping, events = 0.0, 0
        c0, t0 = time.process_time(), time.perf_counter()
        for chunk in chunks:
            m0 = time.perf_counter()
            batch = producer.build_batch(chunk)[0]
            mapping += time.perf_counter() - m0
            events += sum(p["count"] for p in trigger.payloads(batch))
            del batch
        t2, c2 = time.perf_counter(), time.process_time()
        parse.append(count / mapping)
        total.append(count / (t2 - t0))
        cpu.append(count / max(c2 - c0, 1e-9))
    # CPU time besides wall time: on a shared machine the wall figure swings with the neighbours' load.
    return {"records": count, "repeat": repeat, "burst": burst, "matching_events": events,
            "parse_records_per_s": statistics.median(parse), "records_per_s": statistics.median(total),
            "cpu_records_per_s": statistics.median(cpu), "goal_records_per_s": 50_000,
            "reference_json_loads_per_s": statistics.median(reference)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", "--output", dest="output", type=Path, default=RESULTS / "trigger-billing.json")
    args = parser.parse_args(argv)
    result = run(args.records, args.repeat)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'measure':<40} {'value':>12} {'goal':>10}")
    print(f"{'parse+map (producer), records/s':<40} {result['parse_records_per_s']:>12,.0f} {'':>10}")
    print(f"{'parse+map+filter+payload, records/s':<40} {result['records_per_s']:>12,.0f} {50_000:>10,}")
    print(f"{'  the same per CPU second, records/s':<40} {result['cpu_records_per_s']:>12,.0f} {'':>10}")
    print(f"{'matching events (1 in 10 uploads)':<40} {result['matching_events']:>12,}")
    print(f"{'reference: json.loads alone, records/s':<40} {result['reference_json_loads_per_s']:>12,.0f} {'':>10}")
    return 0 if result["records_per_s"] >= result["goal_records_per_s"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
