"""select-files: the file-list service as a function.

Lists a directory input (a LIST macaroon on it; the operator passes ``input_activities=["LIST"]``)
through the frontend namespace API and returns the files matching the criteria, in the schema of
``airflow_dcache.selection`` / ``DCacheListOperator`` (``airflow-dcache/file-list/v1``)::

    {"path", "name", "pnfsid", "size", "mtime" (ISO-8601 UTC, ms), "checksums" {alg: hex}, "locality"}

Parameters (all optional): ``name_glob``, ``path_glob``, ``path_regex``, ``min_size``, ``max_size``,
``mtime_after``, ``mtime_before`` (ISO-8601 or epoch seconds; after inclusive, before exclusive),
``locality`` (ONLINE, NEARLINE, ONLINE_AND_NEARLINE), ``labels`` (all required), ``recursive``
(default false), ``max_files`` (100000), ``max_dirs`` (10000), ``write_list`` (default true: also
upload ``file-list.json``). Stdlib only, so the image needs nothing but python3.
"""

from __future__ import annotations

import fnmatch
import json
import re
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import dcache_fn

SCHEMA = "airflow-dcache/file-list/v1"
_ALGORITHMS = {"adler32": "adler32", "md5": "md5", "md5_type": "md5", "sha1": "sha-1", "sha-1": "sha-1",
               "sha256": "sha-256", "sha-256": "sha-256", "sha512": "sha-512", "sha-512": "sha-512"}


def _time(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise dcache_fn.FunctionError(f"parameters.{name}: {value!r} is not an ISO-8601 time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise dcache_fn.FunctionError(f"parameters.{name}: expected ISO-8601 or epoch seconds, got {value!r}")


def _iso_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _checksums(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        kind, value = str(item.get("type", "")).lower(), item.get("value")
        if kind and value:
            out[_ALGORITHMS.get(kind, kind)] = str(value).lower()
    return dict(sorted(out.items()))


class Criteria:
    def __init__(self, p: dict[str, Any]) -> None:
        self.name_glob = p.get("name_glob")
        self.path_glob = p.get("path_glob")
        try:
            self.regex = re.compile(p["path_regex"]) if p.get("path_regex") else None
        except re.error as exc:
            raise dcache_fn.FunctionError(f"parameters.path_regex: {exc}") from None
        for name in ("min_size", "max_size"):
            value = p.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise dcache_fn.FunctionError(f"parameters.{name}: expected a non-negative integer, got {value!r}")
        self.min_size, self.max_size = p.get("min_size"), p.get("max_size")
        self.after = _time(p.get("mtime_after"), "mtime_after")
        self.before = _time(p.get("mtime_before"), "mtime_before")
        locality = p.get("locality") or []
        parts: set[str] = set()
        for item in [locality] if isinstance(locality, str) else locality:
            for part in str(item).strip().upper().split("_AND_"):
                if part not in ("ONLINE", "NEARLINE"):
                    raise dcache_fn.FunctionError(f"parameters.locality: {item!r} is not a locality")
                parts.add(part)
        self.locality = parts
        labels = p.get("labels") or []
        self.labels = {labels} if isinstance(labels, str) else set(labels)

    def matches(self, path: str, e: dict[str, Any]) -> bool:
        name = e.get("fileName", "")
        size, mtime = e.get("size"), e.get("mtime")
        if self.name_glob and not fnmatch.fnmatchcase(name, self.name_glob):
            return False
        if self.path_glob and not fnmatch.fnmatchcase(path, self.path_glob):
            return False
        if self.regex is not None and not self.regex.search(path):
            return False
        if self.min_size is not None and (size is None or size < self.min_size):
            return False
        if self.max_size is not None and (size is None or size > self.max_size):
            return False
        if self.after or self.before:
            if mtime is None:
                return False
            moment = datetime.fromtimestamp(mtime / 1000, tz=UTC)
            if (self.after and moment < self.after) or (self.before and moment >= self.before):
                return False
        if self.locality:
            actual = set(str(e.get("fileLocality") or "").upper().split("_AND_"))
            if not self.locality <= actual:
                return False
        return not self.labels or self.labels <= set(e.get("labels") or ())


def run(task: dcache_fn.Task) -> dict[str, Any]:
    if len(task.inputs) != 1:
        raise dcache_fn.FunctionError("inputs: select-files takes exactly one directory")
    root = task.inputs[0]
    p = task.parameters
    criteria = Criteria(p)
    recursive = bool(p.get("recursive", False))
    max_files, max_dirs = int(p.get("max_files", 100_000)), int(p.get("max_dirs", 10_000))
    queue: list[tuple[str, str]] = [(root.path.rstrip("/") or "/", "")]
    files: list[dict[str, Any]] = []
    listed = 0
    while queue:
        directory, rel = queue.pop(0)
        listed += 1
        if listed > max_dirs:
            raise dcache_fn.FunctionError(f"max_dirs: more than {max_dirs} directories below {root.path}")
        sub = sub_input(root, rel) if rel else root
        for e in sorted(task.list_directory(sub), key=lambda c: c.get("fileName", "")):
            name = e.get("fileName")
            if not name:
                continue
            path = f"{directory}/{name}" if directory != "/" else f"/{name}"
            if e.get("fileType") == "DIR":
                if recursive:
                    queue.append((path, f"{rel}/{name}" if rel else name))
                continue
            if e.get("fileType") != "REGULAR" or not criteria.matches(path, e):
                continue
            files.append({"path": path, "name": name, "pnfsid": e.get("pnfsId"), "size": e.get("size"),
                          "mtime": _iso_ms(e.get("mtime")), "checksums": _checksums(e.get("checksums")),
                          "locality": e.get("fileLocality")})
            if len(files) > max_files:
                raise dcache_fn.FunctionError(f"max_files: more than {max_files} files match below {root.path}")
    files.sort(key=lambda r: r["path"])
    result = {"schema": SCHEMA, "root": root.path, "count": len(files), "files": files}
    if p.get("write_list", True) and task.output is not None:
        listing = task.workdir / "file-list.json"
        listing.write_text(json.dumps(result, indent=2))
        task.upload(listing)
    return result


def sub_input(root: dcache_fn.Input, rel: str) -> dcache_fn.Input:
    """An input for a subdirectory: the same credential (its path caveat covers what is below)."""
    quoted = "/".join(urllib.parse.quote(part) for part in rel.split("/"))
    return dcache_fn.Input({"path": root.path.rstrip("/") + "/" + rel, "url": root.url,
                            "authorization": root.authorization,
                            "frontend_url": (root.frontend_url or "").split("?", 1)[0].rstrip("/") + "/" + quoted})


if __name__ == "__main__":
    dcache_fn.main(run)
