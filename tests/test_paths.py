"""``airflow_dcache.paths``: the one path check of operator arguments, at parse time and once rendered."""

from __future__ import annotations

import pytest

from airflow_dcache.paths import InvalidPath, check_at_parse, paths_from


def test_paths_from_accepts_what_operators_chain_and_spells_each_once() -> None:
    assert paths_from("/data//in/") == ["/data/in"]
    assert paths_from([{"path": "/a/./x "}, {"destinations": ["/b/y"]}, {"paths": ["/c"]}]) == ["/a/x ", "/b/y", "/c"]


@pytest.mark.parametrize(("value", "why"), [
    (None, "no path given"),
    ([], "empty"),
    ({"destinations": []}, "empty"),
    (42, "expected a path or a list"),
    (["relative/x"], "absolute"),
    (["/data/../etc"], "'..'"),
    (["/data/x\x00"], "control"),
    ([{"name": "x"}], "absolute dCache path is required"),
])
def test_paths_from_refuses_naming_the_field(value: object, why: str) -> None:
    with pytest.raises(InvalidPath, match=rf"^source_path: .*{why}"):
        paths_from(value, field="source_path")


def test_check_at_parse_checks_plain_values_and_leaves_templates_for_later() -> None:
    check_at_parse("{{ params.path }}")
    check_at_parse(["/a", "{{ ti.xcom_pull('x') }}"])
    check_at_parse(object())  # an XComArg: known only when the task runs
    with pytest.raises(InvalidPath, match=r"^path: "):
        check_at_parse("relative")
    with pytest.raises(InvalidPath, match=r"^paths: .*empty"):
        check_at_parse([], field="paths")
