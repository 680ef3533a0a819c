"""docs/testing.md's example, exactly as printed, run as a user would: a fresh project, plain ``pytest``.

The inner pytest runs in its own directory without this repository's conftest, so the fixtures come
from the installed package's ``pytest11`` entry point; this is the plugin's own end-to-end test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"


def example_files() -> dict[str, str]:
    """The doc's python blocks whose first line names their file (``# dags/x.py``)."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            files[first[2:].strip()] = block
    return files


def test_docs_examples_pass(tmp_path: Path) -> None:
    files = example_files()
    assert set(files) == {"dags/report_upload.py", "tests/test_report_upload.py",
                          "dags/inventory_on_upload.py", "tests/test_inventory_on_upload.py"}
    for dag, test in (("report_upload", "test_report_upload"), ("inventory_on_upload", "test_inventory_on_upload")):
        lines = len(files[f"dags/{dag}.py"].splitlines()) + len(files[f"tests/{test}.py"].splitlines())
        assert lines <= 60, (dag, lines)  # a DAG and its test, each about twenty lines
    for name, code in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout
