"""The one log-once helper: a cause at its level once, DEBUG after, again after ``forget``; memory bounded."""

from __future__ import annotations

import logging

import pytest

from airflow_dcache.utils.log_once import LogOnce


def test_once_then_debug_then_again_after_forget(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.log_once")
    once = LogOnce(logger)
    with caplog.at_level(logging.DEBUG, logger="test.log_once"):
        assert once("down: %s", "ConnectionError")
        assert not once("down: %s", "ConnectionError")
        once.forget()
        assert once("down: %s", "ConnectionError")
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG, logging.WARNING]


def test_memory_is_bounded() -> None:
    once = LogOnce(logging.getLogger("test.log_once"), memory=3)
    for i in range(10):
        once("offset %d", i)
    assert once("offset %d", 0)  # forgotten, so news again
