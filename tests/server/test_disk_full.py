"""A full pool disk refuses the upload with 507 and keeps nothing (needs root to mount a small tmpfs)."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from tests.conftest import start_server


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_upload_to_full_pool_is_507_and_leaves_nothing(tiny_disk):
    server = start_server(tiny_disk / "srv")
    try:
        auth = server.auth("alice")
        r = requests.put(f"{server.webdav}/home/alice/too-big.bin", data=os.urandom(12 << 20), auth=auth)
        assert r.status_code == 507 and "No space left" in r.json()["detail"]
        assert requests.head(f"{server.webdav}/home/alice/too-big.bin", auth=auth).status_code == 404
        leftovers = list((server.data_dir / "pools").rglob("*.part"))
        assert leftovers == []
        # the service keeps working once there is room again
        assert requests.put(f"{server.webdav}/home/alice/small.bin", data=b"ok", auth=auth).status_code == 201
    finally:
        server.stop()
