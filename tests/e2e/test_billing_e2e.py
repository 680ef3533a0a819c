"""End to end: bundled service → Kafka (tansu) → DCacheBillingEventTrigger in a real triggerer → DAG runs.

A burst of 100 uploads within about a second must reach a plain ``schedule=[asset]`` consumer DAG, every
file exactly once, without a later upload to flush them (the one-row asset queue of Airflow 3.3.2).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.kafka_broker import CONSUMER_DEFAULTS, KafkaBroker, unique_topic

DAG_FILE = Path(__file__).parent / "dags" / "billing_burst.py"
FILES = 100


def test_burst_of_100_uploads_processed_exactly_once(tmp_path: Path, kafka_broker: KafkaBroker, start_dcache: Any,
                                                     airflow_stack: Any) -> None:
    topic = unique_topic()
    kafka_broker.create_topic(topic)
    server = start_dcache("--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", topic, name="billing-e2e")
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    out = tmp_path / "processed.txt"
    out.touch()
    config = {"bootstrap.servers": kafka_broker.bootstrap, "enable.auto.commit": False, **CONSUMER_DEFAULTS}
    stack = airflow_stack(dags, {
        "AIRFLOW_CONN_KAFKA_BILLING_E2E": json.dumps({"conn_type": "kafka", "extra": config}),
        "BILLING_E2E_TOPIC": topic,
        "BILLING_E2E_OUT": str(out),
    }, dag_ids=["billing_burst"])

    session = requests.Session()
    session.auth = server.auth("alice")
    assert session.request("MKCOL", f"{server.webdav}/home/alice/burst", timeout=30).status_code == 201
    paths = [f"/home/alice/burst/f{i:03d}.dat" for i in range(FILES)]

    def put(path: str) -> int:
        return requests.put(f"{server.webdav}{path}", data=path.encode(), auth=server.auth("alice"),
                            timeout=30).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, paths)) == {201}
    burst_seconds = time.monotonic() - started

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        seen = out.read_text().split()
        if set(paths) <= set(seen):
            break
        time.sleep(1)
    seen = out.read_text().split()
    assert sorted(set(seen)) == paths, (f"burst took {burst_seconds:.1f}s; missing "
                                        f"{sorted(set(paths) - set(seen))[:10]}", stack.log_path("triggerer"))
    time.sleep(8)  # a late duplicate (e.g. a flush run re-reading a batch) would show up by now
    seen = out.read_text().split()
    assert len(seen) == len(set(seen)) == FILES, "a file was processed twice"
    runs = stack.api.dag_runs("billing_burst")
    assert runs and all(r["state"] in ("success", "running", "queued") for r in runs), runs
