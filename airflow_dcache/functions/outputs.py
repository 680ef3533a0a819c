"""A function's outputs: checked against what it declared, then moved out of its private area.

The function uploads into ``<output>/.tmp-<run>-<uuid>/`` with an UPLOAD-only credential; only after
dCache's own sizes and checksums agree with the function's declaration are the files moved into place
with the pipeline's credential, so nothing partial or undeclared is ever visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.models import NamespaceEntry

_MAX_DEPTH = 16


class OutputsRejected(Exception):
    """What the function uploaded does not count (missing, undeclared, size or checksum mismatch)."""


def stored_files(hook: DCacheHook, directory: str, prefix: str = "", depth: int = 0) -> dict[str, NamespaceEntry]:
    """Files under ``directory`` by relative name (bounded depth), with size and checksums."""
    found: dict[str, NamespaceEntry] = {}
    if depth > _MAX_DEPTH:
        return found
    for entry in hook.list_dir(directory, checksum=True):
        rel = f"{prefix}{entry.name}"
        if entry.is_dir:
            found.update(stored_files(hook, f"{directory}/{entry.name}", rel + "/", depth + 1))
        else:
            found[rel] = entry
    return found


def verify_outputs(hook: DCacheHook, tmp_dir: str, declared: Any) -> list[dict[str, Any]]:
    """``[{name, size, checksums}]`` as dCache stored them, when they match the declaration exactly."""
    stored = stored_files(hook, tmp_dir)
    if declared is None:
        declared = [{"name": n} for n in sorted(stored)]
    if not isinstance(declared, list) or not all(isinstance(d, Mapping) and isinstance(d.get("name"), str)
                                                 for d in declared):
        raise OutputsRejected("the result's 'outputs' is not a list of {name, size, checksums}")
    outputs = []
    for item in declared:
        name = item["name"].strip("/")
        entry = stored.pop(name, None)
        if entry is None:
            raise OutputsRejected(f"declared output {name} was not uploaded")
        size = item.get("size")
        if size is not None and size != entry.size:
            raise OutputsRejected(f"output {name}: size mismatch (function {size}, dCache {entry.size})")
        theirs = {k.lower(): str(v).lower() for k, v in (item.get("checksums") or {}).items()}
        ours = {k.lower(): str(v).lower() for k, v in (entry.checksums or {}).items()}
        for algorithm in sorted(theirs.keys() & ours.keys()):
            if theirs[algorithm] != ours[algorithm]:
                raise OutputsRejected(f"output {name}: {algorithm} checksum mismatch "
                                      f"(function {theirs[algorithm]}, dCache {ours[algorithm]})")
        outputs.append({"name": name, "size": entry.size, "checksums": ours})
    if stored:
        raise OutputsRejected(f"undeclared output(s) uploaded: {', '.join(sorted(stored))}")
    return outputs


def move_into_place(hook: DCacheHook, tmp_dir: str, final_dir: str, outputs: list[dict[str, Any]], *,
                    overwrite: bool) -> list[dict[str, Any]]:
    """MOVE each top-level entry of the private area into ``final_dir``; undo on a failed move."""
    tops = sorted({o["name"].split("/", 1)[0] for o in outputs})
    moved: list[str] = []
    try:
        for top in tops:
            hook.move(f"{tmp_dir}/{top}", f"{final_dir}/{top}", overwrite=overwrite)
            moved.append(top)
    except Exception as exc:
        for top in moved:
            hook.delete(f"{final_dir}/{top}", recursive=True, missing_ok=True)
        raise OutputsRejected(f"moving outputs into place failed: {exc}") from exc
    hook.delete(tmp_dir, recursive=True, missing_ok=True, directory=True)  # emptied by the moves
    return [{"path": f"{final_dir}/{o['name']}", "name": o["name"], "size": o["size"], "checksums": o["checksums"]}
            for o in outputs]
