#!/usr/bin/env python3
"""Plot the newest benchmark results (``benchmarks/results/*.json``) as PNGs for the docs site.

Writes into ``docs/benchmarks/plots/`` (generated, not committed):

* ``events-vs-polling.png``: time from upload to notice, SSE storage events vs namespace polling;
* ``transfer-vs-nginx.png``: throughput of the service's data path vs nginx per operation and size;
* ``billing.png``: billing records per second to Kafka, live / spooled / drained;
* ``summary.md``: which result file each plot came from (included by ``docs/benchmarks/index.md``).

A benchmark without results still gets a PNG saying so, so the site builds (``mkdocs --strict``)
before ``make bench`` has run; the summary says which plots are placeholders.

Usage: ``python scripts/plot_benchmarks.py [--results DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "benchmarks" / "plots"


def newest(results: Path, name: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest result file of benchmark ``name`` (by its ``benchmark`` field or file-name prefix)."""
    found = []
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (data.get("benchmark") == name or path.name.startswith(f"{name}-")):
            found.append((path.stat().st_mtime, path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda item: item[0])
    return path, data


def _figure(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def placeholder(path: Path, title: str) -> None:
    fig, ax = _figure(title)
    ax.axis("off")
    ax.text(0.5, 0.5, "no results yet: run `make bench`", ha="center", va="center", fontsize=13)
    _save(fig, path)


def plot_events(data: dict[str, Any], path: Path) -> None:
    """p50/p99 from upload to notice: SSE at each upload rate, polling at each interval (log scale)."""
    results = data["results"]
    labels, p50, p99 = [], [], []
    for row in results.get("rate", []):
        labels.append(f"SSE\n{row['rate']:g}/s")
        p50.append(row["latency"]["p50_ms"])
        p99.append(row["latency"]["p99_ms"])
    for row in results.get("polling", []):
        labels.append(f"poll {row['interval_s']:g}s\n{row['rate']:g}/s")
        p50.append(row["latency"]["p50_ms"])
        p99.append(row["latency"]["p99_ms"])
    fig, ax = _figure("Upload to notice: storage events (SSE) vs polling")
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    ax.set_xticks(list(x), labels)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log)")
    ax.legend()
    _save(fig, path)


def plot_transfer(data: dict[str, Any], path: Path) -> None:
    """MB/s of the service and of nginx for every operation and size of the run."""
    rows = [r for r in data.get("rows", []) if not r.get("error")]
    labels = [f"{r['op']}\n{r['size']}" for r in rows]
    servers = sorted({name for r in rows for name in r.get("servers", {})})
    fig, ax = _figure("Data path throughput: bundled service vs nginx")
    width = 0.8 / max(1, len(servers))
    for k, server in enumerate(servers):
        values = [r["servers"].get(server, {}).get("mb_per_s", 0) or 0 for r in rows]
        ax.bar([i - 0.4 + width * (k + 0.5) for i in range(len(rows))], values, width=width,
               label="this service" if server == "ours" else server)
    ax.set_xticks(list(range(len(rows))), labels)
    ax.set_ylabel("MB/s (median)")
    ax.legend()
    _save(fig, path)


def plot_billing(data: dict[str, Any], path: Path) -> None:
    """Billing records per second in each phase of the run."""
    summary = data.get("summary", {})
    phases = [p for p in ("live", "spool", "drain") if p in summary]
    fig, ax = _figure("Billing records to Kafka")
    ax.bar(phases, [summary[p]["records_per_second"] for p in phases])
    ax.set_ylabel("records/s")
    _save(fig, path)


PLOTS: list[tuple[str, str, str, Callable[[dict[str, Any], Path], None]]] = [
    ("events", "events-vs-polling.png", "Upload to notice: storage events (SSE) vs polling", plot_events),
    ("transfer", "transfer-vs-nginx.png", "Data path throughput: bundled service vs nginx", plot_transfer),
    ("billing", "billing.png", "Billing records to Kafka", plot_billing),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| plot | source | machine |", "|---|---|---|"]
    for name, filename, title, plot in PLOTS:
        found = newest(args.results, name)
        target = args.out / filename
        if found is None:
            placeholder(target, title)
            lines.append(f"| `{filename}` | no results (placeholder) | |")
            continue
        source, data = found
        try:
            plot(data, target)
        except (KeyError, TypeError, ValueError) as exc:  # a result file from another schema version
            print(f"warning: {source.name}: cannot plot ({exc!r}); placeholder written", file=sys.stderr)
            placeholder(target, title)
            lines.append(f"| `{filename}` | {source.name} (unreadable: placeholder) | |")
            continue
        machine = data.get("machine", {})
        where = f"{machine.get('cpu_count', '?')} CPUs, {machine.get('timestamp_utc', '')}" if machine else ""
        lines.append(f"| `{filename}` | `{source.name}` | {where} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
