"""``airflow-dcache function new|build|test|engine``: a user's own function from an installed package.

``new`` writes a working function folder from the templates beside this module (``templates/*.tmpl``:
package data, not modules); ``build`` makes the images on the project's engine (``images``); ``test``
runs a function once through a real runtime on local files against a throw-away bundled service
(:func:`run_once`); ``engine`` starts, stops or checks the private Docker engine (``engine``).

Where a function is looked up (``build``, ``test``): ``--dir``, else ``$AIRFLOW_DCACHE_FUNCTIONS_DIR``,
else the current directory when it holds every named function, else the provider's library.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from airflow_dcache.functions import engine
from airflow_dcache.functions.registry import FUNCTIONS_ENV, check_name, default_functions_dir, find_function

TEMPLATES = Path(__file__).resolve().parent / "templates"
SCAFFOLD = {"main.py": "main.py.tmpl", "function.json": "function.json.tmpl", "Dockerfile": "Dockerfile.tmpl"}


class KitError(Exception):
    """Bad input to a ``function`` command: printed as one line, exit status 1."""


def scaffold_test_name(name: str) -> str:
    """``test_<name>.py`` with ``-`` and ``.`` made ``_``, so pytest can import it as a module."""
    return f"test_{identifier(name)}.py"


def identifier(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name)


def new_function(name: str, directory: str | os.PathLike[str] = ".") -> Path:
    """Create ``directory/name/`` with ``main.py``, ``function.json``, ``Dockerfile`` and its pytest."""
    try:
        check_name(name)
    except ValueError as exc:
        raise KitError(str(exc)) from None
    target = Path(directory) / name
    if target.exists():
        raise KitError(f"{target} exists already; choose another name or --dir (nothing was written)")
    values = {"name": name, "ident": identifier(name), "test_file": scaffold_test_name(name)}
    files = {**SCAFFOLD, scaffold_test_name(name): "test.py.tmpl"}
    try:
        target.mkdir(parents=True)
        for out, template in files.items():
            text = (TEMPLATES / template).read_text()
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            (target / out).write_text(text)
    except OSError as exc:
        raise KitError(f"cannot create {target}: {exc}") from exc
    return target


def functions_dir(names: list[str], given: str | None) -> Path:
    """Where ``names`` live: ``--dir``, ``$AIRFLOW_DCACHE_FUNCTIONS_DIR``, the cwd holding them, the library."""
    if given:
        return Path(given)
    if os.environ.get(FUNCTIONS_ENV):
        return Path(os.environ[FUNCTIONS_ENV])
    if names and all((Path.cwd() / n / "main.py").is_file() for n in names):
        return Path.cwd()
    found = default_functions_dir()
    if found is None:
        raise KitError(f"no functions directory: give --dir or set ${FUNCTIONS_ENV}")
    return found


def engine_hint(url: str) -> str:
    return (f"no Docker engine answers at {url}. Start the project's private engine with "
            "'airflow-dcache function engine start' (as root; needs dockerd: apt-get install docker.io "
            "debootstrap), or set DOCKER_HOST to an engine's socket")


def connect(url: str | None = None) -> object:
    """A Docker client on a live engine, or :class:`KitError` saying how to start one."""
    try:
        import docker.errors
    except ImportError:
        raise KitError("building and running function images needs the Docker SDK: "
                       "pip install 'airflow-dcache[docker]'") from None

    from airflow_dcache.functions.images import docker_client, engine_url

    url = engine_url(url)
    try:
        client = docker_client(url)
        client.ping()
    except docker.errors.DockerException:
        raise KitError(engine_hint(url)) from None
    return client


def build(names: list[str], directory: str | None) -> int:
    import subprocess

    from airflow_dcache.functions.images import build_all
    from airflow_dcache.functions.registry import find_function

    where = functions_dir(names, directory)
    if not where.is_dir():
        raise KitError(f"--dir: {where} is not a directory")
    sources = []
    for name in names:
        try:
            sources.append(find_function(name, where))
        except ValueError as exc:
            raise KitError(str(exc)) from None
    for source in sources:
        if not (source.directory / "Dockerfile").is_file():
            raise KitError(f"{source.name} has no Dockerfile ('airflow-dcache function new' writes one; "
                           "docs/functions.md shows it)")
    client = connect()
    try:
        tags = build_all(names, where, client=client, log=lambda *parts: print(*parts, file=sys.stderr))
    except (RuntimeError, subprocess.CalledProcessError, ValueError, OSError) as exc:
        raise KitError(f"build failed: {exc}") from exc
    for name, tag in tags.items():
        print(f"{name} {tag}")
    return 0


def parse_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is JSON when it parses (``3``, ``true``, ``[1,2]``), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KitError(f"--param: {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


class _XComCatcher:
    """The task-instance surface the operator uses outside Airflow: keeps what it pushes."""

    map_index = -1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run_once(name: str, where: Path, *, runtime: str = "local", inputs: list[Path] | None = None,
             params: list[str] | None = None, out: Path | None = None, timeout: float = 300.0) -> int:
    """Run ``name`` once with ``DCacheFunctionOperator`` on local files; print the record; 0 on success.

    The files are uploaded to a throw-away bundled service (plain HTTP on loopback, removed afterwards),
    so the run is a real one: per-input macaroons, the task document on stdin, the runtime (subprocess or
    container), upload checks, the activation record.
    """
    inputs = list(inputs or [])
    for path in inputs:
        if not path.is_file():
            raise KitError(f"--input: {path} is not a file")
    parameters = parse_params(list(params or []))
    try:
        find_function(name, where)
    except ValueError as exc:
        raise KitError(str(exc)) from None
    if out is not None and out.exists() and not out.is_dir():
        raise KitError(f"--out: {out} is not a directory")
    try:
        from airflow_dcache.testing.server import start_server
    except ImportError as exc:
        raise KitError(f"needs the bundled service: pip install 'airflow-dcache[server]' ({exc})") from None
    if runtime == "docker":
        connect()
    saved = {k: os.environ.get(k) for k in (FUNCTIONS_ENV, "AIRFLOW_CONN_FUNCTION_TEST")}
    with tempfile.TemporaryDirectory(prefix="fn-test-") as tmp:
        server = start_server(Path(tmp) / "dcache")
        try:
            os.environ["AIRFLOW_CONN_FUNCTION_TEST"] = json.dumps({
                "conn_type": "dcache", "host": server.webdav, "login": "alice",
                "password": server.passwords["alice"], "extra": {"frontend_url": server.frontend, "timeout": 30}})
            # The docker runtime checks the image against this folder (see container.StaleImage).
            os.environ[FUNCTIONS_ENV] = str(where.resolve())
            return _run_on_service(name, where, runtime, inputs, parameters, out, timeout)
        finally:
            server.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _run_on_service(name: str, where: Path, runtime: str, inputs: list[Path], parameters: dict[str, Any],
                    out: Path | None, timeout: float) -> int:
    from airflow.exceptions import AirflowException

    from airflow_dcache.hooks.dcache import DCacheHook
    from airflow_dcache.operators import DCacheFunctionOperator

    area = f"/home/alice/{name}-{uuid.uuid4().hex[:8]}"
    remote: list[str] = []
    with DCacheHook("function_test") as hook:
        hook.mkdir(f"{area}/in")
        for i, path in enumerate(inputs):
            target = f"{area}/in/{path.name}"
            if target in remote:
                target = f"{area}/in/{i}-{path.name}"
            hook.upload(path, target)
            remote.append(target)
        op = DCacheFunctionOperator(task_id="function_test", function=name, inputs=remote, output_dir=f"{area}/out",
                                    runtime=runtime, functions_dir=str(where), parameters=parameters,
                                    timeout=timeout, dcache_conn_id="function_test")
        ti = _XComCatcher()
        try:
            result: dict[str, Any] | None = op.execute({"ti": ti, "run_id": "function-test"})
            error = None
        except AirflowException as exc:
            result, error = None, str(exc)
        record = ti.xcom.get("activation_record") or {}
        _print_record(name, runtime, record, result, error)
        if out is not None and result is not None:
            out.mkdir(parents=True, exist_ok=True)
            for item in record.get("outputs") or []:
                (out / item["name"]).parent.mkdir(parents=True, exist_ok=True)  # outputs may be nested
                hook.download(item["path"], out / item["name"])
                print(f"downloaded {out / item['name']}")
    return 0 if error is None else 1


def _print_record(name: str, runtime: str, record: dict[str, Any], result: dict[str, Any] | None,
                  error: str | None) -> None:
    """A summary of the activation record (none when the run was refused before it started)."""
    fn = record.get("function") or {}
    about = [f"{fn.get('runtime', runtime)} runtime"]
    about += [f"digest {fn['digest']}"] if fn.get("digest") else []
    about += [f"image {fn['image']}"] if fn.get("image") else []
    print(f"function {name} ({', '.join(about)})")
    if not record:
        print("status: failed before it started (no activation record)")
    else:
        duration = record.get("duration")
        print(f"status: {record.get('status')}, exit code {record.get('exit_code')}"
              + (f", {duration:.2f} s" if isinstance(duration, (int, float)) else ""))
    if error:
        print(f"error: {error}")
    for item in record.get("outputs") or []:
        sums = " ".join(f"{k}:{v}" for k, v in sorted((item.get("checksums") or {}).items()))
        print(f"output: {item.get('name')}  {item.get('size')} bytes  {sums}")
    if result is not None:
        shown = {k: v for k, v in result.items() if k not in {"outputs", "activation_record", "function_digest"}}
        print(f"result: {json.dumps(shown, sort_keys=True, default=str)}")
    logs = str(record.get("logs") or "").strip()
    if logs:
        print("log (last lines):")
        for line in logs.splitlines()[-15:]:
            print(f"  {line}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``function`` subcommand group; the caller sets ``func=run`` on ``parser``."""
    sub = parser.add_subparsers(dest="function_command", required=True)

    new = sub.add_parser("new", help="create a working function folder (main.py, function.json, Dockerfile, test)")
    new.add_argument("name", help="function name: lowercase letters, digits, . _ -")
    new.add_argument("--dir", default=".", help="where to create NAME/ (default: the current directory)")
    new.set_defaults(kit_handler=_new)

    bld = sub.add_parser("build", help="build the base image (if missing) and function images on the engine")
    bld.add_argument("names", nargs="*", metavar="NAME", help="functions to build (default: all with a Dockerfile)")
    bld.add_argument("--dir", default=None, help="folder holding the functions (default: see docs/functions.md)")
    bld.set_defaults(kit_handler=_build)

    tst = sub.add_parser("test", help="run a function once on local files against a throw-away bundled service")
    tst.add_argument("name")
    tst.add_argument("--dir", default=None, help="folder holding the function")
    tst.add_argument("--runtime", choices=("local", "docker"), default="local")
    tst.add_argument("--input", dest="inputs", nargs="+", action="extend", default=[], metavar="FILE",
                     help="local files uploaded to the service as the inputs")
    tst.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                     help="a parameter (VALUE is JSON, else a string); repeatable")
    tst.add_argument("--out", default=None, help="download the outputs into this local folder")
    tst.add_argument("--timeout", type=float, default=300.0)
    tst.set_defaults(kit_handler=_test)

    eng = sub.add_parser("engine", help="start|stop|status of the private Docker engine (prints DOCKER_HOST=...)")
    engine.add_arguments(eng)
    eng.set_defaults(kit_handler=lambda args: engine.run(args, prog="airflow-dcache function engine"))


def _new(args: argparse.Namespace) -> int:
    target = new_function(args.name, args.dir)
    print(f"created {target}/: main.py function.json Dockerfile {scaffold_test_name(args.name)}")
    print(f"  test it:  pytest {target / scaffold_test_name(args.name)}")
    print(f"  run it:   airflow-dcache function test {args.name} --dir {Path(args.dir)} --input FILE")
    print(f"  image:    airflow-dcache function build {args.name} --dir {Path(args.dir)}")
    return 0


def _build(args: argparse.Namespace) -> int:
    return build(list(args.names), args.dir)


def _test(args: argparse.Namespace) -> int:
    where = functions_dir([args.name], args.dir)
    return run_once(args.name, where, runtime=args.runtime, inputs=[Path(p) for p in args.inputs],
                    params=args.params, out=Path(args.out) if args.out else None, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``function`` subcommand; bad input is one line on stderr and exit status 1."""
    try:
        return int(args.kit_handler(args))
    except KitError as exc:
        print(f"airflow-dcache function {args.function_command}: {exc}", file=sys.stderr)
        return 1
