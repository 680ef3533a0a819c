"""Security suite: attacks on the bundled service over real HTTP; each case is its own test.

Registers the ``soak`` marker (long variants, run on demand with ``-m soak``; the default CI run
deselects nothing, so soak tests skip themselves unless ``DCACHE_SOAK=1``).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long soak/fuzz variant; runs only with DCACHE_SOAK=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DCACHE_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak variant: set DCACHE_SOAK=1 (scripts/soak)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
