"""Reading and narrowing macaroons minted by the bundled service, with pymacaroons, then using them over HTTP.

The service mints exactly as dCache does; narrowing happens locally (no secret) and the door must honour
every added caveat, so these tests cover pymacaroons' attenuation against dCache's verification rules.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from airflow_dcache import exceptions as exc
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.macaroons.caveats import CaveatBuilder
from airflow_dcache.macaroons.tokens import attenuate_macaroon, inspect_macaroon


@pytest.fixture
def minted(alice: DCacheHook, workdir: str) -> Any:
    alice.upload(io.BytesIO(b"payload"), f"{workdir}/in.bin")
    return alice.mint_macaroon(workdir, activities=["DOWNLOAD", "LIST", "UPLOAD"], validity="PT30M")


def test_a_minted_macaroon_is_read_with_pymacaroons(minted: Any, workdir: str) -> None:
    info = inspect_macaroon(minted.macaroon)
    assert info.username == "alice" and info.iid and len(info.identifier) == 8
    assert info.paths == (workdir,)
    assert info.activities == frozenset({"READ_METADATA", "LIST", "DOWNLOAD", "UPLOAD"})
    assert info.allows("download") and not info.allows("DELETE")
    assert info.expires is not None
    assert timedelta(minutes=29) < info.expires - datetime.now(UTC) <= timedelta(minutes=30)
    assert not info.expired()
    summary = info.to_dict()
    assert minted.macaroon not in repr(info) and minted.macaroon not in str(summary)
    assert summary["username"] == "alice" and summary["paths"] == [workdir]


def _get(minted: Any, token: str, path: str) -> requests.Response:
    base = minted.base.rstrip("/")
    return requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_narrowed_macaroon_is_honoured_by_the_door(minted: Any, workdir: str) -> None:
    assert _get(minted, minted.macaroon, f"{workdir}/in.bin").status_code == 200
    read_only = attenuate_macaroon(minted.macaroon, CaveatBuilder().activities("LIST").for_attenuation())
    assert inspect_macaroon(read_only).activities == frozenset({"LIST", "READ_METADATA"})
    assert _get(minted, read_only, f"{workdir}/in.bin").status_code == 403
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = attenuate_macaroon(minted.macaroon, CaveatBuilder().before(past).for_attenuation())
    assert _get(minted, expired, f"{workdir}/in.bin").status_code == 401
    elsewhere = attenuate_macaroon(minted.macaroon, ["path:/other"])
    assert _get(minted, elsewhere, f"{workdir}/in.bin").status_code == 403


def test_narrowed_macaroon_works_in_a_hook_connection(minted: Any, workdir: str, set_conn: Any,
                                                      dcache_server: Any) -> None:
    token = attenuate_macaroon(minted.macaroon,
                               CaveatBuilder().activities("DOWNLOAD").validity(timedelta(minutes=5)).for_attenuation())
    info = inspect_macaroon(token)
    assert info.expires is not None and info.expires - datetime.now(UTC) <= timedelta(minutes=5)
    conn_id = set_conn(host=dcache_server.webdav,
                       extra={"frontend_url": dcache_server.frontend, "auth_type": "macaroon", "token": token})
    with DCacheHook(conn_id) as hook:
        buffer = io.BytesIO()
        hook.download(f"{workdir}/in.bin", buffer)
        assert buffer.getvalue() == b"payload"
        with pytest.raises((exc.PermissionDenied, exc.AuthenticationFailed)):
            hook.upload(io.BytesIO(b"no"), f"{workdir}/new.bin")


def test_narrowing_refuses_what_dcache_would_reject(minted: Any) -> None:
    with pytest.raises(ValueError, match=r"^activity: DELETE not in"):
        attenuate_macaroon(minted.macaroon, CaveatBuilder().activities("DOWNLOAD", "DELETE").for_attenuation())
    with pytest.raises(ValueError, match=r"^id: only dCache"):
        attenuate_macaroon(minted.macaroon, ["id:0;0;root"])
    with pytest.raises(ValueError, match="Unknown caveat colour"):
        attenuate_macaroon(minted.macaroon, ["colour:blue"])
    with pytest.raises(ValueError, match=r"^ip:"):
        attenuate_macaroon(minted.macaroon, CaveatBuilder().ip("not-an-ip").for_attenuation())
    with pytest.raises(ValueError, match=r"^macaroon: "):
        attenuate_macaroon(minted.macaroon[:-5], ["activity:LIST"])
