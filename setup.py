"""Build-time package layout that ``pyproject.toml`` cannot express; all metadata lives there.

The provider's own functions live in ``airflow_dcache/functions/library/<name>/`` (a ``main.py``, a
``Dockerfile``, a ``function.json``): folders, not Python packages, so every file of each is declared
as package data of ``airflow_dcache.functions.library`` -- except caches, exactly the files the source
digest covers, so a function has the same digest (and image tag) from a checkout and from a wheel.

Non-Python files inside the package (the UI plugin's static bundle) are package data too.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
LIBRARY = "airflow_dcache.functions.library"
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def function_files() -> list[str]:
    """Every file of the function library (relative to it), as the registry's source digest sees them."""
    root = HERE / LIBRARY.replace(".", "/")
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        rel = Path(dirpath).relative_to(root)
        out.extend((rel / f).as_posix() for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
    return out


def package_assets() -> dict[str, list[str]]:
    """Non-Python files inside the package (e.g. the UI plugin's ``static/`` bundle), per owning package."""
    out: dict[str, list[str]] = {}
    for package in find_packages(include=["airflow_dcache", "airflow_dcache.*"]):
        pkg_dir = HERE / package.replace(".", "/")
        for dirpath, dirnames, filenames in os.walk(pkg_dir):
            # Sub-directories that are packages themselves carry their own files.
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in _SKIP_DIRS and not (Path(dirpath) / d / "__init__.py").exists()
                                 and Path(dirpath) / d != HERE / LIBRARY.replace(".", "/"))
            rel = Path(dirpath).relative_to(pkg_dir)
            out.setdefault(package, []).extend(
                (rel / f).as_posix() for f in sorted(filenames) if not f.endswith((".py", ".pyc", ".pyo")))
    return {k: v for k, v in out.items() if v}


setup(
    packages=[*find_packages(include=["airflow_dcache", "airflow_dcache.*"]), LIBRARY],
    package_data={**package_assets(), LIBRARY: function_files()},
)
