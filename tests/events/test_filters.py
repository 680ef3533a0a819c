"""The filter model: pattern syntax, criteria, validation at construction, deterministic kwargs."""

from __future__ import annotations

import pytest

from airflow_dcache.events import EventFilter, StorageEvent
from airflow_dcache.events.model import EventKind


def ev(path: str = "/data/in/a.h5", **kw: object) -> StorageEvent:
    base: dict = dict(kind="closed_after_write", path=path, name=path.rsplit("/", 1)[-1], is_dir=False,
                      time="2026-05-14T08:21:07.512Z", source="kafka", cursor="billing:0:1")
    base.update(kw)
    return StorageEvent(**base)


def test_empty_filter_matches_everything_but_p2p_and_failures() -> None:
    f = EventFilter()
    assert f.matches(ev())
    assert not f.matches(ev(extra={"isP2p": True}))
    assert not f.matches(ev(extra={"status": {"code": 666, "msg": "boom"}}))
    lenient = EventFilter(exclude_p2p=False, exclude_failed=False)
    assert lenient.matches(ev(extra={"isP2p": True, "status": {"code": 1}}))


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.h5", "/data/in/a.h5", True),
        ("*.h5", "/data/in/a.root", False),
        ("/data/in", "/data/in/sub/a.h5", True),
        ("/data/in", "/data/incoming/a.h5", False),
        ("/data/*/raw/*.h5", "/data/x/raw/b.h5", True),
        ("re:/run[0-9]+/", "/data/run42/a", True),
        ("re:/run[0-9]+/", "/data/runx/a", False),
        ("a.h5", "/data/in/a.h5", True),
        ("/", "/anything", True),
    ],
)
def test_include_patterns(pattern: str, path: str, expected: bool) -> None:
    assert EventFilter(include=[pattern]).matches(ev(path)) is expected


def test_exclude_name_regex_kinds() -> None:
    f = EventFilter(include=["*.h5"], exclude=["*.tmp.h5", "/data/in/skip"], name_regex=r"run\d+\.h5",
                    kinds=["IN_CLOSE_WRITE", "moved_in"])
    assert f.matches(ev("/data/in/run1.h5"))
    assert f.matches(ev("/data/in/run1.h5", kind="moved_in"))
    assert not f.matches(ev("/data/in/run1.h5", kind="created"))
    assert not f.matches(ev("/data/in/skip/run1.h5"))
    assert not f.matches(ev("/data/in/x1.tmp.h5"))
    assert not f.matches(ev("/data/in/xrun1.h5"))  # fullmatch


def test_users_ips_sizes_fail_closed_when_unknown() -> None:
    f = EventFilter(users=["alice"], client_ips=["10.0.0.0/8"], min_size=10, max_size=100)
    assert f.matches(ev(user="alice", client_host="10.1.2.3", size=50))
    assert not f.matches(ev(user="bob", client_host="10.1.2.3", size=50))
    assert not f.matches(ev(user="alice", client_host="192.168.1.1", size=50))
    assert not f.matches(ev(user="alice", client_host="10.1.2.3", size=500))
    assert not f.matches(ev(user="alice", client_host="10.1.2.3"))  # size unknown
    assert not f.matches(ev(client_host="10.1.2.3", size=50))  # user unknown


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"include": ["re:("]}, "include"),
        ({"exclude": [""]}, "exclude"),
        ({"include": ["/data/../etc"]}, "include"),
        ({"name_regex": "[a"}, "name_regex"),
        ({"kinds": ["IN_BOGUS"]}, "kinds"),
        ({"kinds": ["exploded"]}, "kinds"),
        ({"client_ips": ["not-an-ip"]}, "client_ips"),
        ({"min_size": -1}, "min_size"),
        ({"min_size": 10, "max_size": 5}, "min_size"),
        ({"users": [3]}, "users"),
        ({"exclude_p2p": "yes"}, "exclude_p2p"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}"):
        EventFilter(**kwargs)


def test_kwargs_are_deterministic_and_round_trip() -> None:
    a = EventFilter(include=["b*", "a*", "a*"], kinds=["moved_in", "IN_CLOSE_WRITE"], users=["z", "a"])
    b = EventFilter(include=["a*", "b*"], kinds=["closed_after_write", "moved_in"], users=["a", "z"])
    assert a.to_kwargs() == b.to_kwargs()
    assert a.to_kwargs()["include"] == ["a*", "b*"]
    assert a.to_kwargs()["kinds"] == ["closed_after_write", "moved_in"]
    assert EventFilter.from_kwargs(a.to_kwargs()) == a
    with pytest.raises(ValueError, match=r"^inclde"):
        EventFilter.from_kwargs({"inclde": []})


def test_compiled_filter_pickles_and_still_matches() -> None:
    """The per-pattern tests are compiled once; a filter must still survive pickling (deep copies, executors)."""
    import pickle

    flt = EventFilter(include=("/data/in", "*.h5", "re:^/x", "/a/*/b.txt", "exact", "/"), exclude=("*.tmp",))
    clone = pickle.loads(pickle.dumps(flt))
    assert clone == flt
    for path in ("/data/in/a.tmp", "/data/in/a", "/elsewhere/f.h5", "/x/1", "/a/q/r/b.txt", "/p/exact"):
        event = StorageEvent(kind=EventKind.CLOSED_AFTER_WRITE, path=path, name=path.rsplit("/", 1)[-1], is_dir=False,
                             time="2026-05-14T08:21:07.512Z", source="kafka", cursor="t:0:1")
        assert clone.matches(event) == flt.matches(event) == (not path.endswith(".tmp"))
