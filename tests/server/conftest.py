"""Fixtures shared by the server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests


@pytest.fixture
def alice(dcache_server) -> Iterator[requests.Session]:
    """A session authenticated as alice (Basic) against the shared server."""
    s = requests.Session()
    s.auth = dcache_server.auth("alice")
    yield s
    s.close()
