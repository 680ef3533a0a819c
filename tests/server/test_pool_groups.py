"""``/api/v1/poolgroups``: dCache's PoolGroupInfoResources over this service's one pool, over HTTP.

Shapes from dCache's frontend (``PoolGroup``: name, links, pools, nestedPoolGroups; ``PoolGroupInfo``
with ``groupSpaceData`` / ``costDataForPools`` / ``cellDataForPools``), an unknown group as dCache
answers it (400, "No such pool group: …"), and space numbers checked against the pool's disk and
the files' tape state.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from tests.server.test_bulk_and_tape_rest import wait_for

POOL = "main-pool1"  # <site>-pool1, the site being "main"
GROUP = {"name": "default", "links": ["default-link"], "pools": [POOL], "nestedPoolGroups": []}


def get(server, path: str, user: str | None = "alice") -> requests.Response:
    return requests.get(f"{server.api}/poolgroups{path}", auth=server.auth(user) if user else None, timeout=30)


def test_list_and_describe_the_default_group(dcache_server, alice):
    r = get(dcache_server, "")
    assert r.status_code == 200 and r.json() == [GROUP]
    assert get(dcache_server, "/default").json() == GROUP
    # the pool is the one the namespace reports as a replica's location
    name = f"pg-{uuid.uuid4().hex[:6]}"
    alice.put(f"{dcache_server.webdav}/home/alice/{name}", data=b"x")
    doc = alice.get(f"{dcache_server.api}/namespace/home/alice/{name}?locations=true").json()
    assert doc["locations"] == GROUP["pools"]


def test_pools_of_a_group_and_of_all(dcache_server):
    for group in ("default", "ALL", "all", "All"):
        r = get(dcache_server, f"/{group}/pools")
        assert r.status_code == 200 and r.json() == [POOL], group


@pytest.mark.parametrize("sub", ["", "/pools", "/usage", "/queues", "/space"])
def test_unknown_group_is_400_as_in_dcache(dcache_server, sub):
    r = get(dcache_server, f"/nosuchgroup{sub}")
    assert r.status_code == 400
    assert r.json() == {"status": "400", "title": "Bad Request", "detail": "No such pool group: nosuchgroup"}


@pytest.mark.parametrize("sub", ["", "/default", "/default/pools", "/default/usage", "/default/queues",
                                 "/default/space", "/default/histograms/queues", "/default/histograms/files"])
def test_login_required(dcache_server, sub):
    r = get(dcache_server, sub, user=None)
    assert r.status_code == 401 and r.json()["status"] == "401"


def test_what_is_not_modelled_answers_as_dcache_without_data(dcache_server):
    assert get(dcache_server, "/default/usage").json() == {"cellDataForPools": {POOL: None}}
    for kind in ("queues", "files"):
        r = get(dcache_server, f"/default/histograms/{kind}")
        assert r.status_code == 200 and r.json() == {}
    for sub in ("/default/storageunits", "/default/storageunits/space", "/default/storageunits/x@y/space"):
        assert get(dcache_server, sub).status_code == 404, sub


def _pool_bytes(server) -> int:
    data = server.data_dir / "pools" / POOL / "data"
    return sum(p.stat().st_size for p in data.iterdir() if p.is_file())


def test_space_of_the_pool(dcache_server, alice):
    alice.put(f"{dcache_server.webdav}/home/alice/pg-big-{uuid.uuid4().hex[:6]}", data=os.urandom(300_000))
    doc = get(dcache_server, "/default/space").json()
    assert set(doc) == {"groupSpaceData", "costDataForPools"}
    space = doc["groupSpaceData"]
    assert set(space) == {"total", "free", "precious", "removable"}  # lru, gap, breakEven: not modelled
    assert doc["costDataForPools"] == {POOL: {"label": "Pool Cost Info", "space": space}}
    used = space["total"] - space["free"]
    assert abs(used - _pool_bytes(dcache_server)) < 1 << 20  # other tests may write meanwhile
    st = os.statvfs(dcache_server.data_dir)
    assert abs(space["free"] - st.f_bavail * st.f_frsize) < 64 << 20
    assert space["precious"] == 0 and space["removable"] == 0  # disk-only, sticky: neither
    # the same pools, read again: the disk's free space moves with every other test's writes meanwhile
    queues = get(dcache_server, "/default/queues").json()
    assert set(queues) == {"costDataForPools"} and queues["costDataForPools"].keys() == {POOL}
    again = queues["costDataForPools"][POOL]
    assert again["label"] == "Pool Cost Info" and again["space"].keys() == space.keys()
    assert abs(again["space"]["free"] - space["free"]) < 64 << 20
    assert get(dcache_server, "/ALL/space").json()["groupSpaceData"].keys() == space.keys()


@pytest.fixture
def tape_server(start_dcache):
    return start_dcache("--tape-flush-delay", "2", "--tape-stage-delay", "0.1", name="pg-tape")




def test_precious_and_removable_follow_the_tape_state(tape_server):
    """Waiting for a flush: precious. On tape, staged by a read, no QoS or pin keeping it: removable."""
    auth = tape_server.auth("alice")
    path = f"/home/alice/pg-tape-{uuid.uuid4().hex[:6]}"
    data = os.urandom(50_000)
    assert requests.put(f"{tape_server.webdav}{path}", data=data, auth=auth).status_code == 201

    def space():
        return get(tape_server, "/default/space").json()["groupSpaceData"]

    assert space()["precious"] == 0
    r = requests.post(f"{tape_server.api}/namespace{path}", json={"action": "qos", "target": "tape"}, auth=auth)
    assert r.status_code == 201
    assert space()["precious"] == len(data)  # the flush waits 2 s
    wait_for(lambda: requests.get(f"{tape_server.api}/namespace{path}?locality=true",
                               auth=auth).json()["fileLocality"] == "NEARLINE")
    after = space()
    assert after["precious"] == 0 and after["removable"] == 0  # the disk copy is gone
    assert requests.get(f"{tape_server.webdav}{path}", auth=auth).content == data  # stages it, no pin
    staged = space()
    assert staged["removable"] == len(data) and staged["precious"] == 0
    assert staged["total"] - staged["free"] >= len(data)
