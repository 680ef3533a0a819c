"""The one JSON reader for request bodies: every endpoint's JSON goes through :func:`parse_json`.

``json.loads`` alone turns hostile input into 500s: nesting thousands deep raises RecursionError,
``1e400`` becomes ``inf`` and ``NaN``/``Infinity`` are accepted, so later arithmetic overflows, and
an integer of 5,000 digits raises ValueError. Here each of these is a :class:`BadRequest` naming the
problem, and the nesting depth is bounded well below the interpreter's limit so code that walks the
document recursively afterwards is safe too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from airflow_dcache.server.services.errors import BadRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DEPTH = 64  # dCache's requests nest 3 or 4 levels; Jackson's own default limit is 1000


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"Number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


def _depth_ok(doc: Any) -> bool:
    """Iterative walk (no recursion): False if any value is nested deeper than MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_json(raw: bytes | str, *, prefix: str = "Request body is not valid JSON") -> Any:
    """Decode a request body; any malformed, too deep or out-of-range input is a BadRequest."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"{prefix}: nested deeper than {MAX_DEPTH} levels") from None
    except BadRequest as err:
        raise BadRequest(f"{prefix}: {err.message}") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise BadRequest(f"{prefix}: {str(err)[:200]}") from None
    if not _depth_ok(doc):
        raise BadRequest(f"{prefix}: nested deeper than {MAX_DEPTH} levels")
    if _has_lone_surrogate(doc):
        raise BadRequest(f"{prefix}: a string holds an unpaired surrogate escape (\\uD800-\\uDFFF)")
    return doc


def _has_lone_surrogate(doc: Any) -> bool:
    """True if a key or string holds an unpaired ``\\uD8xx``-style escape.

    ``json.loads`` lets one through as a lone surrogate, which no UTF-8 sink (SQLite, a header, a
    file name) can encode: every endpoint that stored such a string answered 500.
    """
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False
