"""MkDocs hook: the one griffe warning the strict build tolerates, reported as INFO instead.

Operators and sensors document, in their class docstring, arguments their *base class* defines
(``deferrable``, ``poll_interval``, ``timeout``, ``dcache_conn_id``) and receive them through
``**kwargs``; griffe then finds no annotation to take the type from and warns "No matching parameter
for '<name>'". Every other warning still fails ``mkdocs build --strict``. The lasting fix is a
``:type <name>:`` line or the argument in the subclass's signature.
"""

from __future__ import annotations

import logging
from typing import Any

_TOLERATED = "No matching parameter for "
log = logging.getLogger("mkdocs.hooks.tolerated")


class _Tolerate(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno == logging.WARNING and _TOLERATED in message and "griffe" in message + record.name:
            log.info("tolerated: %s", message)
            return False
        return True


def on_pre_build(**_kwargs: Any) -> None:
    """Install the filter on the handlers of MkDocs' logger, where build() has put the strict counter."""
    for handler in logging.getLogger("mkdocs").handlers:
        if not any(isinstance(f, _Tolerate) for f in handler.filters):
            handler.addFilter(_Tolerate())
