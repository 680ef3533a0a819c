"""Each benchmark runs end to end on a tiny workload, so a change to the service cannot silently break it.

These check that the benchmarks work, not how fast anything is: exit status 0 (targets met) and 1
(targets missed) are both fine here; 2 means a row or a server failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path: Path, *args: str, timeout: float = 240) -> dict:
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "airflow_dcache.cli", "bench", *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


def test_transfer_benchmark_runs(tmp_path: Path) -> None:
    result = bench(tmp_path, "transfer", "--sizes", "1M", "--repeat", "1", "--only", "ours")
    rows = result["rows"]
    assert {r["op"] for r in rows} >= {"PUT", "GET"} and not [r for r in rows if r["error"]]


def test_events_benchmark_runs(tmp_path: Path) -> None:
    result = bench(tmp_path, "events", "--rates", "20", "--duration", "1", "--channels", "3",
                   "--fanout-uploads", "2", "--fanout-rate", "2", "--poll-intervals", "0.5", "--poll-rate", "5")
    assert result["results"]["errors"] == []
    (rate,) = result["results"]["rate"]
    assert rate["received"] == rate["uploads"] == 20 and rate["latency"]["p50_ms"] > 0


def test_billing_benchmark_runs(tmp_path: Path) -> None:
    result = bench(tmp_path, "billing", "--events", "200", "--repeat", "1")
    assert all(result["summary"][phase]["records_per_second"] > 0 for phase in ("live", "spool", "drain"))


def test_trigger_events_benchmark_runs(tmp_path: Path) -> None:
    result = bench(tmp_path, "trigger_events", "--rate", "20", "--duration", "1", "--events", "2000",
                   "--repeat", "1", "--kafka-records", "200", "--dirs", "5", "--idle", "1", timeout=300)
    res = result["results"]
    assert res["errors"] == []
    for trigger in res["latency"]["triggers"].values():
        assert trigger["seen"] == trigger["yielded"] == res["latency"]["uploads"] == 20
    assert res["latency"]["polling"]["measured"]["detected"] == 20
    assert res["throughput"]["events_per_s"] > 0 and res["kafka"]["records_per_s"] > 0
    assert res["requests"]["watched"] == 5 and res["requests"]["start"]["requests"] > 0


def test_trigger_billing_benchmark_runs(tmp_path: Path) -> None:
    result = bench(tmp_path, "trigger_billing", "--records", "200", "--repeat", "1")
    assert result["records_per_s"] > 0 and result["matching_events"] > 0


def test_pipeline_benchmark_runs(tmp_path: Path) -> None:
    """Both designs, sustained mode (2 uploads 1 s apart), and the scheduler's loop time over statsd."""
    result = bench(tmp_path, "pipeline", "--rate", "1", "--duration", "2", timeout=900)
    assert result["speedup_last_output"] > 0
    for design in result["designs"]:
        assert design["files"] == 2 and design["latency_seconds"]["archived + lineage"]["p50"] > 0, design
        assert design["scheduler_loop"]["loops"] > 0 and design["scheduler_loop"]["p50_ms"] > 0, design
        assert design["sustained"]["rate_per_s"] == 1 and design["sustained"]["backlog_max"] >= 1, design


def test_functions_benchmark_runs(tmp_path: Path) -> None:
    """Two files, local runtime only (the docker rows need built images; tests/functions covers them)."""
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "benchmarks/functions.py", "--files", "2", "--runtimes", "local",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {r["mode"]: r for r in result["rows"]}
    assert rows["cold"]["ok"] == rows["warm"]["ok"] == 2 and result["errors"] == []
    assert rows["warm"]["instances_started"] == 1 and rows["warm"]["cold_start_s"] > 0
