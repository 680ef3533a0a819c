"""``DCacheFunctionOperator``: run a containerised function on dCache files with pre-authorised URLs only.

The shape follows dbt Cloud's "start a remote job, then wait" operator: :meth:`execute` prepares
(macaroons, private output area, task document), starts the function, pushes the output link to XCom
and waits; ``on_kill`` stops it. The function never sees the user's credential: it gets one DOWNLOAD
macaroon per input (a dCache macaroon carries one ``path:`` caveat) and one UPLOAD-only macaroon for a
private directory ``<output>/.tmp-<run>-<uuid>/``. On success the operator, with its own credential,
verifies what was uploaded (sizes and adler32 against what the function declared), moves it into
place and writes the activation record; on any failure it deletes the private directory, so nothing
partial is ever visible. Those steps are :class:`airflow_dcache.functions.activation.Activation`; this
operator checks its arguments, picks the runtime, hands the XComs over and stops the run ``on_kill``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_dcache.functions.activation import (
    XCOM_DIGEST,
    XCOM_OUTPUT_URL,
    XCOM_RECORD,
    Activation,
    ActivationError,
    ActivationOptions,
    FunctionFailed,
    RunIds,
)
from airflow_dcache.functions.factory import RUNTIMES, make_runtime
from airflow_dcache.functions.inputs import input_origins, input_paths
from airflow_dcache.functions.registry import check_name
from airflow_dcache.functions.runtime import FunctionRuntime
from airflow_dcache.functions.token_exchange import CREDENTIAL_KINDS
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.macaroons.caveats import ACTIVITY_NAMES
from airflow_dcache.operators.base import expected_versions
from airflow_dcache.paths import clean_roots
from airflow_dcache.retry_policy import DCacheRetryPolicy
from airflow_dcache.version_compat import is_resolved_at_runtime

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["XCOM_DIGEST", "XCOM_OUTPUT_URL", "XCOM_RECORD", "DCacheFunctionOperator", "DCacheFunctionOutputsLink",
           "input_origins", "input_paths"]


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
    :param functions_dir: where function directories live (local runtime; the docker runtime checks the
        image was built from that folder's current source).
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
        """The runtime object for this task (one per execution; a cold start, as one task runs once)."""
        return make_runtime(self.runtime, self.function, image=self.image, command=self.command,
                            docker_url=self.docker_url, cpus=self.cpus, memory=self.memory,
                            functions_dir=self.functions_dir)

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
        ti = context.get("ti")
        activation = Activation(self.hook, runtime, self.function, ActivationOptions(
            input_activities=self.input_activities, timeout=self.timeout, macaroon_margin=self.macaroon_margin,
            versioned=self.versioned, overwrite=self.overwrite, ip_caveat=self.ip_caveat,
            credentials=self.credentials, token_prefix=self.token_prefix,
        ), log=self.log, publish=lambda key, value: ti.xcom_push(key=key, value=value) if ti is not None else None)
        ids = RunIds(dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None),
                     run_id=context.get("run_id"), map_index=getattr(ti, "map_index", None))
        try:
            return activation.run(paths, output_dir=self.output_dir, origins=origins, versions=versions,
                                  parameters=parameters, env=env, ids=ids)
        except (ActivationError, FunctionFailed) as exc:
            raise AirflowException(str(exc)) from None

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
