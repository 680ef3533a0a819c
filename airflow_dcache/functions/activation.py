"""One activation: a function run on dCache inputs, from credentials to the activation record.

This is the orchestration the function operator (and any caller that runs functions, such as a chunk of
a pipeline) delegates to, so the rules live in one place:

1. *start*: stat each input (or check its expected version), mint one narrow credential per input and
   one UPLOAD-only credential for a private area ``<output>/.tmp-<run>-<uuid>/``, write the task
   document;
2. *run*: the runtime (local subprocess or container) reads the document on stdin;
3. *accept*: judge the exit and the result line, verify what was uploaded against what the function
   declared, move it into place with the pipeline's own credential and write the activation record
   ``<output>/.activation-<run>.json``;
4. on any failure the private area is deleted, so nothing partial is ever visible, and a failed
   function still leaves a ``….failed.json`` record.

The function never sees the pipeline's credential; secrets are scrubbed from the returned value and the
record.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dcache.events.version import FileVersion, require_version
from airflow_dcache.functions.credentials import CredentialError, Grant, credential_source, ip_restriction
from airflow_dcache.functions.outputs import OutputsRejected, move_into_place, verify_outputs
from airflow_dcache.functions.record import build_record, record_name, scrub
from airflow_dcache.functions.runtime import (
    FunctionIdentity,
    FunctionRunError,
    FunctionRuntime,
    RunResult,
    env_secrets,
)
from airflow_dcache.functions.runtime import parse_result as parse_function_result
from airflow_dcache.functions.taskdoc import TaskDocument, TaskInput, TaskOutput
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.urls import door_url, namespace_url, normalize_path

XCOM_RECORD = "activation_record"
XCOM_OUTPUT_URL = "output_url"
XCOM_DIGEST = "function_digest"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LOG_LINES_IN_ERROR = 20

Publish = Callable[[str, Any], None]
"""``(key, value)``: where an activation reports its digest, output URL and record (XCom, for a task)."""


class ActivationError(Exception):
    """The function could not be started (unknown function or image, no credential)."""


class FunctionFailed(Exception):
    """The function ran and its run does not count; the message ends with the last log lines.

    :param record: the failed activation record (also written next to the outputs, where possible).
    """

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class RunIds:
    """Which Airflow task instance an activation belongs to; names the record file."""

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id, "map_index": self.map_index}


@dataclass(frozen=True)
class ActivationOptions:
    """How inputs are granted and outputs accepted (the operator's arguments of the same names)."""

    input_activities: Sequence[str] = ("DOWNLOAD",)
    timeout: float = 300.0
    macaroon_margin: float = 120.0
    versioned: bool = False
    overwrite: bool = True
    ip_caveat: str | Sequence[str] | None = "auto"
    credentials: str | None = None
    token_prefix: str | None = None


class _Rejected(Exception):
    """The run does not count, for the reason given (exit code, timeout, result, outputs)."""


class Activation:
    """Runs ``function`` once through ``runtime`` with ``hook``'s connection; see the module docstring."""

    def __init__(self, hook: DCacheHook, runtime: FunctionRuntime, function: str, options: ActivationOptions,
                 *, log: Any = None, publish: Publish | None = None,
                 connection_extras: Mapping[str, Any] | None = None) -> None:
        """:param connection_extras: the connection's extras when the caller has read them already (a
        chunk reads them once for all its files); else they are read from ``hook``'s connection."""
        self.hook = hook
        self.runtime = runtime
        self.function = function
        self.options = options
        self.log = log or logging.getLogger(__name__)  # the task's logger, when a task runs it
        self.publish: Publish = publish or (lambda _key, _value: None)
        self.connection_extras = connection_extras

    def identify(self) -> FunctionIdentity:
        """What will run (runtime, image, source digest); fails before anything is touched in dCache."""
        try:
            return self.runtime.identify()
        except (FunctionRunError, ValueError) as exc:
            raise ActivationError(f"function {self.function}: {exc}") from exc

    def output_dir(self, output_dir: str, identity: FunctionIdentity) -> str:
        """``output_dir``, under ``<digest[:12]>/`` when versioned (new code never overwrites old results)."""
        final_dir = normalize_path(output_dir)
        if self.options.versioned:
            final_dir = f"{final_dir}/{identity.digest.split(':', 1)[-1][:12]}"
        return final_dir

    def run(self, paths: Sequence[str], *, output_dir: str, origins: Sequence[dict[str, Any] | None] | None = None,
            versions: Mapping[str, FileVersion] | None = None, parameters: Mapping[str, Any] | None = None,
            env: Mapping[str, str] | None = None, ids: RunIds | None = None) -> dict[str, Any]:
        """Run on ``paths``; the function's result with ``outputs`` as final dCache paths, sizes, checksums.

        :raises ActivationError: it could not start. :raises FunctionFailed: it ran and failed.
        """
        ids = ids or RunIds()
        parameters = dict(parameters or {})
        env = dict(env or {})
        versions = versions or {}
        origins = list(origins) if origins is not None else [None] * len(paths)
        identity = self.identify()
        final_dir = self.output_dir(output_dir, identity)
        hook = self.hook
        self.publish(XCOM_DIGEST, identity.digest)

        opts = self.options
        validity = int(opts.timeout + opts.macaroon_margin + 0.999)
        ip = ip_restriction(opts.ip_caveat, self.runtime.client_ip, hook.settings.door_url)
        hook.mkdir(final_dir)
        run_id = str(ids.run_id or "manual")
        tmp_dir = f"{final_dir}/.tmp-{_UNSAFE.sub('_', run_id)[:80]}-{uuid.uuid4().hex[:12]}"
        hook.mkdir(tmp_dir)
        secrets: list[str] = []
        inputs_record: list[dict[str, Any]] = []
        result: RunResult | None = None
        value: dict[str, Any] | None = None
        try:
            grant = self._credentials()
            task_inputs = []
            for path, origin in zip(paths, origins, strict=True):
                entry = (require_version(hook, path, versions[path], step=f"function {self.function}")
                         if path in versions else hook.stat(path, checksum=True))
                given = grant(path, opts.input_activities, validity, ip)
                secrets.append(given.secret)
                task_inputs.append(TaskInput(
                    path=path, url=given.url, authorization=given.authorization,
                    checksums=dict(entry.checksums or {}), size=entry.size if entry.is_file else None,
                    frontend_url=namespace_url(hook.settings, path) if "LIST" in opts.input_activities else None,
                    pnfsid=entry.pnfsid, origin=origin,
                ))
                inputs_record.append({"path": path, "pnfsid": entry.pnfsid,
                                      "size": entry.size if entry.is_file else None,
                                      "checksums": dict(entry.checksums or {}),
                                      **({"origin": origin} if origin else {})})
            upload = grant(tmp_dir, ["UPLOAD"], validity, ip)
            secrets.append(upload.secret)
            document = TaskDocument(
                function=self.function, inputs=task_inputs,
                output=TaskOutput(path=tmp_dir, url_prefix=upload.target, authorization=f"Bearer {upload.secret}"),
                parameters=parameters, deadline=round(time.time() + opts.timeout, 3),
            )
            self.publish(XCOM_OUTPUT_URL, door_url(hook.settings, final_dir))
            self.log.info("running %s (%s runtime, digest %s) on %d input(s); outputs to %s",
                          self.function, identity.runtime, identity.digest[:19], len(paths), final_dir)
            result = self.runtime.run(document.to_json(), env=env, timeout=opts.timeout)
            value = _judge(result)
            try:
                outputs = verify_outputs(hook, tmp_dir, value.get("outputs"))
                final_outputs = move_into_place(hook, tmp_dir, final_dir, outputs, overwrite=opts.overwrite)
            except OutputsRejected as exc:
                raise _Rejected(str(exc)) from exc
        except BaseException as exc:
            self._discard(tmp_dir)
            if isinstance(exc, (_Rejected, FunctionRunError)):
                self._fail(identity, parameters, env, inputs_record, result, str(exc), secrets, final_dir, ids)
            raise
        record = build_record(identity=identity, parameters=parameters, env=env, inputs=inputs_record,
                              outputs=final_outputs, result=result, status="success", error=None, secrets=secrets,
                              **ids.as_dict(), output_dir=final_dir)
        record_path = f"{final_dir}/{record_name(run_id, ids.map_index)}"
        stored = hook.upload(io.BytesIO(json.dumps(record, indent=2).encode()), record_path)
        self.publish(XCOM_RECORD, record)
        self.log.info("%s finished in %.2f s: %d output(s), record %s", self.function, result.duration,
                      len(final_outputs), record_path)
        value = scrub(value, [*secrets, *env_secrets(env)])
        # the record's checksum as the upload verified it: a copy of the record is checked against it
        # without reading it back from the site
        return {**value, "outputs": final_outputs, "activation_record": record_path,
                "activation_record_checksums": dict(stored.checksums),
                "function_digest": identity.digest}

    # ------------------------------------------------------------------------------ helpers

    def _credentials(self) -> Callable[[str, Sequence[str], int, list[str] | None], Grant]:
        try:
            source = credential_source(self.hook, self.options.credentials, token_prefix=self.options.token_prefix,
                                       extras=self.connection_extras)
        except CredentialError as exc:
            raise ActivationError(f"function {self.function}: {exc}") from None

        def grant(path: str, activities: Sequence[str], validity: int, ip: list[str] | None) -> Grant:
            try:
                return source(path, activities, validity, ip)
            except CredentialError as exc:
                raise ActivationError(f"function {self.function}: {exc}") from None

        return grant

    def _discard(self, tmp_dir: str) -> None:
        try:
            self.hook.delete(tmp_dir, recursive=True, missing_ok=True, directory=True)
        except Exception as exc:
            self.log.warning("could not remove the private output area %s: %s", tmp_dir, exc)

    def _fail(self, identity: FunctionIdentity, parameters: dict[str, Any], env: dict[str, str],
              inputs: list[dict[str, Any]], result: RunResult | None, error: str, secrets: list[str],
              final_dir: str, ids: RunIds) -> None:
        record = build_record(identity=identity, parameters=parameters, env=env, inputs=inputs, outputs=[],
                              result=result, status="failed", error=error, secrets=secrets,
                              **ids.as_dict(), output_dir=final_dir)
        path = f"{final_dir}/{record_name(str(ids.run_id or 'manual'), ids.map_index, failed=True)}"
        try:
            self.hook.upload(io.BytesIO(json.dumps(record, indent=2).encode()), path)
            record["record_path"] = path
        except Exception as exc:
            self.log.warning("could not write the activation record %s: %s", path, exc)
        self.publish(XCOM_RECORD, record)
        tail = "\n".join(record["logs"].splitlines()[-_LOG_LINES_IN_ERROR:])
        self.log.error("function %s failed: %s\n--- last log lines ---\n%s", self.function, error, tail)
        raise FunctionFailed(f"function {self.function} failed: {error}\n--- last log lines ---\n{tail}", record)


def _judge(result: RunResult) -> dict[str, Any]:
    """The function's result value, or :class:`_Rejected` with why the run does not count."""
    if result.killed:
        raise _Rejected("killed (on_kill)")
    if result.timed_out:
        raise _Rejected(f"timed out after {result.duration:.1f} s")
    if result.failure is not None:
        raise _Rejected(result.failure)
    if result.exit_code != 0:
        raise _Rejected(f"exited with code {result.exit_code}")
    value, reason = parse_function_result(result.stdout)
    if reason is not None or value is None:
        raise _Rejected(reason or "no result")
    return value
