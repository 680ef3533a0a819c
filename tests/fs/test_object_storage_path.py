"""``ObjectStoragePath("dcache://…")`` resolved the way Airflow does it: the provider's ``filesystems``
entry through the real providers manager, the scheme through the fsspec/universal_pathlib entry points.
"""

from __future__ import annotations

import io

from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import get_fs as airflow_get_fs
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

from airflow_dcache.fs.dcache import DCacheFileSystem
from airflow_dcache.fs.path import DCachePath
from airflow_dcache.hooks.dcache import DCacheHook


def test_airflow_finds_the_filesystem() -> None:
    assert "airflow_dcache.fs.dcache" in ProvidersManagerTaskRuntime().filesystem_module_names
    assert isinstance(airflow_get_fs("dcache", "dc_any"), DCacheFileSystem)


def test_path_reads_writes_lists_and_deletes(conn: str, workdir: str, alice_hook: DCacheHook) -> None:
    root = ObjectStoragePath(f"dcache://{conn}{workdir}")
    assert isinstance(root.__wrapped__, DCachePath) and root.conn_id is None
    out = root / "out" / "result.txt"
    out.parent.mkdir(parents=True)
    out.write_text("hello dCache")
    assert alice_hook.stat(f"{workdir}/out/result.txt").size == 12
    assert out.read_text() == "hello dCache"
    assert out.exists() and out.is_file() and root.joinpath("out").is_dir()
    assert out.stat().st_size == 12 and out.stat().st_mtime > 0
    assert out.checksum() == int(alice_hook.checksum(f"{workdir}/out/result.txt")["adler32"], 16)
    with out.open("rb") as f:
        f.seek(6)
        assert f.read(5) == b"dCach"
    assert [p.name for p in root.joinpath("out").iterdir()] == ["result.txt"]
    assert [p.name for p in root.glob("**/*.txt")] == ["result.txt"]
    moved = out.rename(root / "moved.txt")
    assert moved.read_bytes() == b"hello dCache" and not out.exists()
    moved.unlink()
    assert not moved.exists()


def test_explicit_connection_and_site_spelling(conn: str, workdir: str, alice_hook: DCacheHook) -> None:
    alice_hook.upload(io.BytesIO(b"abc"), f"{workdir}/in.txt")
    site = conn.replace("_", "-")
    by_site = ObjectStoragePath(f"dcache://{site}{workdir}/in.txt")  # the asset URI's spelling
    explicit = ObjectStoragePath(f"dcache://{conn}@{site}{workdir}/in.txt")  # Airflow's conn@ spelling
    keyword = ObjectStoragePath(f"dcache://{site}{workdir}/in.txt", conn_id=conn)
    assert explicit.conn_id == conn and keyword.conn_id == conn
    assert by_site.read_bytes() == explicit.read_bytes() == keyword.read_bytes() == b"abc"
    assert str(by_site) == f"dcache://{site}{workdir}/in.txt"


def test_site_spelling_is_the_lineage_asset(conn: str, workdir: str) -> None:
    """With hook lineage on, Airflow makes an Asset of each URL read or written: the site spelling is the
    provider's own ``dcache://<site>/<path>`` asset, the connection-id spelling (``_``) is refused by it."""
    from airflow.sdk.lineage import HookLineageCollector

    site = conn.replace("_", "-")
    path = ObjectStoragePath(f"dcache://{site}{workdir}/x.h5")
    asset = HookLineageCollector().create_asset(uri=str(path))
    assert asset is not None and asset.uri == f"dcache://{site}{workdir}/x.h5"
