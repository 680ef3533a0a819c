"""`airflow-dcache demo --once`: the README's first command, as CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_once_passes_every_sample(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "airflow_dcache.cli", "demo", "--once", "--airflow-port", "0",
           "--data-dir", str(tmp_path / "demo"), "--h5-files", "2", "--runtime", "local"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "ALL SAMPLES DONE" in out
    for name in ("run001.h5", "run002.h5", "phone-video.mp4"):
        assert name in out
    assert "NEARLINE" in out  # the archive column of the summary
