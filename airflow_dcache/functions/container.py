"""The ``docker`` runtime: the function image on a real Docker engine, through the Docker SDK.

Containers run with ``--network host`` (the engine has no bridge), a read-only root file system with
a private ``/tmp``, no capabilities, ``no-new-privileges``, an optional CPU and memory limit, and
pull policy *never*: a missing image fails at once (``airflow-dcache function build`` builds them). The
task document goes in on stdin through an attach socket, never in the environment (``docker inspect``
would show it). The container is removed after the run, on timeout and on ``stop()``. A *warm*
container (:class:`DockerWarmInstance`, :mod:`airflow_dcache.functions.warm`) has the same shape and
serves a chunk's task documents one after the other over the same attach stream.

An image is only run for the code it was built from: when the function's folder is found (``functions_dir``,
``$AIRFLOW_DCACHE_FUNCTIONS_DIR`` or the provider's library), the image's source-digest label must equal
the folder's current digest, otherwise the run is refused (:class:`StaleImage`) rather than silently
running old code. ``rebuild=True`` (or ``$AIRFLOW_DCACHE_FUNCTION_REBUILD=1``) builds the image instead.
A worker without the folder (images only) trusts the image's label.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_dcache.functions import addressing
from airflow_dcache.functions.images import build_base, build_function, docker_client
from airflow_dcache.functions.registry import (
    IMAGE_REPOSITORY,
    LIBRARY_DIR,
    SOURCE_LABEL,
    FunctionSource,
    check_name,
    default_functions_dir,
    find_function,
)
from airflow_dcache.functions.runtime import (
    STDOUT_KEEP_BYTES,
    FunctionIdentity,
    FunctionRunError,
    FunctionRuntime,
    RunResult,
    now,
)
from airflow_dcache.functions.warm import EXIT_WAIT_SECONDS, WARM_ENV, WarmInstance

STDERR_KEEP_BYTES = 64 * 1024
REBUILD_ENV = "AIRFLOW_DCACHE_FUNCTION_REBUILD"
"""Set to ``1`` to rebuild a function's image when it is missing or older than the folder, instead of refusing."""

log = logging.getLogger(__name__)


class StaleImage(FunctionRunError):
    """The image was built from other code than the function folder holds now (or its origin is unknown)."""


