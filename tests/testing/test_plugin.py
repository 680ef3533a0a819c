"""The pytest plugin's fixtures as this repository sees them (its conftest keeps its own ``dcache_server``).

The plugin's own ``dcache_server`` is exercised by ``test_docs_example.py``, in a project without a
conftest; here: precedence, TLS instances, connections, the upload helper, the demo sites, Kafka
re-exports, and that loading the plugin costs nothing until a fixture is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import requests

from airflow_dcache.hooks.dcache import DCacheHook


def test_project_conftest_fixture_wins(dcache_server: Any) -> None:
    assert type(dcache_server).__module__ == "tests.conftest"  # the plugin's fixture is overridden cleanly


def test_tls_instance_connection_and_upload_event(dcache_server_factory: Callable[..., Any],
                                                  dcache_connection: Callable[..., str],
                                                  dcache_upload: Callable[..., Any]) -> None:
    server = dcache_server_factory(tls=True, site="tls-site")
    assert server.webdav.startswith("https://") and server.ca_file is not None
    conn_id = dcache_connection("dcache_tls", user="bob", server=server)
    conn = json.loads(os.environ["AIRFLOW_CONN_DCACHE_TLS"])
    assert conn["extra"]["ca_bundle"] == str(server.ca_file) and conn["extra"]["site"] == "tls-site"
    with DCacheHook(conn_id) as hook:
        assert hook.whoami().username == "bob"
    event = dcache_upload("/home/bob/run7.h5", b"data" * 100, conn_id=conn_id)
    assert (event.type, event.name, event.mask) == ("inotify", "run7.h5", ["IN_CLOSE_WRITE"])
    r = requests.get(server.webdav + "/home/bob/run7.h5", auth=server.auth("bob"), verify=str(server.ca_file),
                     timeout=10)
    assert r.content == b"data" * 100


def test_plain_instance_with_server_flags(dcache_server_factory: Callable[..., Any]) -> None:
    server = dcache_server_factory("--tape-flush-delay", "1", users=[
        {"username": "dana", "uid": 1500, "gids": [1500], "home": "/home/dana"}])
    assert set(server.passwords) == {"dana"}
    assert "--tape-flush-delay" in server.cmd and "--allow-insecure-macaroons" in server.cmd
    r = requests.request("PROPFIND", server.webdav + "/home/dana", auth=server.auth("dana"),
                         headers={"Depth": "0"}, timeout=10)
    assert r.status_code == 207


def test_dcache_conn_points_at_the_session_server(dcache_conn: str, dcache_server: Any) -> None:
    assert dcache_conn == "dcache_default"
    conn = json.loads(os.environ["AIRFLOW_CONN_DCACHE_DEFAULT"])
    assert conn["host"] == dcache_server.webdav and conn["login"] == "alice"
    with DCacheHook() as hook:
        assert hook.whoami().username == "alice"


def test_demo_sites(dcache_sites: Any) -> None:
    env = dcache_sites.connections()
    assert set(env) == {"AIRFLOW_CONN_DCACHE_MAIN", "AIRFLOW_CONN_DCACHE_BUFFER"}
    main = json.loads(env["AIRFLOW_CONN_DCACHE_MAIN"])
    assert main["extra"]["site"] == "main" and main["login"] == "pipeline"


def test_kafka_fixtures_are_the_packaged_ones() -> None:
    import airflow_dcache.testing.kafka as packaged
    import airflow_dcache.testing.plugin as plugin
    import tests.kafka_broker as project

    assert project.KafkaBroker is packaged.KafkaBroker and project.unique_topic is packaged.unique_topic
    assert project.kafka_broker is plugin.kafka_broker


def test_kafka_broker_fixture(kafka_broker: Any) -> None:
    from airflow_dcache.testing.kafka import unique_topic

    topic = unique_topic("plugin")
    kafka_broker.create_topic(topic)
    kafka_broker.produce(topic, [b'{"n": 1}'])
    assert [r.json() for r in kafka_broker.consume(topic, count=1)] == [{"n": 1}]


def test_loading_the_plugin_starts_and_imports_nothing_heavy() -> None:
    code = ("import sys, airflow_dcache.testing.plugin as p; "
            "print(sorted(m for m in ('airflow', 'aiohttp', 'confluent_kafka', 'airflow_dcache.server') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_entry_point_registered() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "dcache"]
    assert ep.value == "airflow_dcache.testing.plugin"
