"""Where function code lives and how it is identified.

A function is a directory ``<functions dir>/<name>/`` with ``main.py`` (the entry point, run with the task
document on stdin), a ``Dockerfile`` and optionally ``function.json`` (description, default
parameters). The *source digest* is the sha256 over every file of that directory plus the function
SDK; the same digest names the Docker image tag and is stored as an image label, so a function has the
same identity in the ``local`` and the ``docker`` runtime and pipelines can version their outputs by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SDK_DIR = Path(__file__).resolve().parent / "sdk"
SDK_FILE = SDK_DIR / "dcache_fn.py"
"""The stdlib-only function SDK; copied into every image and put on the local runtime's PYTHONPATH."""

FUNCTIONS_ENV = "AIRFLOW_DCACHE_FUNCTIONS_DIR"
IMAGE_REPOSITORY = "airflow-dcache"
SOURCE_LABEL = "org.airflow-dcache.source-digest"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


LIBRARY_DIR = Path(__file__).resolve().parent / "library"
"""The provider's own functions (``deshake``, ``hdf5-preview``, ``select-files``): sources inside the
package, so a checkout and an installed wheel find them the same way (package data, see ``setup.py``)."""


def default_functions_dir() -> Path | None:
    """``$AIRFLOW_DCACHE_FUNCTIONS_DIR`` (a site's own function folder), else the provider's library."""
    env = os.environ.get(FUNCTIONS_ENV)
    if env:
        return Path(env)
    return LIBRARY_DIR if LIBRARY_DIR.is_dir() else None


def check_name(name: str) -> str:
    """Function names become image names and directory names, so keep them to Docker's alphabet."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"function: {name!r} is not a valid function name (lowercase letters, digits, . _ -)")
    return name


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
    return out


_DIGESTS: dict[tuple[Any, ...], str] = {}
_DIGESTS_LOCK = threading.Lock()
_DIGESTS_MAX = 256


def _fingerprint(root: Path, extra: dict[str, Path]) -> tuple[Any, ...]:
    """What a digest depends on, from ``stat`` alone: every file's path, size, inode and change times.

    An edit, a new or deleted file or a replaced file changes it (nanosecond ``mtime``/``ctime``), so
    the cached digest is recomputed exactly when content can have changed, for the cost of a walk.
    """
    def sig(path: Path) -> tuple[Any, ...]:
        st = path.stat()
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    files = tuple((p.relative_to(root).as_posix(), *sig(p)) for p in _files(root))
    return (str(root), files, tuple((rel, str(p), *sig(p)) for rel, p in sorted(extra.items())))


def tree_digest(root: Path, extra: dict[str, Path] | None = None) -> str:
    """``sha256:<hex>`` over (relative path, file sha256) of every file, in sorted order.

    Cached by a ``stat`` fingerprint of the same files (:func:`_fingerprint`): identifying a function
    per file of a chunk, or per task, then costs a directory walk instead of hashing every file again.
    """
    key = _fingerprint(root, extra or {})
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = _tree_digest(root, extra)
    with _DIGESTS_LOCK:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def _tree_digest(root: Path, extra: dict[str, Path] | None = None) -> str:
    entries: list[tuple[str, str]] = []
    for path in _files(root):
        entries.append((path.relative_to(root).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest()))
    for rel, path in (extra or {}).items():
        entries.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(f"{rel}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class FunctionSource:
    """One function directory and its identity."""

    name: str
    directory: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def entrypoint(self) -> Path:
        return self.directory / "main.py"

    @property
    def digest(self) -> str:
        """The source digest (function directory + SDK); cached until a file of either changes."""
        return tree_digest(self.directory, {"dcache_fn.py": SDK_FILE})

    @property
    def image_tag(self) -> str:
        """``airflow-dcache/<name>:<digest[:12]>``, the tag ``make function-images`` builds."""
        return f"{IMAGE_REPOSITORY}/{self.name}:{self.digest.split(':', 1)[1][:12]}"


def find_function(name: str, functions_dir: str | os.PathLike[str] | None = None) -> FunctionSource:
    """Locate ``<functions_dir>/<name>/main.py``; a clear ``ValueError`` naming the field otherwise."""
    check_name(name)
    base = Path(functions_dir) if functions_dir is not None else default_functions_dir()
    if base is None:
        raise ValueError(f"functions_dir: not given, ${FUNCTIONS_ENV} unset and no functions/ directory found")
    directory = (base / name).resolve()
    if not (directory / "main.py").is_file():
        raise ValueError(f"function: no {name}/main.py under {base}")
    manifest: dict[str, Any] = {}
    if (directory / "function.json").is_file():
        manifest = json.loads((directory / "function.json").read_text())
    return FunctionSource(name, directory, manifest)
