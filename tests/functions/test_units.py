"""Pure parts of the function runner: task document redaction, result parsing, log tails, digests, names."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_dcache.functions.local import LocalRuntime
from airflow_dcache.functions.record import build_record, record_name
from airflow_dcache.functions.registry import check_name, find_function, tree_digest
from airflow_dcache.functions.runtime import FunctionIdentity, RunResult, log_text, parse_result
from airflow_dcache.functions.taskdoc import SCHEMA, TaskDocument, TaskInput, TaskOutput
from tests.functions.support import *  # noqa: F403 - fixtures
from tests.functions.support import FIXTURE_FUNCTIONS

MAC_IN, MAC_OUT = "MDAxY2xvY2F0aW9uIGlucHV0", "MDAxY2xvY2F0aW9uIG91dHB1dA"


def document() -> TaskDocument:
    return TaskDocument(
        function="f", inputs=[TaskInput("/d/a", f"http://door/d/a?authz={MAC_IN}", {"adler32": "01"}, 3)],
        output=TaskOutput("/d/out/.tmp-x", "http://door/d/out/.tmp-x", f"Bearer {MAC_OUT}"),
        parameters={"k": 1}, deadline=1.0,
    )


def test_task_document_shape_and_redaction() -> None:
    doc = json.loads(document().to_json())
    assert doc["schema"] == SCHEMA and doc["inputs"][0]["size"] == 3 and doc["output"]["authorization"]
    assert set(document().secrets()) == {MAC_IN, MAC_OUT}
    redacted = json.dumps(document().redacted())
    assert MAC_IN not in redacted and MAC_OUT not in redacted


@pytest.mark.parametrize(("stdout", "value", "reason"), [
    (b'log\n{"a": 1}\n\n', {"a": 1}, None),
    (b"", None, "no result line"),
    (b"[1, 2]\n", None, "not a JSON object"),
    (b"done\n", None, "not JSON"),
    (b"{" + b'"a":"' + b"x" * (1024 * 1024) + b'"}\n', None, "limit"),
])
def test_parse_result(stdout: bytes, value: object, reason: str | None) -> None:
    got, why = parse_result(stdout)
    assert got == value
    assert (why is None) if reason is None else (reason in str(why))


def result(stdout: bytes, stderr: bytes) -> RunResult:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return RunResult(0, stdout, stderr, t, t)


def test_log_tail_is_bounded_masked_and_drops_the_result_line() -> None:
    text = log_text(result(b'chatter\n{"ok": true}\n', b"x" * 10000 + f" token {MAC_IN}\n".encode()), [MAC_IN])
    assert len(text.encode()) <= 4096 and MAC_IN not in text and "token ***" in text
    assert text.endswith("chatter") and '"ok"' not in text


def test_record_masks_env_values_and_keeps_keys() -> None:
    identity = FunctionIdentity("local", "f", "sha256:00")
    record = build_record(identity=identity, parameters={"p": "hunter2-secret"}, env={"TOKEN": "hunter2-secret"},
                          inputs=[], outputs=[], result=result(b"{}", b"hunter2-secret leaked"), status="success",
                          error=None, secrets=[])
    dumped = json.dumps(record)
    assert "hunter2-secret" not in dumped and record["env_keys"] == ["TOKEN"]


def test_record_names_are_file_name_safe() -> None:
    assert record_name("manual__2026-01-01T00:00:00+00:00") == ".activation-manual__2026-01-01T00_00_00_00_00.json"
    assert record_name("r/../x", 3, failed=True) == ".activation-r_.._x-3.failed.json"


def test_digest_is_stable_and_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"junk")
    first = tree_digest(tmp_path)
    assert first == tree_digest(tmp_path) and first.startswith("sha256:")
    (tmp_path / "main.py").write_text("print(2)\n")
    assert tree_digest(tmp_path) != first
    source = find_function("misbehave", FIXTURE_FUNCTIONS)
    assert source.image_tag == f"airflow-dcache/misbehave:{source.digest[7:19]}"


@pytest.mark.parametrize("name", ["", "UPPER", "a b", "../x", "-lead"])
def test_bad_function_names(name: str) -> None:
    with pytest.raises(ValueError, match="function"):
        check_name(name)


def test_local_stop_before_start_kills_at_once() -> None:
    runtime = LocalRuntime("misbehave", FIXTURE_FUNCTIONS, python=sys.executable)
    runtime.stop()
    doc = json.dumps({"schema": SCHEMA, "parameters": {"mode": "sleep", "seconds": 60}}).encode()
    outcome = runtime.run(doc, env={}, timeout=120)
    assert outcome.killed and outcome.exit_code != 0 and outcome.duration < 60


def test_choose_runtime(docker_url: str) -> None:
    from airflow_dcache.functions import choose_runtime

    assert choose_runtime(docker_url="unix:///nonexistent/docker.sock") == "local"
    assert choose_runtime("no-such-image-anywhere", docker_url=docker_url) == "local"
    assert choose_runtime(docker_url=docker_url) == "docker"
