"""``$AIRFLOW_DCACHE_FUNCTION_SITE_ADDRESSES``: a function's container reaches the site by the address it sees.

The worker's address of the site (a compose service name here, ``dcache-main``) does not resolve
where the container runs; after :func:`for_container` the document's URLs point at the published port
and a real download from the bundled service works with the document's own credentials.
"""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from airflow_dcache.functions.addressing import (
    SITE_ADDRESSES_ENV,
    for_container,
    parse_site_addresses,
    rewrite_url,
)
from airflow_dcache.functions.taskdoc import TaskDocument, TaskInput, TaskOutput


def test_parse_pairs_json_and_errors() -> None:
    pairs = parse_site_addresses("http://dcache-main:2880=http://127.0.0.1:2880, https://Main.Example.org=https://h:8443")
    assert pairs == {("http", "dcache-main", 2880): ("http", "127.0.0.1", 2880),
                     ("https", "main.example.org", 443): ("https", "h", 8443)}
    assert parse_site_addresses('{"http://a:1": "http://b:2"}') == {("http", "a", 1): ("http", "b", 2)}
    assert parse_site_addresses("") == {} and parse_site_addresses(None) == {}
    for bad in ("http://a:1", "http://a:1=ftp://b", "http://a:1/data=http://b:2", "{not json", "a=b"):
        with pytest.raises(ValueError, match=SITE_ADDRESSES_ENV):
            parse_site_addresses(bad)


def test_rewrite_keeps_path_query_and_other_sites() -> None:
    mapping = parse_site_addresses("http://dcache-main:2880=http://127.0.0.1:12880")
    url = "http://dcache-main:2880/data/x%20y.h5?authz=MDAx&x=1"
    assert rewrite_url(url, mapping) == "http://127.0.0.1:12880/data/x%20y.h5?authz=MDAx&x=1"
    assert rewrite_url("http://dcache-buffer:2880/data", mapping) == "http://dcache-buffer:2880/data"
    assert rewrite_url("HTTP://DCACHE-MAIN:2880/a", mapping) == "http://127.0.0.1:12880/a"
    assert rewrite_url("not a url", mapping) == "not a url"
    v6 = parse_site_addresses("http://dcache-main:2880=http://[::1]:2880")
    assert rewrite_url("http://dcache-main:2880/a", v6) == "http://[::1]:2880/a"


def test_unset_leaves_the_document_byte_identical() -> None:
    doc = TaskDocument("f", [TaskInput("/a", "http://dcache-main:2880/a")], None, {}, 1.0).to_json()
    assert for_container(doc, {}) is doc
    assert for_container(doc, {SITE_ADDRESSES_ENV: "http://other:1=http://127.0.0.1:1"}) == doc


def test_the_container_reaches_the_site_through_the_mapped_address(dcache_server) -> None:
    name = f"/home/alice/addressing-{uuid.uuid4().hex[:8]}.dat"
    auth = dcache_server.auth("alice")
    requests.put(f"{dcache_server.webdav}{name}", data=b"payload", auth=auth, timeout=30).raise_for_status()
    real = urlsplit(dcache_server.webdav)
    worker_view = f"http://dcache-main:{real.port}"  # a compose service name: not resolvable on the engine's host
    basic = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    doc = TaskDocument("f", [TaskInput(name, f"{worker_view}{name}", authorization=basic)],
                       TaskOutput("/home/alice/out", f"{worker_view}/home/alice/out/", basic), {}, 1.0).to_json()
    assert json.loads(doc)["inputs"][0]["url"].startswith(worker_view)  # what the worker would hand over

    env = {SITE_ADDRESSES_ENV: f"{worker_view}=http://127.0.0.1:{real.port}"}
    seen = json.loads(for_container(doc, env))
    assert seen["output"]["url_prefix"] == f"http://127.0.0.1:{real.port}/home/alice/out/"
    r = requests.get(seen["inputs"][0]["url"], headers={"Authorization": seen["inputs"][0]["authorization"]},
                     timeout=30)
    assert r.status_code == 200 and r.content == b"payload"
