"""Filesystem test fixtures: the hook tests' connections (``AIRFLOW_CONN_*``) on the shared service.

The fsspec and ObjectStore caches are cleared around each test, so a filesystem never outlives the
connection variables it was made from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dcache.fs.dcache import DCacheFileSystem
from airflow_dcache.hooks.dcache import DCacheHook
from tests.conftest import fresh_dir
from tests.hooks.conftest import ConnFactory, server_conn, set_conn  # noqa: F401 (fixture)


def _clear_caches() -> None:
    from airflow.sdk.io import store

    DCacheFileSystem.clear_instance_cache()
    store._STORE_CACHE.clear()


@pytest.fixture(autouse=True)
def fresh_filesystems() -> Iterator[None]:
    _clear_caches()
    yield
    _clear_caches()


@pytest.fixture
def conn(set_conn: ConnFactory, dcache_server: Any) -> str:  # noqa: F811
    """A connection id (as ``alice``) whose id holds ``_``, so its default site differs from it."""
    return server_conn(set_conn, dcache_server, "alice")


@pytest.fixture
def alice_hook(conn: str) -> Iterator[DCacheHook]:
    with DCacheHook(conn) as hook:
        yield hook


@pytest.fixture
def workdir(alice_hook: DCacheHook) -> Iterator[str]:
    with fresh_dir(alice_hook, "/home/alice/fs") as path:
        yield path
