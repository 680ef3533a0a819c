"""The ``dcache://`` fsspec filesystem against the bundled service: metadata, ranged reads, writes, changes.

Every call crosses HTTP to the real service through the provider's hook; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import stat
import zlib
from pathlib import Path
from typing import Any

import pytest

from airflow_dcache.fs.dcache import DCacheFileSystem, get_fs, schemes
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.paths import OutsideAllowedRoots
from tests.hooks.conftest import ConnFactory, server_conn

DATA = bytes(range(256)) * 40  # 10 240 bytes, every offset distinguishable


def name(conn: str, path: str) -> str:
    return f"dcache://{conn}{path}"


def test_module_contract() -> None:
    assert schemes == ["dcache"]
    fs = get_fs(None, None)
    assert isinstance(fs, DCacheFileSystem) and fs.conn_id is None
    bound = get_fs("dc_x", {"block_size": 1024, "auto_mkdir": True})
    assert bound.blocksize == 1024
    copy = pickle.loads(pickle.dumps(bound))  # rebuilt from its arguments (no session travels)
    assert (copy.conn_id, copy.blocksize, copy.auto_mkdir) == ("dc_x", 1024, True)


def test_md5_upload_is_stored_and_shown(conn: str, workdir: str) -> None:
    fs = get_fs(None, {"upload_checksum": "md5", "auto_mkdir": True})
    url = name(conn, f"{workdir}/new/dir/m.bin")  # auto_mkdir creates the parents
    fs.pipe_file(url, DATA)
    info = fs.info(url)
    assert info["md5"] == hashlib.md5(DATA).hexdigest() and info["adler32"] == f"{zlib.adler32(DATA):08x}"
    assert fs.checksums(url) == {"adler32": info["adler32"], "md5": info["md5"]}


def test_write_read_ranges_and_seek(conn: str, workdir: str) -> None:
    fs = get_fs(None)
    url = name(conn, f"{workdir}/data.bin")
    with fs.open(url, "wb", block_size=4096) as f:
        for start in range(0, len(DATA), 1000):  # several writes, some past one block: one upload at close
            f.write(DATA[start:start + 1000])
    assert fs.cat_file(url) == DATA
    assert fs.cat_file(url, start=300, end=310) == DATA[300:310]
    assert fs.cat_file(url, start=-5) == DATA[-5:]
    with fs.open(url, "rb", block_size=1024) as f:
        assert f.size == len(DATA)
        f.seek(5000)
        assert f.read(7) == DATA[5000:5007]
        f.seek(-3, 2)
        assert f.read() == DATA[-3:]
        f.seek(0)
        assert f.read() == DATA  # sequential: block by block
    assert fs.read_block(url, 100, 20) == DATA[100:120]
    with fs.open(url, "r", encoding="latin-1") as text:  # text modes wrap the binary file
        assert text.read(4) == DATA[:4].decode("latin-1")


def test_info_ls_and_checksums(conn: str, workdir: str, alice_hook: DCacheHook) -> None:
    fs = get_fs(None)
    alice_hook.upload(io.BytesIO(DATA), f"{workdir}/x.h5")
    alice_hook.mkdir(f"{workdir}/sub")
    info = fs.info(name(conn, f"{workdir}/x.h5"))
    assert info["name"] == f"{conn}{workdir}/x.h5"
    assert info["type"] == "file" and info["size"] == len(DATA)
    assert isinstance(info["mtime"], float) and info["mtime"] > 1e9
    assert stat.S_ISREG(info["mode"]) and info["uid"] >= 0
    adler = f"{zlib.adler32(DATA):08x}"
    assert info["adler32"] == adler
    assert fs.checksums(name(conn, f"{workdir}/x.h5"))["adler32"] == adler
    assert fs.checksum(name(conn, f"{workdir}/x.h5")) == int(adler, 16)
    key = fs.ukey(name(conn, f"{workdir}/x.h5"))
    assert key == f"{info['pnfsid']};adler32:{adler}"
    fs.pipe_file(name(conn, f"{workdir}/x.h5"), DATA)  # the same bytes again: a new version, a new key
    assert fs.ukey(name(conn, f"{workdir}/x.h5")) not in (key, None)
    assert fs.ukey(name(conn, f"{workdir}/x.h5")).endswith(f";adler32:{adler}")
    listing = fs.ls(name(conn, workdir))
    assert [(i["name"], i["type"]) for i in listing] == [
        (f"{conn}{workdir}/sub", "directory"), (f"{conn}{workdir}/x.h5", "file")]
    assert fs.ls(name(conn, workdir), detail=False) == [f"{conn}{workdir}/sub", f"{conn}{workdir}/x.h5"]
    assert fs.ls(name(conn, f"{workdir}/x.h5"))[0]["size"] == len(DATA)  # ls of a file: the file
    assert fs.isdir(name(conn, f"{workdir}/sub")) and fs.isfile(name(conn, f"{workdir}/x.h5"))
    assert fs.find(name(conn, workdir)) == [f"{conn}{workdir}/x.h5"]
    assert fs.modified(name(conn, f"{workdir}/x.h5")).tzinfo is not None


def test_mkdir_mv_rm_exists(conn: str, workdir: str) -> None:
    fs = get_fs(None)
    base = name(conn, workdir)
    fs.mkdir(f"{base}/a/b")  # parents by default
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/a/b")
    fs.makedirs(f"{base}/a/b", exist_ok=True)
    fs.pipe_file(f"{base}/a/b/one.txt", b"1")
    fs.mv(f"{base}/a/b/one.txt", f"{base}/a/two.txt")
    assert not fs.exists(f"{base}/a/b/one.txt") and fs.cat_file(f"{base}/a/two.txt") == b"1"
    fs.mv(f"{base}/a", f"{base}/renamed")  # a directory renames on the server too
    assert fs.exists(f"{base}/renamed/b") and not fs.exists(f"{base}/a")
    fs.copy(f"{base}/renamed/two.txt", f"{base}/copy.txt")
    assert fs.cat_file(f"{base}/copy.txt") == b"1"
    fs.rm(f"{base}/copy.txt")
    with pytest.raises(IsADirectoryError):
        fs.rm_file(f"{base}/renamed")
    fs.rm(f"{base}/renamed", recursive=True)
    assert fs.ls(base) == []
    with pytest.raises(FileNotFoundError):
        fs.info(f"{base}/nothing")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{base}/nothing")


def test_failed_writer_leaves_no_file(conn: str, workdir: str) -> None:
    fs = get_fs(None)
    url = name(conn, f"{workdir}/half.bin")
    with pytest.raises(RuntimeError), fs.open(url, "wb") as f:
        f.write(b"partial")
        raise RuntimeError("writer failed")
    assert not fs.exists(url)


def test_names_with_spaces_and_unicode(conn: str, workdir: str, alice_hook: DCacheHook) -> None:
    fs = get_fs(None)
    directory = name(conn, f"{workdir}/dir with space")
    fs.mkdir(directory)
    url = f"{directory}/Grüße 東京 #1.txt"
    fs.pipe_file(url, "naïve".encode())
    assert alice_hook.stat(f"{workdir}/dir with space/Grüße 東京 #1.txt").size == len("naïve".encode())
    assert fs.ls(directory, detail=False) == [f"{conn}{workdir}/dir with space/Grüße 東京 #1.txt"]
    assert fs.cat_file(url).decode() == "naïve"
    fs.rm(url)
    assert not fs.exists(url)


def test_get_and_put_files(conn: str, workdir: str, tmp_path: Path) -> None:
    fs = get_fs(None)
    local = tmp_path / "in.bin"
    local.write_bytes(DATA)
    fs.put_file(str(local), name(conn, f"{workdir}/up.bin"))
    fs.get_file(name(conn, f"{workdir}/up.bin"), str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == DATA


def test_outside_allowed_roots_is_refused(set_conn: ConnFactory, dcache_server: Any, workdir: str) -> None:
    limited = server_conn(set_conn, dcache_server, "alice", allowed_roots=workdir)
    fs = get_fs(None)
    fs.pipe_file(name(limited, f"{workdir}/ok.txt"), b"ok")
    for call in (lambda: fs.ls(name(limited, "/home/alice")), lambda: fs.exists(name(limited, "/home/bob/x")),
                 lambda: fs.open(name(limited, "/home/alice/x"), "wb").close()):
        with pytest.raises(OutsideAllowedRoots, match="outside the allowed roots"):
            call()
    narrowed = get_fs(None, {"allowed_roots": [f"{workdir}/sub"]})  # storage options narrow further
    with pytest.raises(OutsideAllowedRoots):
        narrowed.info(name(limited, f"{workdir}/ok.txt"))


def test_authority_site_and_bound_connection(conn: str, workdir: str) -> None:
    site = conn.replace("_", "-")  # the connection's default asset site
    fs = get_fs(None)
    fs.pipe_file(name(site, f"{workdir}/s.txt"), b"site")
    assert fs.cat_file(name(conn, f"{workdir}/s.txt")) == b"site"
    bound = get_fs(conn)
    assert bound.cat_file(f"{workdir}/s.txt") == b"site"  # a bare dCache path: the bound connection
    assert bound.cat_file(name(site, f"{workdir}/s.txt")) == b"site"
    assert bound.unstrip_protocol(f"{workdir}/s.txt") == name(conn, f"{workdir}/s.txt")
    with pytest.raises(ValueError, match="is not connection"):
        bound.info(name("other-site", workdir))
    with pytest.raises(ValueError, match="no dcache connection for dcache://nosuchconn"):
        fs.info(name("nosuchconn", workdir))
    with pytest.raises(ValueError, match="needs a connection"):
        fs.info(workdir)


def test_bad_options_and_paths_name_the_field(conn: str) -> None:
    with pytest.raises(ValueError, match="storage_options: unknown option"):
        get_fs(conn, {"blocksize": 1})
    with pytest.raises(ValueError, match="block_size"):
        get_fs(conn, {"block_size": 0})
    with pytest.raises(ValueError, match="upload_checksum"):
        get_fs(conn, {"upload_checksum": "crc"})
    with pytest.raises(ValueError, match=r"path: '\.\.' is not allowed"):
        get_fs(None).info(name(conn, "/home/alice/../bob"))
    with pytest.raises(ValueError, match="mode"):
        get_fs(None).open(name(conn, "/home/alice/x"), "ab")
