"""Input checks of the dCache view's endpoints: paths, connection ids, paging, DAG ids.

Every value a browser sends is checked here before any hook or Airflow call, so a bad request is a
400 naming the field instead of a request to dCache with a path the user did not mean. dCache itself
still enforces what the connection's identity may see; these checks only keep requests well-formed
and inside the prefixes the site configured (``[dcache] ui_path_prefixes``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

MAX_PATH = 4096
MAX_PAGE = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DAG_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")


class InvalidInput(ValueError):
    """A request value is unusable; ``field`` names it (the API answers 400 with both)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def clean_path(value: str | None, *, field: str = "path", prefixes: Sequence[str] = ("/",)) -> str:
    """An absolute, normalised dCache path inside one of ``prefixes``.

    ``//`` and ``.`` collapse, a trailing ``/`` goes; ``..`` segments, control characters, relative
    paths and over-long values are refused rather than resolved, so a path never means something
    different from what was typed.

    :param value: the path as sent.
    :param field: the request field, for the error.
    :param prefixes: allowed subtrees (normalised absolute paths).
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "an absolute dCache path is required")
    if len(value) > MAX_PATH:
        raise InvalidInput(field, f"longer than {MAX_PATH} characters")
    if _CONTROL.search(value):
        raise InvalidInput(field, "control characters are not allowed")
    if not value.startswith("/"):
        raise InvalidInput(field, f"must be absolute (start with '/'), got {value!r}")
    if ".." in value.split("/"):
        raise InvalidInput(field, "'..' is not allowed")
    path = posixpath.normpath(value)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if not any(path == p or p == "/" or path.startswith(p.rstrip("/") + "/") for p in prefixes):
        raise InvalidInput(field, f"{path} is outside the browsable areas ({', '.join(prefixes)})")
    return path


def clean_prefixes(raw: str | None) -> tuple[str, ...]:
    """``[dcache] ui_path_prefixes`` (comma-separated absolute paths; empty: everything)."""
    items = [p.strip() for p in (raw or "").split(",") if p.strip()]
    return tuple(clean_path(p, field="ui_path_prefixes") for p in items) or ("/",)


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
        raise InvalidInput("dag_id", f"not a DAG id: {value!r}")
    return value


def clean_conn_id(value: str | None, allowed: Sequence[str]) -> str:
    """A connection the view offers; anything else is refused (never a connection of another type)."""
    if not isinstance(value, str) or not _CONN_ID.fullmatch(value):
        raise InvalidInput("conn", f"not a connection id: {value!r}")
    if value not in allowed:
        raise InvalidInput("conn", f"{value!r} is not a dCache connection offered by this view")
    return value
