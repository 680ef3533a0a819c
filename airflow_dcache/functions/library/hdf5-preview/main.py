"""hdf5-preview: a log-scaled PNG preview and a JSON summary of CXI/NeXus detector frames.

Reads ``/entry_1/data_1/data`` (NxHxW, or a single HxW frame) of every input with h5py, and uploads
``<stem>.preview.png`` (the mean frame, or ``parameters.frame``) and ``<stem>.summary.json`` (shape,
dtype, min/max/mean, number of frames). Parameters: ``frame`` (int, default: mean of all frames),
``dataset`` (default ``/entry_1/data_1/data``).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import dcache_fn
import h5py
import numpy as np

DATASET = "/entry_1/data_1/data"
CHUNK_FRAMES = 64


def write_png(path: Path, image: np.ndarray) -> None:
    """8-bit greyscale PNG with zlib and struct only (no imaging library in the image)."""
    height, width = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
                     + chunk(b"IEND", b""))


def log_scale(frame: np.ndarray) -> np.ndarray:
    """Map to 0..255 on a log scale (detector images span orders of magnitude)."""
    values = np.nan_to_num(frame.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.log1p(values - values.min())
    top = values.max()
    if top > 0:
        values = values / top
    return np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)


def preview(path: Path, dataset: str, frame: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        if dataset not in f:
            raise dcache_fn.FunctionError(f"{path.name}: no dataset {dataset}")
        data = f[dataset]
        if data.ndim == 2:
            frames, shape = 1, data.shape
            stack = data[()][np.newaxis]
        elif data.ndim == 3:
            frames, shape = data.shape[0], data.shape
            stack = None
        else:
            raise dcache_fn.FunctionError(f"{path.name}: {dataset} has {data.ndim} dimensions, expected 2 or 3")
        lo, hi, total, count = np.inf, -np.inf, 0.0, 0
        mean_frame = np.zeros(shape[-2:], dtype=np.float64)
        for start in range(0, frames, CHUNK_FRAMES):  # bounded memory for long runs
            block = stack if stack is not None else data[start:start + CHUNK_FRAMES]
            block = np.asarray(block, dtype=np.float64)
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            total += float(block.sum())
            count += block.size
            mean_frame += block.sum(axis=0)
        mean_frame /= max(frames, 1)
        if frame is not None:
            if not -frames <= frame < frames:
                raise dcache_fn.FunctionError(f"parameters.frame: {frame} is outside 0..{frames - 1}")
            chosen = np.asarray(stack[frame] if stack is not None else data[frame], dtype=np.float64)
        else:
            chosen = mean_frame
        summary = {"dataset": dataset, "shape": list(shape), "dtype": str(data.dtype), "frames": frames,
                   "min": lo, "max": hi, "mean": total / max(count, 1),
                   "preview": "mean" if frame is None else f"frame {frame}"}
    return log_scale(chosen), summary


def run(task: dcache_fn.Task) -> dict[str, Any]:
    dataset = str(task.parameters.get("dataset", DATASET))
    frame = task.parameters.get("frame")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int)):
        raise dcache_fn.FunctionError(f"parameters.frame: expected an integer, got {frame!r}")
    if not task.inputs:
        raise dcache_fn.FunctionError("inputs: hdf5-preview needs at least one CXI/HDF5 file")
    summaries = []
    for item in task.inputs:
        local = task.download(item)
        image, summary = preview(local, dataset, frame)
        stem = item.stem
        png, js = task.workdir / f"{stem}.preview.png", task.workdir / f"{stem}.summary.json"
        write_png(png, image)
        summary["input"] = item.path
        summary["input_version"] = item.version  # which upload this result is of (pnfsid, checksum)
        js.write_text(json.dumps(summary, indent=2, sort_keys=True))
        task.upload(png)
        task.upload(js)
        local.unlink()
        summaries.append(summary)
    return {"summaries": summaries}


if __name__ == "__main__":
    dcache_fn.main(run)
