"""The shapes a function's inputs may be given in, reduced to paths and origins.

Upstream tasks hand over paths in several forms (a path, a file record of ``DCacheListOperator`` or
``select-files``, a list of either, ``{"files": [...]}``); one function turns them all into checked
dCache paths so the operator, the decorator and the chunked pipeline agree on what an input is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dcache.paths import clean_path


def input_paths(inputs: Any) -> list[str]:
    """Normalise ``inputs``: a path, a file record, a list of either, or ``{"files": [...]}`` (select-files)."""
    if isinstance(inputs, Mapping) and "files" in inputs:
        inputs = inputs["files"]
    elif isinstance(inputs, Mapping):  # one file record, e.g. one mapped element of a file list
        inputs = [inputs]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or isinstance(inputs, (bytes, bytearray)):
        raise ValueError(f"inputs: expected a dCache path or a list of paths/file records, got {type(inputs).__name__}")
    paths: list[str] = []
    for item in inputs:
        if isinstance(item, Mapping):
            item = item.get("path")
        paths.append(clean_path(item, field="inputs"))
    if len(set(paths)) != len(paths):
        raise ValueError("inputs: the same path is listed twice")
    return paths


def input_origins(origins: Any, count: int) -> list[dict[str, Any] | None]:
    """``origins`` aligned with the inputs: ``None``, one dict (one input), or a list of dicts/``None``."""
    if origins is None or origins == [] or origins == {}:
        return [None] * count
    if isinstance(origins, Mapping):
        origins = [origins]
    if not isinstance(origins, Sequence) or isinstance(origins, str) or len(origins) != count:
        raise ValueError(f"origins: expected one entry per input ({count}), got {origins!r:.200}")
    out: list[dict[str, Any] | None] = []
    for origin in origins:
        if origin is not None and not isinstance(origin, Mapping):
            raise ValueError(f"origins: expected objects like {{site, path, pnfsid, checksum}}, got {origin!r:.200}")
        out.append(dict(origin) if origin else None)
    return out
