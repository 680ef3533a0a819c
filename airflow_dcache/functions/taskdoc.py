"""The task document a function receives (``airflow-dcache/function-task/v1``).

It is the shape the seed's dynamic agent sent to OpenWhisk: everything the function may touch, as
pre-authorised URLs, and nothing else::

    {"schema": "airflow-dcache/function-task/v1",
     "function": "hdf5-preview",
     "inputs": [{"path": "/data/run1.cxi", "url": "https://door/data/run1.cxi?authz=<macaroon>",
                 "checksums": {"adler32": "0a1b2c3d"}, "size": 1048576,
                 "frontend_url": "https://frontend/api/v1/namespace/data/run1.cxi"}],
     "output": {"path": "/data/out/.tmp-<run>-<uuid>", "url_prefix": "https://door/data/out/.tmp-…",
                "authorization": "Bearer <macaroon>"},
     "parameters": {"frame": 3},
     "deadline": 1767312000.0}

``deadline`` is epoch seconds. The document carries secrets (the macaroons): it goes to the function
on stdin only, and :meth:`TaskDocument.redacted` is what may be logged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "airflow-dcache/function-task/v1"


@dataclass(frozen=True)
class TaskInput:
    """One input: a dCache path and its pre-authorised URL (``?authz=`` or an Authorization value)."""

    path: str
    url: str
    checksums: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    authorization: str | None = None
    frontend_url: str | None = None
    pnfsid: str | None = None
    #: The file version this input is a copy of (``{site, path, pnfsid, checksum}``), e.g. for a buffer
    #: replica; outputs name it so that each result says which upload it derives from.
    origin: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskOutput:
    """The private output area: URL prefix plus the Authorization header value for UPLOAD there."""

    path: str
    url_prefix: str
    authorization: str | None = None


@dataclass(frozen=True)
class TaskDocument:
    function: str
    inputs: list[TaskInput]
    output: TaskOutput | None
    parameters: dict[str, Any]
    deadline: float

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema": SCHEMA, "function": self.function,
                               "inputs": [_compact(asdict(i)) for i in self.inputs],
                               "output": _compact(asdict(self.output)) if self.output else None,
                               "parameters": self.parameters, "deadline": self.deadline}
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    def secrets(self) -> list[str]:
        """Every credential in the document: macaroons in URLs and Authorization values."""
        found: list[str] = []
        for value in [i.url for i in self.inputs] + [i.authorization for i in self.inputs] + (
            [self.output.url_prefix, self.output.authorization] if self.output else []
        ):
            found.extend(_credentials_in(value))
        return sorted(set(found), key=len, reverse=True)

    def redacted(self) -> dict[str, Any]:
        """The document without credentials (URLs without their query, no Authorization values)."""
        doc = self.to_dict()
        for item in doc["inputs"]:
            item["url"] = item["url"].split("?", 1)[0]
            item.pop("authorization", None)
        if doc["output"]:
            doc["output"].pop("authorization", None)
        return doc


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _credentials_in(value: str | None) -> list[str]:
    if not value:
        return []
    out = []
    if value.lower().startswith("bearer "):
        out.append(value[7:].strip())
    if "authz=" in value:
        from urllib.parse import parse_qs, urlsplit

        out.extend(parse_qs(urlsplit(value).query).get("authz", []))
    return [s for s in out if s]
