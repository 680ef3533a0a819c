"""Caveat and validity values are checked before dCache bakes a bad one into a macaroon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_dcache.hooks._caveats import builder_validity, caveat_strings, iso_duration, request_caveats
from airflow_dcache.macaroons.caveats import CaveatBuilder


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PT15M", "PT15M"),
        ("p1dt12h", "P1DT12H"),
        (900, "PT15M"),
        (timedelta(hours=2, minutes=1), "PT2H1M"),
        (timedelta(days=1), "PT24H"),
    ],
)
def test_iso_duration(value: object, expected: str) -> None:
    assert iso_duration(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["P1W", "P1M", "15 minutes", "PT", 0, -5, timedelta(0)])
def test_iso_duration_rejects_what_java_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        iso_duration(value)  # type: ignore[arg-type]


def test_convenience_caveats() -> None:
    before = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    caveats = request_caveats(
        ["path:/data"], activities="download,LIST", ip=["192.0.2.0/24", "10.0.0.1"], before=before, max_upload=10
    )
    assert caveats == [
        "path:/data",
        "activity:LIST,DOWNLOAD",
        "ip:192.0.2.0/24,10.0.0.1",
        "before:2030-01-02T03:04:05.678Z",
        "max-upload:10",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"activities": ["FLY"]}, {"activities": []}, {"ip": "not-an-ip"}, {"max_upload": 0}],
)
def test_bad_convenience_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        request_caveats(**kwargs)  # type: ignore[arg-type]


def test_explicit_caveat_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="Unknown caveat"):
        caveat_strings(["colour:blue"])
    with pytest.raises(ValueError, match="Missing"):
        caveat_strings("activity")


def test_builder_is_accepted_with_its_validity() -> None:
    builder = CaveatBuilder().activities("UPLOAD").validity(timedelta(minutes=30))
    assert caveat_strings(builder) == ["activity:UPLOAD"]
    assert builder_validity(builder) == "PT30M"
    assert builder_validity(["activity:UPLOAD"]) is None
