"""The activation record: what ran, on what, with which result (``airflow-dcache/activation/v1``).

Pushed to XCom and written next to the outputs (``.activation-<run_id>.json``; on failure
``.activation-<run_id>.failed.json``). It is built only from values that are safe to publish:
environment *keys*, input paths without their URLs, and a log tail with every credential of the run
replaced by ``***``. ``warm``/``warm_instance`` say whether a warm instance ran it, which one, and
what that instance's cold start cost (see :mod:`airflow_dcache.functions.warm`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dcache.functions.runtime import FunctionIdentity, RunResult, env_secrets, log_text, redact

SCHEMA = "airflow-dcache/activation/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def record_name(run_id: str, map_index: int | None = None, *, failed: bool = False) -> str:
    """``.activation-<run_id>[-<map_index>][.failed].json`` with the run id made file-name safe."""
    safe = _UNSAFE.sub("_", run_id).strip("_") or "run"
    if map_index is not None and map_index >= 0:
        safe += f"-{map_index}"
    return f".activation-{safe}{'.failed' if failed else ''}.json"


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret replaced by ``***`` in all strings, recursively."""
    if isinstance(value, str):
        return redact(value, list(secrets))
    if isinstance(value, Mapping):
        return {str(k): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def build_record(
    *,
    identity: FunctionIdentity,
    parameters: Mapping[str, Any],
    env: Mapping[str, str],
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    result: RunResult | None,
    status: str,
    error: str | None,
    secrets: Sequence[str],
    dag_id: str | None = None,
    task_id: str | None = None,
    run_id: str | None = None,
    map_index: int | None = None,
    output_dir: str | None = None,
) -> dict[str, Any]:
    """Assemble the record; ``secrets`` (macaroons, env values) are masked wherever they appear."""
    masked = [*secrets, *env_secrets(env)]
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "status": status,
        "error": error,
        "function": identity.to_dict(),
        "parameters": dict(parameters),
        "env_keys": sorted(env),
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "output_dir": output_dir,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": map_index,
    }
    if result is not None:
        record.update(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            killed=result.killed,
            start=result.started.isoformat(timespec="milliseconds"),
            end=result.ended.isoformat(timespec="milliseconds"),
            duration=round(result.duration, 3),
            logs=log_text(result, masked),
        )
        warm = result.warm or {}
        # how it ran: a warm instance (which one, and what its cold start cost) or a start of its own
        record.update(warm="id" in warm, warm_instance=dict(warm) if "id" in warm else None)
        if warm.get("fallback"):
            record["warm_fallback"] = warm["fallback"]
    else:
        record.update(exit_code=None, timed_out=False, killed=False, start=None, end=None, duration=None, logs="",
                      warm=False, warm_instance=None)
    scrubbed: dict[str, Any] = scrub(record, masked)
    return scrubbed
