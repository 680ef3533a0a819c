"""deshake: two-pass ffmpeg/libvidstab stabilisation plus a split-screen comparison (the seed's live demo).

For every input video: pass 1 ``vidstabdetect`` writes the motion transforms, pass 2
``vidstabtransform`` applies them; then the original (left) and the stabilised video (right) are put
side by side. Uploads ``<stem>.deshaked.mp4`` and ``<stem>.split.mp4``. Parameters: ``shakiness``
(1-10, default 5), ``accuracy`` (1-15, default 15), ``smoothing`` (frames, default 10), ``crf``
(x264 quality, default 23), ``threads`` (default 2).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import dcache_fn


def _int(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise dcache_fn.FunctionError(f"parameters.{name}: expected an integer in {low}..{high}, got {value!r}")
    return value


def ffmpeg(args: list[str], task: dcache_fn.Task, what: str) -> None:
    """Run ffmpeg quietly with a deadline; its last stderr lines become the error on failure."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    timeout = None if task.deadline is None else max(1.0, task.deadline - time.time())
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise dcache_fn.FunctionError("ffmpeg is not installed") from None
    except subprocess.TimeoutExpired:
        raise dcache_fn.FunctionError(f"{what}: ffmpeg ran past the deadline") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise dcache_fn.FunctionError(f"{what}: ffmpeg exited with {proc.returncode}: {tail}")


def deshake(task: dcache_fn.Task, source: Path, stem: str) -> tuple[Path, Path]:
    p = task.parameters
    shakiness = _int(p, "shakiness", 5, 1, 10)
    accuracy = _int(p, "accuracy", 15, 1, 15)
    smoothing = _int(p, "smoothing", 10, 0, 1000)
    crf = _int(p, "crf", 23, 0, 51)
    threads = _int(p, "threads", 2, 1, 64)
    transforms = task.workdir / f"{stem}.trf"
    stabilised = task.workdir / f"{stem}.deshaked.mp4"
    split = task.workdir / f"{stem}.split.mp4"
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-an",
              "-threads", str(threads)]
    dcache_fn.log(f"{stem}: pass 1 (vidstabdetect)")
    ffmpeg(["-threads", str(threads), "-i", str(source), "-vf",
            f"vidstabdetect=shakiness={shakiness}:accuracy={accuracy}:result={transforms}", "-f", "null", "-"],
           task, "vidstabdetect")
    dcache_fn.log(f"{stem}: pass 2 (vidstabtransform)")
    ffmpeg(["-i", str(source), "-vf",
            f"vidstabtransform=input={transforms}:smoothing={smoothing}:zoom=0:optzoom=1,unsharp=5:5:0.8:3:3:0.4",
            *encode, str(stabilised)], task, "vidstabtransform")
    dcache_fn.log(f"{stem}: split screen")
    ffmpeg(["-i", str(source), "-i", str(stabilised), "-filter_complex",
            "[0:v]setpts=PTS-STARTPTS[l];[1:v]setpts=PTS-STARTPTS[r];[l][r]hstack=inputs=2:shortest=1[v]",
            "-map", "[v]", *encode, str(split)], task, "split screen")
    return stabilised, split


def run(task: dcache_fn.Task) -> dict[str, Any]:
    if not task.inputs:
        raise dcache_fn.FunctionError("inputs: deshake needs at least one video")
    videos = []
    for item in task.inputs:
        local = task.download(item)
        stem = item.stem
        stabilised, split = deshake(task, local, stem)
        task.upload(stabilised)
        task.upload(split)
        videos.append({"input": item.path, "deshaked": stabilised.name, "split": split.name})
        for f in (local, stabilised, split):
            f.unlink(missing_ok=True)
    return {"videos": videos}


if __name__ == "__main__":
    dcache_fn.main(run)
