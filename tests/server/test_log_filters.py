"""A request aiohttp cannot parse is logged as one WARNING line, not an ERROR traceback."""

from __future__ import annotations

import logging

from aiohttp import http_exceptions

from airflow_dcache.server.http.log_filters import ClientProtocolErrorFilter


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        import sys

        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                 ("127.0.0.1",), sys.exc_info())


def test_bad_method_becomes_one_warning_line():
    record = _record(http_exceptions.BadHttpMethod("FOO"))
    assert ClientProtocolErrorFilter().filter(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "BadHttpMethod" in record.getMessage()


def test_real_errors_keep_their_traceback():
    record = _record(RuntimeError("boom"))
    assert ClientProtocolErrorFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