def rebuild_requested(value: bool | None = None) -> bool:
    """``value`` when given, else whether ``$AIRFLOW_DCACHE_FUNCTION_REBUILD`` is ``1``/``true``/``yes``."""
    if value is not None:
        return value
    return os.environ.get(REBUILD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def build_hint(source: FunctionSource) -> str:
    """The command that builds ``source``'s image; ``--dir`` unless it is one of the provider's own."""
    parent = source.directory.parent
    where = "" if parent == LIBRARY_DIR.resolve() else f" --dir {parent}"
    return f"airflow-dcache function build {source.name}{where}"


class DockerRuntime(FunctionRuntime):
    """Run a function image.

    :param function: function name; the image defaults to ``airflow-dcache/<function>:latest``.
    :param image: image reference to run instead.
    :param docker_url: engine socket (default ``$DOCKER_HOST`` or the project's engine socket).
    :param cpus: CPU limit (e.g. ``1.5``), ``None`` for no limit.
    :param memory: memory limit in Docker's notation (``"512m"``), ``None`` for no limit.
    :param command: command to run instead of the image's entry point.
    :param functions_dir: where the function's folder is looked up to check the image against it (default
        ``$AIRFLOW_DCACHE_FUNCTIONS_DIR`` or the provider's library); no folder there, no check.
    :param rebuild: build the image when it is missing or stale instead of refusing to run it (default
        ``$AIRFLOW_DCACHE_FUNCTION_REBUILD``).
    """

    name = "docker"

    def __init__(self, function: str, image: str | None = None, *, docker_url: str | None = None,
                 cpus: float | None = None, memory: str | None = None, command: list[str] | None = None,
                 functions_dir: str | os.PathLike[str] | None = None, rebuild: bool | None = None) -> None:
        super().__init__()
        self.function = check_name(function)
        self.image = image or f"{IMAGE_REPOSITORY}/{function}:latest"
        self.docker_url = docker_url
        self.cpus = cpus
        self.memory = memory
        self.command = command
        self.functions_dir = functions_dir
        self.rebuild = rebuild_requested(rebuild)
        self._client: Any = None
        self._container_id: str | None = None
        self._lock = threading.RLock()  # re-entered when a signal handler calls stop()

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker.errors

            try:
                self._client = docker_client(self.docker_url, timeout=60)
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                raise FunctionRunError(
                    f"no Docker engine answers ({exc}); start one with: airflow-dcache function engine start"
                ) from exc
        return self._client

    def source(self) -> FunctionSource | None:
        """The function's folder when there is one to check the image against, else ``None``."""
        base = Path(self.functions_dir) if self.functions_dir is not None else default_functions_dir()
        if base is None or not (base / self.function / "main.py").is_file():
            return None
        try:
            return find_function(self.function, base)
        except ValueError as exc:  # e.g. a function.json that is not JSON
            raise FunctionRunError(f"function {self.function}: {exc}") from exc

    def identify(self) -> FunctionIdentity:
        source = self.source()
        current = source.digest if source is not None else None
        image = self._image(missing_ok=self.rebuild and source is not None, source=source)
        recorded = _labels(image).get(SOURCE_LABEL) if image is not None else None
        if source is not None and current is not None and (image is None or recorded != current):
            if not self.rebuild:
                raise StaleImage(_stale_message(self.image, source, recorded, current))
            self.image = self._build(source)
            image = self._image(missing_ok=False, source=source)
            recorded = _labels(image).get(SOURCE_LABEL)
        config = image.attrs.get("Config") or {}
        command = self.command or [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        # Without a folder to compare with, the label is the best identity; an image built by hand has
        # none, and its image id stands in.
        digest = recorded or image.id
        return FunctionIdentity("docker", self.function, digest, image=self.image, image_id=image.id,
                                command=list(command))

    def _image(self, *, missing_ok: bool, source: FunctionSource | None = None) -> Any:
        import docker.errors

        try:
            return self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            if missing_ok:
                return None
            # the folder's own build command (with --dir for a site's functions), else the library's
            hint = build_hint(source) if source is not None else f"airflow-dcache function build {self.function}"
            raise FunctionRunError(
                f"image {self.image} is not on the engine (pull policy is never); build it with: {hint}"
            ) from None
        except docker.errors.DockerException as exc:
            raise FunctionRunError(f"cannot inspect image {self.image}: {exc}") from exc

    def _build(self, source: FunctionSource) -> str:
        """Build ``source`` (and the base if missing) on this runtime's engine; returns the new tag."""
        import docker.errors

        log.info("%s=1: building the image of %s (%s)", REBUILD_ENV, source.name, source.digest)
        client = docker_client(self.docker_url)  # the default timeout: a base build takes minutes
        try:
            return build_function(client, source, build_base(client, log=log.info), log=log.debug)
        except (RuntimeError, OSError, subprocess.CalledProcessError, docker.errors.DockerException) as exc:
            raise FunctionRunError(f"function {source.name}: rebuilding its image failed: {exc}") from exc
        finally:
            client.close()

    def client_ip(self) -> str | None:
        # Host networking on a local engine: requests leave from the host's own addresses. Whether
        # that is loopback depends on the target, which the operator decides.
        return None

    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        import docker.errors
        import requests

        task_document = addressing.for_container(task_document)  # the sites as the container reaches them

        api = self.client.api
        try:
            created = api.create_container_from_config(self.container_config(self.image, env))
        except docker.errors.ImageNotFound:
            raise FunctionRunError(f"image {self.image} is not on the engine (pull policy is never)") from None
        except docker.errors.APIError as exc:
            raise FunctionRunError(f"cannot create a container from {self.image}: {exc.explanation}") from exc
        cid = created["Id"]
        with self._lock:
            self._container_id = cid
        started = now()
        timed_out = False
        exit_code: int | None = None
        try:
            sock = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
            raw = getattr(sock, "_sock", sock)
            if self._stop_requested.is_set():  # on_kill came before the container existed
                raw.close()
                return RunResult(None, b"", b"", now(), now(), killed=True)
            api.start(cid)
            try:
                raw.sendall(task_document)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the function exited without reading stdin; its exit code says why
            finally:
                raw.close()
            try:
                exit_code = int(api.wait(cid, timeout=max(1, int(timeout + 0.999)))["StatusCode"])
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True
                self._kill(cid)
                exit_code = self._exit_code(cid)
            ended = now()
            stdout = self._logs(cid, stdout=True, stderr=False, keep=STDOUT_KEEP_BYTES)
            stderr = self._logs(cid, stdout=False, stderr=True, keep=STDERR_KEEP_BYTES)
        finally:
            self._remove(cid)
            with self._lock:
                self._container_id = None
        killed = self._stop_requested.is_set()
        return RunResult(exit_code, stdout, stderr, started, ended, timed_out=timed_out, killed=killed)

    def start_warm(self, identity: FunctionIdentity, *, timeout: float) -> DockerWarmInstance:
        """A warm container of the identified image (by image id, so a retag cannot swap it), started now."""
        instance = DockerWarmInstance(self, identity.image_id or self.image)
        instance.start(timeout)
        return instance

    def container_config(self, image: str, env: dict[str, str], *,
                         labels: dict[str, str] | None = None) -> dict[str, Any]:
        """The one container shape both modes use: host network, read-only root, private /tmp, no caps."""
        api = self.client.api
        host_config = api.create_host_config(
            network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=2g,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            nano_cpus=int(self.cpus * 1e9) if self.cpus else None, mem_limit=self.memory,
        )
        config: dict[str, Any] = api.create_container_config(
            image, self.command, stdin_open=True, environment=env, working_dir="/tmp",
            user="65534:65534", host_config=host_config,
            labels={"org.airflow-dcache.function": self.function, **(labels or {})},
        )
        # EOF on the function's stdin once the attached client closes its side (no SDK keyword for it):
        # after the one document of a cold run, at the end of a warm instance
        config["StdinOnce"] = True
        return config

    def stop(self) -> None:
        self._stop_requested.set()
        with self._lock:
            cid = self._container_id
        if cid is not None:
            # Called from a SIGTERM handler on the thread blocked in ``wait``: kill from another thread.
            threading.Thread(target=self._kill, args=(cid,), name="fn-stop", daemon=True).start()

    # ------------------------------------------------------------------------------ helpers

    def _kill(self, cid: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):  # already stopped or gone
            self.client.api.kill(cid)

    def _exit_code(self, cid: str) -> int | None:
        import docker.errors

        try:
            return int(self.client.api.wait(cid, timeout=30)["StatusCode"])
        except Exception:
            try:
                return int(self.client.api.inspect_container(cid)["State"]["ExitCode"])
            except docker.errors.DockerException:
                return None

    def _logs(self, cid: str, *, stdout: bool, stderr: bool, keep: int) -> bytes:
        import docker.errors

        try:
            data = self.client.api.logs(cid, stdout=stdout, stderr=stderr, tail=20000)
        except docker.errors.APIError:
            return b""
        data = bytes(data)
        return data[-keep:]

    def _remove(self, cid: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            self.client.api.remove_container(cid, force=True)


class DockerWarmInstance(WarmInstance):
    """One warm container; documents and replies go through one attach stream (see :mod:`.warm`).

    The container has the same shape as a cold run's (host network, read-only root, private ``/tmp``,
    no capabilities, nobody user) and only the nonce in its environment: per-file values arrive with
    each document over stdin, so ``docker inspect`` shows no secret. It is removed when closed, killed
    or broken.
    """

    runtime = "docker"

    def __init__(self, owner: DockerRuntime, image: str) -> None:
        super().__init__(owner.function)
        self.owner = owner
        self.image = image
        self.cid: str | None = None
        self._sock: Any = None
        self._reader: threading.Thread | None = None

    def run(self, task_document: bytes, *, env: Mapping[str, str], timeout: float) -> RunResult:
        """As a cold container's run: the sites' URLs as the container reaches them, then the warm loop."""
        return super().run(addressing.for_container(task_document), env=env, timeout=timeout)

    def _spawn(self) -> None:
        import docker.errors

        api = self.owner.client.api
        config = self.owner.container_config(self.image, {WARM_ENV: self.nonce},
                                             labels={"org.airflow-dcache.warm": self.id})
        try:
            self.cid = api.create_container_from_config(config)["Id"]
        except docker.errors.ImageNotFound:
            raise FunctionRunError(f"image {self.image} is not on the engine (pull policy is never)") from None
        except docker.errors.APIError as exc:
            raise FunctionRunError(f"cannot create a container from {self.image}: {exc.explanation}") from exc
        try:
            sock = api.attach_socket(self.cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._sock = getattr(sock, "_sock", sock)
            self._reader = threading.Thread(target=self._demux, name=f"{self.id}-attach", daemon=True)
            self._reader.start()
            api.start(self.cid)
        except docker.errors.APIError as exc:
            self._release()
            raise FunctionRunError(f"cannot start a container from {self.image}: {exc.explanation}") from exc

    def _demux(self) -> None:
        """Split Docker's multiplexed attach stream (8-byte headers) into stdout frames and stderr log."""
        buffer = bytearray()
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buffer.extend(data)
                while len(buffer) >= 8:
                    kind, size = buffer[0], int.from_bytes(buffer[4:8], "big")
                    if len(buffer) < 8 + size:
                        break
                    payload = bytes(buffer[8:8 + size])
                    del buffer[:8 + size]
                    (self.stdout.feed if kind == 1 else self.logs.feed)(payload)
        finally:
            self.stdout.close()
            self.logs.close()

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise OSError("not attached")
        self._sock.sendall(data)

    def _close_input(self) -> None:
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_WR)

    def _kill(self) -> None:
        if self.cid is not None:
            self.owner._kill(self.cid)

    def _exit_code(self, wait: float) -> int | None:
        import docker.errors
        import requests

        if self.cid is None:
            return None
        try:
            return int(self.owner.client.api.wait(self.cid, timeout=max(1, int(wait + 0.999)))["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
        except docker.errors.DockerException:
            return None

    def _release(self) -> None:
        if self.cid is not None:
            self.owner._remove(self.cid)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout=EXIT_WAIT_SECONDS)


def _labels(image: Any) -> dict[str, str]:
    return dict((image.attrs.get("Config") or {}).get("Labels") or {})


def _stale_message(image: str, source: FunctionSource, recorded: str | None, current: str) -> str:
    if recorded is None:
        why = (f"image {image} of function {source.name} has no {SOURCE_LABEL} label, so it cannot be shown "
               f"to hold the code of {source.directory} ({current})")
    else:
        why = (f"image {image} of function {source.name} was built from source {recorded}, but "
               f"{source.directory} is now {current}")
    return (f"{why}; refusing to run old code. Rebuild it with: {build_hint(source)} "
            f"(or set {REBUILD_ENV}=1 to rebuild before running)")


def docker_available(docker_url: str | None = None) -> bool:
    """True when an engine answers at ``docker_url`` / ``$DOCKER_HOST`` / the project's socket."""
    try:

        client = docker_client(docker_url or os.environ.get("DOCKER_HOST"), timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False
