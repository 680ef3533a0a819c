"""hdf5-preview: the PNG decodes to the log-scaled frame, the summary matches numpy's statistics."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from airflow.exceptions import AirflowException

from airflow_dcache.operators.function import DCacheFunctionOperator
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import write_cxi


def decode_png(data: bytes) -> np.ndarray:
    """Greyscale 8-bit, filter 0 only (what the function writes); enough to check the pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[i * (width + 1):(i + 1) * (width + 1)] for i in range(height)]
    assert all(r[0] == 0 for r in rows)
    return np.array([list(r[1:]) for r in rows], dtype=np.uint8)


@pytest.fixture(params=["local", "docker"])
def runtime_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "docker":
        return {"runtime": "docker", "docker_url": request.getfixturevalue("docker_url"),
                "image": request.getfixturevalue("function_image")("hdf5-preview")}
    return {"runtime": "local"}


def test_preview_of_the_mean_frame(runtime_kwargs: dict, dc: Any, area: str, alice_conn: str, tmp_path: Path,
                                   make_context: Any) -> None:
    data = write_cxi(tmp_path / "scan.cxi", frames=7, height=20, width=30, seed=5)
    write_cxi(tmp_path / "other.cxi", frames=2, height=8, width=8, seed=6)
    dc.upload(tmp_path / "scan.cxi", f"{area}/in/scan.cxi")
    dc.upload(tmp_path / "other.cxi", f"{area}/in/other.cxi")
    op = DCacheFunctionOperator(task_id="p", function="hdf5-preview", inputs=[f"{area}/in/scan.cxi",
                                f"{area}/in/other.cxi"], output_dir=f"{area}/out", dcache_conn_id=alice_conn,
                                **runtime_kwargs)
    value = op.execute(make_context())
    summary = value["summaries"][0]
    assert summary["shape"] == [7, 20, 30] and summary["dtype"] == "uint16" and summary["frames"] == 7
    assert summary["min"] == data.min() and summary["max"] == data.max()
    assert summary["mean"] == pytest.approx(float(data.mean()))
    assert summary["preview"] == "mean"
    png = io.BytesIO()
    dc.download(f"{area}/out/scan.preview.png", png)
    image = decode_png(png.getvalue())
    assert image.shape == (20, 30)
    mean = data.astype(np.float64).mean(axis=0)
    expected = np.log1p(mean - mean.min())
    expected = np.clip(expected / expected.max() * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(image, expected)
    assert image[10, 15] == 255  # the bright spot
    stored = io.BytesIO()
    dc.download(f"{area}/out/scan.summary.json", stored)
    assert json.loads(stored.getvalue())["input"] == f"{area}/in/scan.cxi"
    assert sorted(o["name"] for o in value["outputs"]) == [
        "other.preview.png", "other.summary.json", "scan.preview.png", "scan.summary.json"]


def test_frame_out_of_range_names_the_parameter(dc: Any, area: str, alice_conn: str, cxi_file: Path,
                                                make_context: Any) -> None:
    dc.upload(cxi_file, f"{area}/in/run.cxi")
    op = DCacheFunctionOperator(task_id="p", function="hdf5-preview", inputs=f"{area}/in/run.cxi",
                                output_dir=f"{area}/out", parameters={"frame": 99}, dcache_conn_id=alice_conn)
    with pytest.raises(AirflowException, match=r"parameters\.frame: 99 is outside"):
        op.execute(make_context())
    assert [n for n in (e.name for e in dc.list_dir(f"{area}/out")) if not n.endswith(".failed.json")] == []
