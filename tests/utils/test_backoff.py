"""The one backoff: capped doubling, deadlines, jitter within ±20 %, reset, errors naming the argument."""

from __future__ import annotations

import time

import pytest

from airflow_dcache.utils.backoff import Backoff
from airflow_dcache.waits import poll_backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(1, 5)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next() == 1


def test_never_waits_past_the_deadline() -> None:
    assert Backoff(10, 60).next(deadline=time.time() + 0.5) <= 0.5
    assert Backoff(10, 60, jitter=True).next(deadline=time.time() - 1) == 0.0


def test_jitter_stays_within_a_fifth() -> None:
    for _ in range(200):
        assert 0.8 * 4 <= Backoff(4, 4, jitter=True).next() <= 1.2 * 4


@pytest.mark.parametrize(("initial", "cap", "field"), [(1, -1, "max_poll_interval"), (0, 5, "poll_interval"),
                                                        (True, 5, "poll_interval"), ("5", 5, "poll_interval")])
def test_poll_intervals_are_validated_by_name(initial: object, cap: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        poll_backoff(initial, cap)
