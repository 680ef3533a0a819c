"""Input checks of the dCache view's endpoints: connection ids, paging, DAG ids, and safe echoes.

Every value a browser sends is checked before any hook or Airflow call, so a bad request is a 400
naming the field instead of a request to dCache with a value the user did not mean. Paths are checked
by the provider's one path module, :mod:`airflow_dcache.paths` (the same rules as every other entry
point), and confined by :mod:`.access`. Values echoed back in an error go through :func:`echo`
(bounded, control characters escaped); names shown to a person go through :func:`visible` (bidi and
invisible formatting characters made visible).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_PAGE = 500
MAX_ECHO = 80
_DAG_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
#: General categories shown escaped: controls, format characters (bidi overrides and isolates,
#: zero-width joiners, the BOM, ...), private use, unassigned, surrogates, line/paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})


class InvalidInput(ValueError):
    """A request value is unusable; ``field`` names it (the API answers 400 with both)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every character that changes or hides what is displayed written as ``\\uXXXX``.

    ``x\\u202egnp.h5`` (a right-to-left override) would otherwise read as ``x5h.png``. Spaces other
    than U+0020 (no-break, ideographic, ...) are escaped too: they look like a plain space.
    """
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        out.append(_escape(ch) if category in _HIDDEN or (category == "Zs" and ch != " ") else ch)
    return "".join(out)


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """A client's value as an error message may quote it: at most ``limit`` characters, quoted, with
    control and formatting characters escaped (never reflected), ``…`` when cut."""
    text = value if isinstance(value, str) else repr(value)
    cut = len(text) > limit
    shown = visible(text[:limit])
    return f"'{shown}…' ({len(text)} characters)" if cut else f"'{shown}'"


def clean_page(offset: int | None, limit: int | None) -> tuple[int, int]:
    """``offset`` ≥ 0 and 1 ≤ ``limit`` ≤ :data:`MAX_PAGE` (default 100)."""
    offset = 0 if offset is None else offset
    limit = 100 if limit is None else limit
    if offset < 0:
        raise InvalidInput("offset", f"must be ≥ 0, got {offset}")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}, got {limit}")
    return offset, limit


def clean_dag_id(value: str | None) -> str:
    if not isinstance(value, str) or not _DAG_ID.fullmatch(value):
        raise InvalidInput("dag_id", f"not a DAG id: {echo(value)}")
    return value


def clean_run_id(value: str | None) -> str:
    """A run id as Airflow makes them (``manual__2026-…+00:00``) or a person names them: printable, no ``/``."""
    if (not isinstance(value, str) or not 1 <= len(value) <= 250 or "/" in value or value != value.strip()
            or any(unicodedata.category(ch) in _HIDDEN for ch in value)):
        raise InvalidInput("run_id", f"not a run id: {echo(value)}")
    return value


def clean_conn_id(value: str | None, allowed: Sequence[str]) -> str:
    """A connection the view offers; anything else is refused (never a connection of another type)."""
    if not isinstance(value, str) or not _CONN_ID.fullmatch(value):
        raise InvalidInput("conn", f"not a connection id: {echo(value)}")
    if value not in allowed:
        raise InvalidInput("conn", f"{echo(value)} is not a dCache connection offered by this view")
    return value


def clean_event_kind(value: str) -> str:
    """One of the provider's event kinds (``created``, ``closed_after_write``, ...)."""
    from airflow_dcache.events.model import EventKind

    kinds = sorted(k.value for k in EventKind)
    if value not in kinds:
        raise InvalidInput("kind", f"not an event kind: {echo(value)} (one of {', '.join(kinds)})")
    return value
