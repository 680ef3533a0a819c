"""deshake on a shaky test video made by ffmpeg (testsrc + per-frame crop jitter)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import *  # noqa: F403 - fixtures

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/system-deps)")


def shaky_video(path: Path, seconds: float = 2.0) -> Path:
    """320x240 test pattern cropped to 256x192 at a position that jumps every frame."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         f"testsrc=size=320x240:rate=25:duration={seconds}",
         "-vf", "crop=256:192:32+24*sin(n*1.9):24+18*cos(n*2.7)", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=120,
    )
    return path


def probe(data: bytes, tmp_path: Path) -> dict[str, Any]:
    f = tmp_path / "probe.mp4"
    f.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=width,height,nb_read_frames", "-of", "json", str(f)],
                         capture_output=True, text=True, check=True, timeout=60)
    stream: dict[str, Any] = json.loads(out.stdout)["streams"][0]
    return stream


@pytest.fixture(params=["local", "docker"])
def runtime_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "docker":
        return {"runtime": "docker", "docker_url": request.getfixturevalue("docker_url"),
                "image": request.getfixturevalue("function_image")("deshake")}
    return {"runtime": "local"}


def test_deshake_uploads_stabilised_and_split_screen(runtime_kwargs: dict, dc: Any, area: str, alice_conn: str,
                                                    tmp_path: Path, make_context: Any) -> None:
    dc.upload(shaky_video(tmp_path / "shaky.mp4"), f"{area}/in/shaky.mp4")
    op = DCacheFunctionOperator(task_id="d", function="deshake", inputs=[f"{area}/in/shaky.mp4"],
                                output_dir=f"{area}/out", dcache_conn_id=alice_conn, timeout=240,
                                **runtime_kwargs)
    ctx = make_context()
    value = op.execute(ctx)
    assert value["videos"] == [{"input": f"{area}/in/shaky.mp4", "deshaked": "shaky.deshaked.mp4",
                                "split": "shaky.split.mp4"}]
    stabilised, split = io.BytesIO(), io.BytesIO()
    dc.download(f"{area}/out/shaky.deshaked.mp4", stabilised)
    dc.download(f"{area}/out/shaky.split.mp4", split)
    s, sp = probe(stabilised.getvalue(), tmp_path), probe(split.getvalue(), tmp_path)
    assert (s["width"], s["height"]) == (256, 192)
    assert (sp["width"], sp["height"]) == (512, 192)  # original | de-shaked
    assert int(s["nb_read_frames"]) == 50 and int(sp["nb_read_frames"]) == 50
    assert "pass 2 (vidstabtransform)" in ctx["ti"].xcom["activation_record"]["logs"]
