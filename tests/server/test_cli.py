"""The ``airflow-dcache server`` command-line contract that scripts and other tools rely on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import requests

CMD = [sys.executable, "-m", "airflow_dcache.cli", "server"]


def test_dev_users_file_json_line_and_sigterm(tmp_path):
    proc = subprocess.Popen([*CMD, "--data-dir", str(tmp_path), "--webdav-port", "0", "--frontend-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert {"webdav", "frontend", "api", "site", "pid"} <= info.keys()
        assert info["api"] == info["frontend"] + "/api/v1" and info["pid"] == proc.pid
        password = proc.stderr.readline().strip().removeprefix("admin password: ")
        r = requests.get(f"{info['api']}/user", auth=("admin", password))
        assert r.json()["username"] == "admin" and r.json()["unassertedRoles"] == ["admin"]
        asserted = requests.get(f"{info['api']}/user", auth=("admin#admin", password)).json()
        assert asserted["roles"] == ["admin"] and "unassertedRoles" not in asserted
        users = json.loads((tmp_path / "users.json").read_text())
        assert password not in (tmp_path / "users.json").read_text()  # only the hash is stored
        assert users["users"][0]["username"] == "admin"
        assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_password_is_printed_only_once(tmp_path):
    for expect_password in (True, False):
        proc = subprocess.Popen([*CMD, "--data-dir", str(tmp_path), "--webdav-port", "0", "--frontend-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert ("admin password:" in err) is expect_password


def test_dev_users_refused_on_non_loopback(tmp_path):
    r = subprocess.run([*CMD, "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--webdav-port", "0",
                        "--frontend-port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "loopback" in r.stderr
    assert not (tmp_path / "users.json").exists()


def test_bad_users_file_names_the_field(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"username": "x", "password_hash": "nope", "uid": 1}]}))
    r = subprocess.run([*CMD, "--data-dir", str(tmp_path / "d"), "--users", str(users)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "users[0].password_hash" in r.stderr


def test_bad_options_are_refused(tmp_path):
    for extra, needle in ((["--webdav-port", "70000"], "--webdav-port"), (["--tls-cert", "x"], "--tls-key"),
                          (["--max-upload", "0"], "--max-upload")):
        r = subprocess.run([*CMD, "--data-dir", str(tmp_path), *extra], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and needle in r.stderr


def test_port_in_use_is_a_clear_error(dcache_server, tmp_path):
    port = dcache_server.webdav.rsplit(":", 1)[1]
    r = subprocess.run([*CMD, "--data-dir", str(tmp_path), "--webdav-port", port, "--frontend-port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "cannot listen" in r.stderr
