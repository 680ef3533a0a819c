"""Both hooks authenticate with a JWT bearer token, inline or from a token file that rotates.

oidc-agent and htgettoken replace the token file while long tasks run; the hooks must pick up the
new token at the next request without being rebuilt. Checked against the real service trusting a
test issuer, with tokens whose scopes tell which token a request carried.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_dcache.exceptions import DCacheError
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook
from airflow_dcache.testing.token_issuer import TokenIssuer
from tests.conftest import DCacheServer, token_site
from tests.hooks.conftest import ConnFactory

PREFIX = "/tok"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    return TokenIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def server(issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DCacheServer]:
    with token_site(tmp_path_factory.mktemp("tokhooks"), issuer, PREFIX, dirs=("one", "two"),
                    authz_id={"username": "tokenuser", "uid": 2000, "gids": [2000]}) as srv:
        admin: requests.Session = srv.info["admin"]  # type: ignore[assignment]
        for name in ("one", "two"):
            admin.put(f"{srv.webdav}{PREFIX}/{name}/data.txt", data=name.encode()).raise_for_status()
        yield srv


def conn(set_conn: ConnFactory, server: DCacheServer, **extra: object) -> str:
    return set_conn(host=server.webdav, extra={"frontend_url": server.frontend, "retries": 0, **extra})


def write_token(path: Path, token: str) -> None:
    """Replace the file atomically, as htgettoken and oidc-agent do."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)


def test_sync_hook_sends_an_inline_token(set_conn: ConnFactory, server: DCacheServer, issuer: TokenIssuer,
                                         tmp_path: Path) -> None:
    token = issuer.mint(scope="storage.read:/one storage.modify:/two")
    with DCacheHook(conn(set_conn, server, auth_type="bearer", token=token)) as hook:
        assert hook.whoami().username == "tokenuser"
        assert hook.read_range(f"{PREFIX}/one/data.txt", 0, 3) == b"one"
        local = tmp_path / "up.txt"
        local.write_bytes(b"uploaded")
        hook.upload(local, f"{PREFIX}/two/up-{uuid.uuid4().hex[:6]}.txt")
        with pytest.raises(DCacheError):
            hook.read_range(f"{PREFIX}/two/data.txt", 0, 3)


def test_async_hook_sends_an_inline_token(set_conn: ConnFactory, server: DCacheServer, issuer: TokenIssuer) -> None:
    conn_id = conn(set_conn, server, auth_type="bearer", token=issuer.mint(scope="storage.read:/one"))

    async def go() -> int | None:
        async with DCacheAsyncHook(conn_id) as hook:
            assert (await hook.whoami()).username == "tokenuser"
            with pytest.raises(DCacheError):
                await hook.stat(f"{PREFIX}/two/data.txt")
            return (await hook.stat(f"{PREFIX}/one/data.txt")).size

    assert asyncio.run(go()) == 3


def test_sync_hook_rereads_a_rotated_token_file(set_conn: ConnFactory, server: DCacheServer, issuer: TokenIssuer,
                                                tmp_path: Path) -> None:
    token_file = tmp_path / "bt_u1000"
    write_token(token_file, issuer.mint(scope="storage.read:/one"))
    with DCacheHook(conn(set_conn, server, auth_type="token_file", token_file=str(token_file))) as hook:
        assert hook.read_range(f"{PREFIX}/one/data.txt", 0, 3) == b"one"
        with pytest.raises(DCacheError):
            hook.read_range(f"{PREFIX}/two/data.txt", 0, 3)
        write_token(token_file, issuer.mint(scope="storage.read:/two"))  # the agent rotates the token
        assert hook.read_range(f"{PREFIX}/two/data.txt", 0, 3) == b"two"
        with pytest.raises(DCacheError):
            hook.read_range(f"{PREFIX}/one/data.txt", 0, 3)
        # rewritten in place, same length, within the same second: still a new token
        third = issuer.mint(scope="storage.read:/one")
        stamp = token_file.stat()
        token_file.write_text(third + "\n")
        os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
        assert hook.read_range(f"{PREFIX}/one/data.txt", 0, 3) == b"one"


def test_async_hook_rereads_a_rotated_token_file(set_conn: ConnFactory, server: DCacheServer,
                                                 issuer: TokenIssuer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    write_token(token_file, issuer.mint(scope="storage.read:/one"))
    conn_id = conn(set_conn, server, token_file=str(token_file))  # auth_type inferred from token_file

    async def go() -> None:
        async with DCacheAsyncHook(conn_id) as hook:
            assert (await hook.stat(f"{PREFIX}/one/data.txt")).size == 3
            write_token(token_file, issuer.mint(scope="storage.read:/two"))
            assert (await hook.stat(f"{PREFIX}/two/data.txt")).size == 3
            with pytest.raises(DCacheError):
                await hook.stat(f"{PREFIX}/one/data.txt")

    asyncio.run(go())


def test_an_expired_token_fails_with_a_clear_error(set_conn: ConnFactory, server: DCacheServer,
                                                   issuer: TokenIssuer) -> None:
    token = issuer.mint(scope="storage.read:/one", lifetime=-3600)
    with DCacheHook(conn(set_conn, server, auth_type="bearer", token=token)) as hook, \
            pytest.raises(DCacheError) as info:
        hook.read_range(f"{PREFIX}/one/data.txt", 0, 3)
    assert "expired" in str(info.value) and token not in str(info.value)


def test_a_missing_token_file_names_the_file(set_conn: ConnFactory, server: DCacheServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with DCacheHook(conn(set_conn, server, auth_type="token_file", token_file=str(missing))) as hook, \
            pytest.raises(DCacheError, match="token file"):
        hook.whoami()
