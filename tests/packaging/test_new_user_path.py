"""A new user's afternoon, from the docs alone, in a clean venv that holds only the built wheel.

Follows docs/index.md (install the wheel with the tested constraints), docs/functions.md (scaffold a
function, build its image, run it), docs/testing.md (an event-driven DAG tested on five uploads by its
own watcher) and docs/backfills.md (the same kind of DAG on ``AssetOrTimeSchedule``, backfilled over a
range on a real scheduler). The project lives in a temporary directory; the only things taken from this
checkout are the wheel and the docs' code blocks, copied as a user would copy them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.packaging.wheelenv import ROOT, FreshVenv, build_dists, installed_venv

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1500)]
pytest.importorskip("build", reason="the packaging tests need the 'build' package in the venv")

FUNCTION = "beam-inventory"


def doc_files(page: str) -> dict[str, str]:
    """The page's python blocks whose first line names their file (``# dags/x.py``)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), flags=re.S)
    return {b.splitlines()[0][2:].strip(): b for b in blocks if re.match(r"# [\w/.-]+\.py\n", b)}


def docker_engine() -> bool:
    """Whether the function engine answers (CI requires it: ``AIRFLOW_DCACHE_REQUIRE_DOCKER=1``)."""
    sock = os.environ.get("AIRFLOW_DCACHE_DOCKER_SOCK", "/run/airflow-dcache-docker.sock")
    return bool(os.environ.get("DOCKER_HOST")) or Path(sock).exists()


def step(venv: FreshVenv, project: Path, timings: dict[str, float], name: str, *args: str,
         timeout: float = 600) -> str:
    started = time.monotonic()
    done = venv.run(*args, cwd=project, timeout=timeout)
    timings[name] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, f"{name}: {' '.join(args)}\n{done.stdout[-5000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_new_users_pipeline_from_the_docs(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    wheel = build_dists().wheel
    venv = installed_venv(tmp_path / "venv", wheel, "testing,hdf5,docker")
    timings["install"] = round(time.monotonic() - started, 1)
    project = tmp_path / "beamline"
    project.mkdir()
    cli = str(venv.bin / "airflow-dcache")

    # docs/functions.md: a function of one's own
    step(venv, project, timings, "function new", cli, "function", "new", FUNCTION)
    assert {"main.py", "function.json", "Dockerfile"} <= {p.name for p in (project / FUNCTION).iterdir()}
    if docker_engine() or os.environ.get("AIRFLOW_DCACHE_REQUIRE_DOCKER") == "1":
        step(venv, project, timings, "function build", cli, "function", "build", FUNCTION)
        out = step(venv, project, timings, "function test (docker)", cli, "function", "test", FUNCTION,
                   "--runtime", "docker")
        assert FUNCTION in out

    # docs/testing.md and docs/backfills.md: the DAGs and their tests, as printed
    files = {**doc_files("testing.md"), **doc_files("backfills.md")}
    wanted = {"dags/inventory_on_upload.py", "tests/test_inventory_on_upload.py",
              "dags/beamline_inventory.py", "tests/test_beamline_backfill.py"}
    assert wanted <= set(files), sorted(files)
    for name in sorted(wanted):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(files[name])
    out = step(venv, project, timings, "pytest", str(venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
               FUNCTION, "tests", timeout=1200)
    assert re.search(r"\b3 passed\b", out), out[-3000:]
    timings["total"] = round(time.monotonic() - started, 1)
    print("MEASURE new_user_path " + " ".join(f"{k.replace(' ', '_')}={v}" for k, v in timings.items()), flush=True)
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)
