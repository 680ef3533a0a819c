"""dCache paths as every entry point takes them: one check, one spelling, one notion of "inside".

A path reaches the provider from a DAG file, a trigger form, the REST API, a backfill's conf, the
dCache view or an event. If each entry point cleaned paths its own way, the same text could name two
files (one kept a trailing space, another stripped it) and an allowed-root check could be passed by a
spelling that another layer resolves differently. So all of them use :func:`clean_path` and
:func:`within`: a path means exactly the name typed (a trailing space is part of a dCache name, so it
is kept, never stripped), and anything ambiguous is refused rather than guessed: ``..`` segments,
control characters, relative paths, over-long values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["MAX_PATH_BYTES", "InvalidPath", "OutsideAllowedRoots", "clean_path", "clean_roots", "require_within",
           "within"]

MAX_PATH_BYTES = 4096  # dCache's (and the bundled service's) limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidPath(ValueError):
    """A path that is not one unambiguous absolute dCache path; ``field`` names where it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class OutsideAllowedRoots(PermissionError):
    """A path outside the trees this pipeline or view may act on (refused before any dCache call)."""

    def __init__(self, field: str, path: str, roots: Sequence[str]) -> None:
        shown = path if len(path) <= 200 else path[:200] + "…"
        super().__init__(f"{field}: {shown} is outside the allowed roots ({', '.join(roots)})")
        self.field = field
        self.path = path
        self.roots = tuple(roots)


def _quote(value: str, limit: int = 200) -> str:
    """``repr`` of at most ``limit`` characters: an error never echoes a 4 kB value back."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def clean_path(value: object, *, field: str = "path") -> str:
    """``value`` as a normalised absolute dCache path, or :class:`InvalidPath` naming ``field``.

    ``//`` and ``.`` segments collapse and a trailing ``/`` goes (dCache treats those spellings as one
    path); whitespace is kept (``"/d/x.h5 "`` is the file ``x.h5 ``, not ``x.h5``). Refused, because
    they would make the text mean something other than what was typed or checked: ``..`` segments,
    control characters, relative paths, more than 4096 bytes.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidPath(field, "an absolute dCache path is required")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(field, f"longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(value):
        raise InvalidPath(field, "control characters are not allowed")
    if not value.startswith("/"):
        raise InvalidPath(field, f"must be absolute (start with '/'), got {_quote(value)}")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPath(field, f"'..' is not allowed: {_quote(value)}")
    return "/" + "/".join(parts)


def clean_roots(values: Iterable[object] | str | None, *, field: str = "allowed_roots") -> tuple[str, ...]:
    """Allowed roots from a list or a comma-separated string; each a clean path; duplicates dropped."""
    if values is None:
        return ()
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    roots: list[str] = []
    for item in items:
        if item == "":
            continue
        root = clean_path(item, field=field)
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def within(path: str, roots: Sequence[str]) -> bool:
    """Whether the clean ``path`` is one of ``roots`` or below one (by whole components: ``/a`` ⊅ ``/ab``)."""
    return any(root == "/" or path == root or path.startswith(root + "/") for root in roots)


def require_within(value: object, roots: Sequence[str] | None, *, field: str = "path") -> str:
    """:func:`clean_path`, then refuse a path outside ``roots`` (``None`` or empty: no restriction)."""
    path = clean_path(value, field=field)
    if roots and not within(path, roots):
        raise OutsideAllowedRoots(field, path, roots)
    return path


def paths_from(value: object, *, field: str = "paths") -> list[str]:
    """Clean paths from what DAG authors pass or upstream tasks return, so operators chain without glue.

    Accepted: a path; a list of paths; file records (``{"path": …}``, the list operator's items); and the
    results of the provider's operators: ``{"destinations": [...]}`` (replicate: the copies),
    ``{"paths": [...]}`` (QoS, pin, stage). Mapped tasks can therefore ``.expand(path=upstream.output)``.
    Each path is checked by :func:`clean_path`; an empty result is an error naming ``field``.
    """
    if value is None:
        raise InvalidPath(field, "no path given")
    items: Iterable[object] = [value] if isinstance(value, (str, dict)) else value  # type: ignore[assignment]
    if not isinstance(items, Iterable):
        raise InvalidPath(field, f"expected a path or a list of paths, got {type(value).__name__}")
    result: list[str] = []
    for item in items:
        if isinstance(item, dict) and "path" not in item:
            nested = item.get("destinations", item.get("paths"))
            if isinstance(nested, list):
                result.extend(paths_from(nested, field=field) if nested else [])
                continue
        result.append(clean_path(item.get("path") if isinstance(item, dict) else item, field=field))
    if not result:
        raise InvalidPath(field, "the list of paths is empty")
    return result


def is_template(value: object) -> bool:
    """A value still holding Jinja: checked once rendered, on the worker."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_at_parse(value: object, *, field: str = "path") -> None:
    """The parse-time check of an operator argument: plain paths (or lists of them) now, while templates,
    XComArgs and upstream results are checked after rendering by :func:`paths_from`."""
    if isinstance(value, str) and not is_template(value):
        clean_path(value, field=field)
    elif isinstance(value, (list, tuple)) and not any(is_template(v) for v in value):
        paths_from(list(value), field=field)
