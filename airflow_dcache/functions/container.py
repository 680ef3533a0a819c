"""The ``docker`` runtime: the function image on a real Docker engine, through the Docker SDK.

Containers run with ``--network host`` (the engine has no bridge), a read-only root file system with
a private ``/tmp``, no capabilities, ``no-new-privileges``, an optional CPU and memory limit, and
pull policy *never*: a missing image fails at once (``make function-images`` builds them). The task
document goes in on stdin through an attach socket, never in the environment (``docker inspect``
would show it). The container is removed after the run, on timeout and on ``stop()``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

from airflow_dcache.functions.images import docker_client
from airflow_dcache.functions.registry import IMAGE_REPOSITORY, SOURCE_LABEL, check_name
from airflow_dcache.functions.runtime import (
    STDOUT_KEEP_BYTES,
    FunctionIdentity,
    FunctionRunError,
    FunctionRuntime,
    RunResult,
    now,
)

STDERR_KEEP_BYTES = 64 * 1024


class DockerRuntime(FunctionRuntime):
    """Run a function image.

    :param function: function name; the image defaults to ``airflow-dcache/<function>:latest``.
    :param image: image reference to run instead.
    :param docker_url: engine socket (default ``$DOCKER_HOST`` or the project's engine socket).
    :param cpus: CPU limit (e.g. ``1.5``), ``None`` for no limit.
    :param memory: memory limit in Docker's notation (``"512m"``), ``None`` for no limit.
    :param command: command to run instead of the image's entry point.
    """

    name = "docker"

    def __init__(self, function: str, image: str | None = None, *, docker_url: str | None = None,
                 cpus: float | None = None, memory: str | None = None, command: list[str] | None = None) -> None:
        super().__init__()
        self.function = check_name(function)
        self.image = image or f"{IMAGE_REPOSITORY}/{function}:latest"
        self.docker_url = docker_url
        self.cpus = cpus
        self.memory = memory
        self.command = command
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
                    f"no Docker engine answers ({exc}); start one with scripts/docker-engine"
                ) from exc
        return self._client

    def identify(self) -> FunctionIdentity:
        import docker.errors

        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise FunctionRunError(
                f"image {self.image} is not on the engine (pull policy is never); build it with make function-images"
            ) from None
        except docker.errors.DockerException as exc:
            raise FunctionRunError(f"cannot inspect image {self.image}: {exc}") from exc
        config = image.attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        command = self.command or [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        digest = labels.get(SOURCE_LABEL) or image.id
        return FunctionIdentity("docker", self.function, digest, image=self.image, image_id=image.id,
                                command=list(command))

    def client_ip(self) -> str | None:
        # Host networking on a local engine: requests leave from the host's own addresses. Whether
        # that is loopback depends on the target, which the operator decides.
        return None

    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        import docker.errors
        import requests

        api = self.client.api
        host_config = api.create_host_config(
            network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=2g,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            nano_cpus=int(self.cpus * 1e9) if self.cpus else None, mem_limit=self.memory,
        )
        try:
            config = api.create_container_config(
                self.image, self.command, stdin_open=True, environment=env, working_dir="/tmp",
                user="65534:65534", host_config=host_config, labels={"org.airflow-dcache.function": self.function},
            )
            config["StdinOnce"] = True  # EOF on stdin once the task document is sent (no SDK keyword for it)
            created = api.create_container_from_config(config)
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


def docker_available(docker_url: str | None = None) -> bool:
    """True when an engine answers at ``docker_url`` / ``$DOCKER_HOST`` / the project's socket."""
    try:

        client = docker_client(docker_url or os.environ.get("DOCKER_HOST"), timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False
