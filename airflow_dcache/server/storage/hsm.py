"""The emulated tape back end (HSM) of one site: a directory of file copies keyed by file id.

Copies are written to a temporary name, fsynced and renamed, like pool replicas, so a flush that
dies half-way never counts as a tape copy.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class HsmStore:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.part"):
            stale.unlink(missing_ok=True)

    def path(self, file_id: str) -> Path:
        return self.directory / file_id

    def has(self, file_id: str) -> bool:
        return self.path(file_id).exists()

    def uri(self, file_id: str) -> str:
        return f"{self.name}://{self.name}/?bfid={file_id}"

    def store(self, source: Path, file_id: str) -> None:
        """Copy a pool replica to tape (blocking: run it in a thread)."""
        _atomic_copy(source, self.path(file_id))

    def restore(self, file_id: str, target: Path) -> None:
        """Copy the tape copy back to a pool replica path (blocking)."""
        _atomic_copy(self.path(file_id), target)

    def remove(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
