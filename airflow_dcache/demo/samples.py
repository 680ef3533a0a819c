"""Sample data a facility would produce: CXI-style HDF5 detector runs and a shaky phone video.

Generated rather than shipped, so the repository holds no binaries and every run of the demo or
the tests uploads fresh files (new pnfsids, new events).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def write_cxi(path: Path, *, frames: int = 8, height: int = 64, width: int = 64, seed: int = 0) -> Path:
    """Write a CXI/NeXus-like file: ``/entry_1/data_1/data`` holds ``frames`` x ``height`` x ``width`` counts.

    The frames show a diffraction-like ring over Poisson noise, so a preview has something to show.
    """
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot(yy - height / 2, xx - width / 2)
    ring = 200.0 * np.exp(-((r - min(height, width) / 4) ** 2) / 8.0) + 2000.0 * np.exp(-(r**2) / 6.0)
    data = rng.poisson(ring + 5.0, size=(frames, height, width)).astype("uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry_1")
        entry.attrs["NX_class"] = "NXentry"
        group = entry.create_group("data_1")
        group.attrs["NX_class"] = "NXdata"
        group.create_dataset("data", data=data, compression="gzip")
        f.create_dataset("cxi_version", data=160)
    return path


def write_shaky_video(path: Path, *, seconds: float = 2.0, size: tuple[int, int] = (320, 240), fps: int = 15) -> Path:
    """Make a short shaky clip: ffmpeg's ``testsrc`` cropped at a jittering offset every frame.

    The jitter is a deterministic sum of sines (like a hand-held phone), so de-shaking has work to do.
    """
    w, h = size
    margin = 24
    dx = f"{margin}+{margin * 0.8}*sin(n*1.7)+{margin * 0.2}*sin(n*5.3)"
    dy = f"{margin}+{margin * 0.8}*cos(n*1.3)+{margin * 0.2}*sin(n*4.1)"
    src = f"testsrc=size={w + 2 * margin}x{h + 2 * margin}:rate={fps}:duration={seconds}"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
         "-vf", f"crop={w}:{h}:x='{dx}':y='{dy}'", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=120,
    )
    if not path.exists() or path.stat().st_size == 0:
        raise RuntimeError(f"ffmpeg produced no video at {path}")
    return path
