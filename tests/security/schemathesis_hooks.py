"""Schemathesis hooks for tests/security/test_schemathesis.py, loaded by the CLI via ``SCHEMATHESIS_HOOKS``.

* ``content_type_with_body``: Swagger 2.0 has one ``produces`` list per operation, so schemathesis'
  own content-type check also fails the empty 201/204 answers that carry no Content-Type (as
  dCache's Jersey sends them). This check applies the rule where it means something: a response
  with a body must declare one of the operation's media types.
* Path parameters are mixed with identifiers of objects that exist (``DCACHE_ST_KNOWN``, a JSON file
  of parameter name to values written by the test): random strings alone only ever reach 404s.
* No request may ask for the SSE stream of a channel: it never ends, so it would only burn the
  request timeout.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

KNOWN_ENV = "DCACHE_ST_KNOWN"


def _known() -> dict[str, list[str]]:
    path = os.environ.get(KNOWN_ENV)
    if not path:
        return {}
    with open(path) as f:
        return {str(k): [str(v) for v in values] for k, values in json.load(f).items() if values}


KNOWN = _known()


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


@schemathesis.check
def content_type_with_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """A response with a body carries a Content-Type the operation produces."""
    if not response.content:
        return None
    raw = case.operation.definition.raw
    produces = raw.get("produces") or case.operation.schema.raw_schema.get("produces") or []
    received = response.headers.get("content-type") or response.headers.get("Content-Type")
    if isinstance(received, list):
        received = received[0] if received else None
    if not received:
        raise AssertionError(f"{response.status_code} with a {len(response.content)}-byte body and no Content-Type")
    if _media(received) not in {_media(p) for p in produces}:
        raise AssertionError(f"Content-Type {received!r} is not one of {produces}")
    return None


def _one(name: str, value: Any) -> st.SearchStrategy[Any]:
    """Two times in three an existing object's name or id, else the generated value."""
    if name not in KNOWN:
        return st.just(value)
    known = st.sampled_from(KNOWN[name])
    return st.integers(0, 2).flatmap(lambda i: st.just(value) if i == 0 else known)


def _mixed(params: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _one(name, value) for name, value in params.items()})


@schemathesis.hook
def before_generate_path_parameters(context: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
    if not KNOWN:
        return strategy
    return strategy.flatmap(lambda params: _mixed(params) if isinstance(params, dict) else st.just(params))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = kwargs.get("headers")
    if headers:
        for name in list(headers):
            if name.lower() == "accept" and "event-stream" in str(headers[name]).lower():
                headers[name] = "application/json"
