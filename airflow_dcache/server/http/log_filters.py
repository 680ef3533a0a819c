"""Keep the server log readable under hostile input.

aiohttp logs every request it cannot even parse (a bad method, a malformed request line or header)
at ERROR with a full traceback, although the client got a plain 400 and nothing in the service was
involved. A fuzzer or a port scanner then fills the log with tracebacks that look like crashes.
This filter turns those records into one WARNING line; real errors keep their tracebacks.
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions


class ClientProtocolErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            record.msg = "refused an unparsable request (%s): %s"
            record.args = (type(exc).__name__, " ".join(str(exc.message).split())[:200])
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    logging.getLogger("aiohttp.server").addFilter(ClientProtocolErrorFilter())
