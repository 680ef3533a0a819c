"""The compose stack as far as it can be exercised here (images cannot be pulled on this machine).

* ``docker-compose config`` (Compose v1.29 from Debian, or the v2 plugin) validates the file;
* its structure is checked against what the deployment docs promise (services, two triggerers,
  CeleryExecutor, loopback-only ports, the wheel-built image, the Docker socket for functions);
* the image's set-up script (``docker/init_dcache.py``) runs for real: the users file and the
  connections file, read back through Airflow's ``LocalFilesystemBackend``, and the site layout
  against two real service instances on 127.0.0.1 and 127.0.0.2 (same ports, as on the compose network).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
INIT = ROOT / "docker" / "init_dcache.py"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer-1", "airflow-triggerer-2", "airflow-init"}


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_validates() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither the compose v2 plugin nor docker-compose is installed (apt: docker-compose)")
    done = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_compose_structure() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved as compose does
    services = doc["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "kafka", "dcache-main", "dcache-buffer", "dcache-init",
                               "dcache-layout"} <= set(services)
    triggerers = [n for n, s in services.items() if s.get("command") == "triggerer"]
    assert len(triggerers) >= 2
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/airflow.Dockerfile", name
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/dcache"} <= mounts, name
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["airflow-worker"]["volumes"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for site in ("dcache-main", "dcache-buffer"):
        assert services[site]["entrypoint"] == ["airflow-dcache", "server"]
        assert "--users" in services[site]["command"]  # never the loopback-only development admin
    dockerfile = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2\n" in dockerfile
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in dockerfile and "airflow_dcache-*.whl" in dockerfile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_init_script_users_connections_and_layout(tmp_path: Path) -> None:
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    from airflow_dcache.testing.sites import start_site

    door, frontend = _free_port(), _free_port()
    hosts = ["--main-host", "127.0.0.1", "--buffer-host", "127.0.0.2", "--door-port", str(door),
             "--frontend-port", str(frontend)]
    done = subprocess.run([sys.executable, str(INIT), "users", "--dir", str(tmp_path), *hosts],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "connections.json").stat().st_mode & 0o077 == 0  # passwords: owner only
    backend = LocalFilesystemBackend(connections_file_path=str(tmp_path / "connections.json"))
    main = backend.get_connection("dcache_main")
    assert main is not None and main.conn_type == "dcache" and main.login == "pipeline"
    assert main.extra_dejson == {"frontend_url": f"http://127.0.0.1:{frontend}", "site": "main"}
    kafka = backend.get_connection("kafka_billing")
    assert kafka is not None and kafka.extra_dejson["bootstrap.servers"] == "kafka:9092"

    sites = [start_site(name, tmp_path, tmp_path / "users.json", "--host", host, ports=(door, frontend))
             for name, host in (("main", "127.0.0.1"), ("buffer", "127.0.0.2"))]
    try:
        done = subprocess.run([sys.executable, str(INIT), "layout", "--dir", str(tmp_path), *hosts],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        password = json.loads((tmp_path / "credentials.json").read_text())["pipeline"]
        r = requests.get(f"http://127.0.0.1:{frontend}/api/v1/namespace/data/incoming",
                         auth=("pipeline", password), timeout=10)
        assert r.status_code == 200, r.text
        r = requests.get(f"http://127.0.0.2:{frontend}/api/v1/namespace/data/work", auth=("pipeline", password),
                         timeout=10)
        assert r.status_code == 200, r.text
    finally:
        for site in sites:
            site.stop()
