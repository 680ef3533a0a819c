"""``DCacheFunctionOperator``: run a containerised function on dCache files with pre-authorised URLs only.

The shape follows dbt Cloud's "start a remote job, then wait" operator: :meth:`execute` prepares
(macaroons, private output area, task document), starts the function, pushes the output link to XCom
and waits; ``on_kill`` stops it. The function never sees the user's credential: it gets one DOWNLOAD
macaroon per input (a dCache macaroon carries one ``path:`` caveat) and one UPLOAD-only macaroon for a
private directory ``<output>/.tmp-<run>-<uuid>/``. On success the operator, with its own credential,
verifies what was uploaded (sizes and adler32 against what the function declared), moves it into
place and writes the activation record; on any failure it deletes the private directory, so nothing
partial is ever visible.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_dcache.events.version import require_version
from airflow_dcache.functions.record import build_record, record_name, scrub
from airflow_dcache.functions.registry import check_name
from airflow_dcache.functions.runtime import FunctionIdentity, FunctionRunError, FunctionRuntime, RunResult
from airflow_dcache.functions.runtime import parse_result as parse_function_result
from airflow_dcache.functions.taskdoc import TaskDocument, TaskInput, TaskOutput
from airflow_dcache.functions.token_exchange import CREDENTIAL_KINDS, TokenExchangeError, TokenExchanger
from airflow_dcache.hooks._protocol import door_url, namespace_url, normalize_path
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.macaroons.caveats import ACTIVITY_NAMES
from airflow_dcache.operators._base import expected_versions
from airflow_dcache.paths import clean_path, clean_roots
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.version_compat import is_resolved_at_runtime

if TYPE_CHECKING:
    from airflow.sdk import Context

RUNTIMES = ("local", "docker")
XCOM_RECORD = "activation_record"
XCOM_OUTPUT_URL = "output_url"
XCOM_DIGEST = "function_digest"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LOG_LINES_IN_ERROR = 20


class DCacheFunctionOutputsLink(BaseOperatorLink):
    """"Function outputs": the output directory on the WebDAV door (pushed to XCom at start)."""

    name = "Function outputs"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=XCOM_OUTPUT_URL)
        return str(value) if value else ""


def _templated(value: Any) -> bool:
    """A Jinja string, or an XComArg / mapped-group argument: both are only known when the task runs."""
    return is_resolved_at_runtime(value) or (isinstance(value, str) and "{{" in value)


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


class DCacheFunctionOperator(BaseOperator):
    """Run a function (``<functions dir>/<name>``) on dCache inputs and put its outputs into a dCache directory.

    The function's last stdout line (a JSON object, at most 1 MiB) is the return value; its
    ``outputs`` list is replaced by the final dCache paths with sizes and checksums. The activation
    record is pushed as XCom ``activation_record`` and written as ``<output>/.activation-<run_id>.json``
    (``….failed.json`` on failure).

    :param function: function name (a directory under ``functions_dir``; image
        ``airflow-dcache/<function>:latest`` for the docker runtime). Templated.
    :param inputs: a dCache path, a list of paths, or a file list from an upstream task (records with
        ``path``, e.g. ``DCacheListOperator``/``select-files`` output; ``{"files": [...]}`` too). Templated.
    :param output_dir: dCache directory the outputs go to (created if missing). Templated.
    :param origins: for inputs that are copies (a buffer replica), the file version each is a copy of
        (``{site, path, pnfsid, checksum}``; one dict for one input, or a list aligned with ``inputs``).
        It reaches the function as ``Input.origin``/``Input.version`` and the activation record, so an
        output can say which upload it derives from. Templated.
    :param expected_version: the input version(s) to run on: a version id or dict for one input, or
        ``{path: version}``. An input replaced since then fails the task at once (``VersionChanged``)
        instead of running on the newer version in this one's name. Templated.
    :param allowed_roots: the trees this task may act on (a DAG sets it for all its dCache tasks with
        ``default_args={"allowed_roots": [...]}``); a path outside fails the task before any request.
    :param runtime: ``local`` (subprocess) or ``docker`` (a real engine).
    :param image: image reference for the docker runtime (default ``airflow-dcache/<function>:latest``).
    :param command: command for the docker runtime instead of the image's entry point.
    :param parameters: JSON parameters handed to the function. Templated.
    :param env: extra environment for the function; only the keys are recorded. Templated.
    :param timeout: seconds the function may run (default 300); also sets the macaroon validity.
    :param macaroon_margin: seconds added to ``timeout`` for the macaroons' validity.
    :param input_activities: activities granted on each input (default ``["DOWNLOAD"]``; ``select-files``
        needs ``["LIST"]`` on its directory).
    :param versioned: put outputs under ``<output_dir>/<digest[:12]>/`` (the function's source digest), so
        reprocessing with changed code never overwrites results of an older version.
    :param overwrite: replace existing outputs of the same name when moving into place.
    :param ip_caveat: ``"auto"`` (restrict macaroons to loopback when the door is a loopback address,
        the only case where the function's source address is known), a list of addresses/subnets, or
        ``None`` for no ``ip:`` caveat.
    :param cpus: CPU limit for the container. :param memory: memory limit (``"1g"``) for the container.
    :param functions_dir: where function directories live (local runtime).
    :param docker_url: Docker engine URL (default ``$DOCKER_HOST`` or the project's engine socket).
    :param dcache_conn_id: the dCache connection; its credential never reaches the function.
    :param credentials: what the function gets: ``"macaroon"`` (per-file macaroons minted by the door)
        or ``"token"`` (per-file WLCG tokens obtained by RFC 8693 token exchange at the issuer of the
        connection's bearer token, see :mod:`airflow_dcache.functions.token_exchange`). Default: the
        connection extra ``function_credentials``, else ``"macaroon"``.
    :param token_prefix: with ``credentials="token"``, the site's path prefix for the issuer (scope
        paths are relative to it); default: the connection extra ``token_prefix``, else ``/``.
    """

    template_fields: Sequence[str] = ("function", "inputs", "output_dir", "parameters", "env", "image",
                                      "dcache_conn_id", "origins", "expected_version")
    template_fields_renderers = {"parameters": "json", "env": "json"}
    operator_extra_links = (DCacheFunctionOutputsLink(),)
    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        function: str,
        inputs: Any,
        output_dir: str,
        runtime: str = "local",
        image: str | None = None,
        command: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        macaroon_margin: float = 120,
        input_activities: Sequence[str] = ("DOWNLOAD",),
        versioned: bool = False,
        overwrite: bool = True,
        ip_caveat: str | Sequence[str] | None = "auto",
        cpus: float | None = None,
        memory: str | None = None,
        functions_dir: str | None = None,
        docker_url: str | None = None,
        dcache_conn_id: str = DCacheHook.default_conn_name,
        origins: Any = None,
        expected_version: Any = None,
        allowed_roots: Sequence[str] | None = None,
        credentials: str | None = None,
        token_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retry_policy", DCacheRetryPolicy())
        super().__init__(**kwargs)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime: must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if not _templated(function):
            check_name(function)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        if isinstance(macaroon_margin, bool) or not isinstance(macaroon_margin, (int, float)) or macaroon_margin < 0:
            raise ValueError(f"macaroon_margin: must be a non-negative number of seconds, got {macaroon_margin!r}")
        activities = [input_activities] if isinstance(input_activities, str) else list(input_activities)
        bad = [a for a in activities if a not in ACTIVITY_NAMES]
        if not activities or bad:
            raise ValueError(
                f"input_activities: unknown or empty {bad or activities!r}; valid: {', '.join(ACTIVITY_NAMES)}"
            )
        if not _templated(output_dir) and not (isinstance(output_dir, str) and output_dir.startswith("/")):
            raise ValueError(f"output_dir: expected an absolute dCache path, got {output_dir!r}")
        if parameters is not None and not isinstance(parameters, (Mapping, str)):
            raise ValueError("parameters: expected a JSON object")
        if credentials is not None and credentials not in CREDENTIAL_KINDS:
            raise ValueError(f"credentials: must be one of {', '.join(CREDENTIAL_KINDS)}, got {credentials!r}")
        if env is not None and not isinstance(env, (Mapping, str)):
            raise ValueError("env: expected a mapping of names to strings")
        self.function = function
        self.inputs = inputs
        self.output_dir = output_dir
        self.runtime = runtime
        self.image = image
        self.command = command
        self.parameters = parameters or {}
        self.env = env or {}
        self.timeout = float(timeout)
        self.macaroon_margin = float(macaroon_margin)
        self.input_activities = activities
        self.versioned = versioned
        self.overwrite = overwrite
        self.ip_caveat = ip_caveat
        self.cpus = cpus
        self.memory = memory
        self.functions_dir = functions_dir
        self.docker_url = docker_url
        self.dcache_conn_id = dcache_conn_id
        self.origins = origins
        self.expected_version = expected_version
        self.allowed_roots = clean_roots(allowed_roots)
        self.credentials = credentials
        self.token_prefix = token_prefix
        self._runtime: FunctionRuntime | None = None
        self._kill_requested = False

    @cached_property
    def hook(self) -> DCacheHook:
        return DCacheHook(self.dcache_conn_id, allowed_roots=self.allowed_roots)

    def make_runtime(self) -> FunctionRuntime:
        """The runtime object for this task (one per execution)."""
        if self.runtime == "docker":
            from airflow_dcache.functions.container import DockerRuntime

            return DockerRuntime(self.function, self.image, docker_url=self.docker_url, cpus=self.cpus,
                                 memory=self.memory, command=self.command)
        from airflow_dcache.functions.local import LocalRuntime

        return LocalRuntime(self.function, self.functions_dir)

    # ------------------------------------------------------------------------------ execute

    def execute(self, context: Context) -> dict[str, Any]:
        parameters = json.loads(self.parameters) if isinstance(self.parameters, str) else dict(self.parameters)
        env = json.loads(self.env) if isinstance(self.env, str) else {str(k): str(v) for k, v in self.env.items()}
        paths = input_paths(self.inputs)
        origins = input_origins(self.origins, len(paths))
        versions = expected_versions(paths, self.expected_version)
        check_name(self.function)
        runtime = self._runtime = self.make_runtime()
        if self._kill_requested:  # on_kill arrived while the task was still preparing
            runtime.stop()
        try:
            identity = runtime.identify()
        except (FunctionRunError, ValueError) as exc:
            raise AirflowException(f"function {self.function}: {exc}") from exc
        ti = context.get("ti")
        run_id = str(context.get("run_id") or "manual")
        map_index = getattr(ti, "map_index", None)
        final_dir = normalize_path(self.output_dir)
        if self.versioned:
            final_dir = f"{final_dir}/{identity.digest.split(':', 1)[-1][:12]}"
        hook = self.hook
        self._push(context, XCOM_DIGEST, identity.digest)

        # ---- start: macaroons, private output area, task document
        validity = int(self.timeout + self.macaroon_margin + 0.999)
        ip = self._ip_restriction(runtime)
        hook.mkdir(final_dir)
        tmp_dir = f"{final_dir}/.tmp-{_UNSAFE.sub('_', run_id)[:80]}-{uuid.uuid4().hex[:12]}"
        hook.mkdir(tmp_dir)
        secrets: list[str] = []
        inputs_record: list[dict[str, Any]] = []
        result: RunResult | None = None
        try:
            credential = self._credential_source(hook)
            task_inputs = []
            for path, origin in zip(paths, origins, strict=True):
                entry = (require_version(hook, path, versions[path], step=f"function {self.function}")
                         if path in versions else hook.stat(path, checksum=True))
                url, authorization, secret, _ = credential(path, self.input_activities, validity, ip)
                secrets.append(secret)
                task_inputs.append(TaskInput(
                    path=path, url=url, authorization=authorization, checksums=dict(entry.checksums or {}),
                    size=entry.size if entry.is_file else None,
                    frontend_url=namespace_url(hook.settings, path) if "LIST" in self.input_activities else None,
                    pnfsid=entry.pnfsid, origin=origin,
                ))
                inputs_record.append({"path": path, "pnfsid": entry.pnfsid,
                                      "size": entry.size if entry.is_file else None,
                                      "checksums": dict(entry.checksums or {}),
                                      **({"origin": origin} if origin else {})})
            _, _, upload_secret, upload_target = credential(tmp_dir, ["UPLOAD"], validity, ip)
            secrets.append(upload_secret)
            document = TaskDocument(
                function=self.function, inputs=task_inputs,
                output=TaskOutput(path=tmp_dir, url_prefix=upload_target, authorization=f"Bearer {upload_secret}"),
                parameters=parameters, deadline=round(time.time() + self.timeout, 3),
            )
            self._push(context, XCOM_OUTPUT_URL, door_url(hook.settings, final_dir))
            self.log.info("running %s (%s runtime, digest %s) on %d input(s); outputs to %s",
                          self.function, identity.runtime, identity.digest[:19], len(paths), final_dir)

            # ---- wait
            result = runtime.run(document.to_json(), env=env, timeout=self.timeout)
            value, error = self._judge(result)
            outputs: list[dict[str, Any]] = []
            if error is None:
                assert value is not None
                outputs, error = self._verify_outputs(tmp_dir, value.get("outputs"))
            if error is not None:
                raise _FunctionFailed(error)
            final_outputs = self._move_into_place(tmp_dir, final_dir, outputs)
        except BaseException as exc:
            self._discard(tmp_dir)
            if isinstance(exc, (_FunctionFailed, FunctionRunError)):
                self._fail(context, identity, parameters, env, inputs_record, result, str(exc), secrets, final_dir)
            raise
        record = build_record(identity=identity, parameters=parameters, env=env, inputs=inputs_record,
                              outputs=final_outputs, result=result, status="success", error=None, secrets=secrets,
                              **self._ids(context), output_dir=final_dir)
        record_path = f"{final_dir}/{record_name(run_id, map_index)}"
        hook.upload(io.BytesIO(json.dumps(record, indent=2).encode()), record_path)
        self._push(context, XCOM_RECORD, record)
        self.log.info("%s finished in %.2f s: %d output(s), record %s", self.function, result.duration,
                      len(final_outputs), record_path)
        assert value is not None
        value = scrub(value, [*secrets, *(v for v in env.values() if v and len(v) >= 4)])
        return {**value, "outputs": final_outputs, "activation_record": record_path,
                "function_digest": identity.digest}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage, when its provider is installed: the inputs read and the outputs written, with
        checksums, and the activation record on each output.

        :param task_instance: the finished task instance (result and record are read back from XCom).
        """
        from airflow_dcache.operators import _lineage

        if not _lineage.available():
            return None
        inputs, outputs = _lineage.function_datasets(
            _lineage.pull_result(task_instance), _lineage.pull_result(task_instance, XCOM_RECORD),
            self.hook.settings.site)
        return _lineage.operator_lineage(inputs, outputs)

    def on_kill(self) -> None:
        """Stop the container or subprocess; ``execute`` then removes the private output area."""
        self._kill_requested = True
        if self._runtime is not None:
            self._runtime.stop()

    # ------------------------------------------------------------------------------ helpers

    def _credential_source(self, hook: DCacheHook) -> Any:
        """``(path, activities, validity, ip) -> (url, authorization, secret, plain url)`` for the chosen credential.

        A macaroon rides in the URL (``?authz=``); an exchanged token goes in an Authorization value,
        since dCache reads ``authz`` only as a macaroon. A token's lifetime is the issuer's choice
        (never longer than the pipeline token's), and it has no ``ip:`` restriction.
        """
        extras = hook.get_connection(hook.dcache_conn_id).extra_dejson or {}
        kind = self.credentials or extras.get("function_credentials") or "macaroon"
        if kind not in CREDENTIAL_KINDS:
            raise AirflowException(f"connection extra function_credentials must be one of "
                                   f"{', '.join(CREDENTIAL_KINDS)}, got {kind!r}")
        if kind == "macaroon":
            def macaroon(path: str, activities: Sequence[str], validity: int,
                         ip: list[str] | None) -> tuple[str, str | None, str, str]:
                minted = hook.mint_macaroon(path, activities=activities, validity=validity, ip=ip)
                return minted.target_with_macaroon, None, minted.macaroon, minted.target

            return macaroon
        try:
            exchanger = TokenExchanger.from_connection(hook.settings, extras, prefix=self.token_prefix)
        except TokenExchangeError as exc:
            raise AirflowException(f"function {self.function}: {exc}") from None

        def token(path: str, activities: Sequence[str], validity: int,
                  ip: list[str] | None) -> tuple[str, str | None, str, str]:
            try:
                value = exchanger.token_for(path, activities)
            except TokenExchangeError as exc:
                raise AirflowException(f"function {self.function}: {exc}") from None
            url = door_url(hook.settings, path)
            return url, f"Bearer {value}", value, url

        return token

    def _ip_restriction(self, runtime: FunctionRuntime) -> list[str] | None:
        if self.ip_caveat is None:
            return None
        if self.ip_caveat != "auto":
            return [self.ip_caveat] if isinstance(self.ip_caveat, str) else list(self.ip_caveat)
        known = runtime.client_ip()
        if known:
            return [known]
        host = urlsplit(self.hook.settings.door_url).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        # Local subprocess and host-networked containers reach a loopback door from loopback.
        return ["127.0.0.0/8", "::1"] if loopback else None

    @staticmethod
    def _judge(result: RunResult) -> tuple[dict[str, Any] | None, str | None]:
        if result.killed:
            return None, "killed (on_kill)"
        if result.timed_out:
            return None, f"timed out after {result.duration:.1f} s"
        if result.exit_code != 0:
            return None, f"exited with code {result.exit_code}"
        value, reason = parse_function_result(result.stdout)
        return value, reason

    def _walk(self, directory: str, prefix: str = "", depth: int = 0) -> dict[str, Any]:
        """Files under ``directory`` by relative name (bounded depth), with size and checksums."""
        found: dict[str, Any] = {}
        if depth > 16:
            return found
        for entry in self.hook.list_dir(directory, checksum=True):
            rel = f"{prefix}{entry.name}"
            if entry.is_dir:
                found.update(self._walk(f"{directory}/{entry.name}", rel + "/", depth + 1))
            else:
                found[rel] = entry
        return found

    def _verify_outputs(self, tmp_dir: str, declared: Any) -> tuple[list[dict[str, Any]], str | None]:
        """Compare what dCache stored with what the function says it uploaded."""
        stored = self._walk(tmp_dir)
        if declared is None:
            declared = [{"name": n} for n in sorted(stored)]
        if not isinstance(declared, list) or not all(isinstance(d, Mapping) and isinstance(d.get("name"), str)
                                                     for d in declared):
            return [], "the result's 'outputs' is not a list of {name, size, checksums}"
        outputs = []
        for item in declared:
            name = item["name"].strip("/")
            entry = stored.pop(name, None)
            if entry is None:
                return [], f"declared output {name} was not uploaded"
            size = item.get("size")
            if size is not None and size != entry.size:
                return [], f"output {name}: size mismatch (function {size}, dCache {entry.size})"
            theirs = {k.lower(): str(v).lower() for k, v in (item.get("checksums") or {}).items()}
            ours = {k.lower(): str(v).lower() for k, v in (entry.checksums or {}).items()}
            for algorithm in sorted(theirs.keys() & ours.keys()):
                if theirs[algorithm] != ours[algorithm]:
                    return [], (f"output {name}: {algorithm} checksum mismatch "
                                f"(function {theirs[algorithm]}, dCache {ours[algorithm]})")
            outputs.append({"name": name, "size": entry.size, "checksums": ours})
        if stored:
            return [], f"undeclared output(s) uploaded: {', '.join(sorted(stored))}"
        return outputs, None

    def _move_into_place(self, tmp_dir: str, final_dir: str, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """MOVE each top-level entry of the private area into ``final_dir``; undo on a failed move."""
        hook = self.hook
        tops = sorted({o["name"].split("/", 1)[0] for o in outputs})
        moved: list[str] = []
        try:
            for top in tops:
                hook.move(f"{tmp_dir}/{top}", f"{final_dir}/{top}", overwrite=self.overwrite)
                moved.append(top)
        except Exception as exc:
            for top in moved:
                hook.delete(f"{final_dir}/{top}", recursive=True, missing_ok=True)
            raise _FunctionFailed(f"moving outputs into place failed: {exc}") from exc
        hook.delete(tmp_dir, recursive=True, missing_ok=True)
        return [{"path": f"{final_dir}/{o['name']}", "name": o["name"], "size": o["size"], "checksums": o["checksums"]}
                for o in outputs]

    def _discard(self, tmp_dir: str) -> None:
        try:
            self.hook.delete(tmp_dir, recursive=True, missing_ok=True)
        except Exception as exc:
            self.log.warning("could not remove the private output area %s: %s", tmp_dir, exc)

    def _fail(self, context: Context, identity: FunctionIdentity, parameters: dict[str, Any], env: dict[str, str],
              inputs: list[dict[str, Any]], result: RunResult | None, error: str, secrets: list[str],
              final_dir: str) -> None:
        record = build_record(identity=identity, parameters=parameters, env=env, inputs=inputs, outputs=[],
                              result=result, status="failed", error=error, secrets=secrets,
                              **self._ids(context), output_dir=final_dir)
        ids = self._ids(context)
        path = f"{final_dir}/{record_name(str(ids['run_id'] or 'manual'), ids['map_index'], failed=True)}"
        try:
            self.hook.upload(io.BytesIO(json.dumps(record, indent=2).encode()), path)
            record["record_path"] = path
        except Exception as exc:
            self.log.warning("could not write the activation record %s: %s", path, exc)
        self._push(context, XCOM_RECORD, record)
        tail = "\n".join(record["logs"].splitlines()[-_LOG_LINES_IN_ERROR:])
        self.log.error("function %s failed: %s\n--- last log lines ---\n%s", self.function, error, tail)
        raise AirflowException(f"function {self.function} failed: {error}\n--- last log lines ---\n{tail}")

    @staticmethod
    def _ids(context: Context) -> dict[str, Any]:
        ti = context.get("ti")
        return {"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
                "run_id": context.get("run_id"), "map_index": getattr(ti, "map_index", None)}

    @staticmethod
    def _push(context: Context, key: str, value: Any) -> None:
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key=key, value=value)


class _FunctionFailed(Exception):
    """The function ran but its run does not count (exit code, timeout, result, outputs)."""
