"""The documentation site builds with ``mkdocs build --strict`` and the benchmark plots come from results JSON."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.packaging


def _plots() -> dict:
    return runpy.run_path(str(ROOT / "scripts" / "plot_benchmarks.py"), run_name="plots")


def _stats(p50: float) -> dict:
    return {"n": 3, "p50_ms": p50, "p99_ms": p50 * 2, "max_ms": p50 * 2, "mean_ms": p50}


def test_plots_from_results_and_placeholders(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results, out = tmp_path / "results", tmp_path / "plots"
    results.mkdir()
    (results / "events-20260101T000000Z.json").write_text(json.dumps({"benchmark": "events", "results": {
        "rate": [{"rate": 20.0, "latency": _stats(8.0)}],
        "polling": [{"interval_s": 1.0, "rate": 10.0, "latency": _stats(480.0)}]}}))
    (results / "transfer-20260101T000000Z.json").write_text(json.dumps({"benchmark": "transfer", "rows": [
        {"op": "GET", "size": "1M", "error": None,
         "servers": {"nginx": {"mb_per_s": 1200.0}, "ours": {"mb_per_s": 400.0}}}]}))
    (results / "broken.json").write_text("{not json")
    assert _plots()["main"](["--results", str(results), "--out", str(out)]) == 0
    for name in ("events-vs-polling.png", "transfer-vs-nginx.png", "billing.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "`events-20260101T000000Z.json`" in summary and "`transfer-20260101T000000Z.json`" in summary
    assert "| `billing.png` | no results (placeholder) | |" in summary


def test_mkdocs_build_strict(docs_site: Path) -> None:
    site = docs_site
    for page in ("index.html", "testing/index.html", "deployment/index.html", "reference/hooks/index.html",
                 "benchmarks/index.html", "changelog/index.html", "compatibility/index.html"):
        assert (site / page).is_file(), page
    hooks = (site / "reference" / "hooks" / "index.html").read_text()
    assert "DCacheHook" in hooks and "NamespaceEntry" in hooks  # generated from the docstrings
    assert "plots/events-vs-polling.png" in (site / "benchmarks" / "index.html").read_text()
