"""One-command soak runner: ``.venv/bin/python -m tests.reliability.soak [extra pytest args]``.

Runs every ``soak``-marked variant of tests/security and tests/reliability (fuzzing x3000 examples,
schemathesis x200 per operation, 1,000-file streams with restarts through Airflow,
kill -9 x100, a 60 s broker outage, 60 s of load by 64 clients) with ``DCACHE_SOAK=1``, collects the
load figures through ``DCACHE_RESULTS`` and prints them with pytest's summary. Bounded: each test
has its own time limits; the whole run takes about 25-30 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        env = dict(os.environ, DCACHE_SOAK="1", DCACHE_RESULTS=str(results))
        cmd = [sys.executable, "-m", "pytest", "tests/security", "tests/reliability", "-m", "soak", "-q", "-s",
               "-p", "no:cacheprovider", *argv]
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        if results.exists():
            print("\nload figures:")
            for line in results.read_text().splitlines():
                doc = json.loads(line)
                print(f"  {doc['test']}: {doc['clients']} clients x {doc['seconds']:g} s, {doc['ops']} ops, "
                      f"failed {doc['failed']}, p50 {doc['p50_ms']} ms, p99 {doc['p99_ms']} ms, "
                      f"RSS {doc['rss_start_mib']}→{doc['rss_max_mib']} MiB")
        return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
