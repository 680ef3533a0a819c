"""The ``local`` runtime: the function's ``main.py`` as a subprocess of the worker.

For machines without Docker and for the embedded demo. The function gets a fresh working directory,
a minimal environment (never the worker's: it holds ``AIRFLOW_CONN_*`` passwords) and the task
document on stdin. This is not a sandbox; isolation is what the ``docker`` runtime adds. The function
runs in its own process group so a timeout or ``on_kill`` ends everything it spawned (ffmpeg). A *warm*
process (:class:`LocalWarmInstance`, :mod:`airflow_dcache.functions.warm`) serves a chunk's task
documents one after the other instead of one process per file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_dcache.functions.registry import SDK_DIR, FunctionSource, find_function
from airflow_dcache.functions.runtime import (
    LOG_TAIL_BYTES,
    STDOUT_KEEP_BYTES,
    FunctionIdentity,
    FunctionRunError,
    FunctionRuntime,
    RunResult,
    keep_tail,
    now,
)
from airflow_dcache.functions.warm import WARM_ENV, WarmInstance

STDERR_KEEP_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 5.0


class LocalRuntime(FunctionRuntime):
    """Run ``<functions dir>/<name>/main.py`` with ``python`` (default: the worker's interpreter).

    :param function: function name (directory under ``functions_dir``).
    :param functions_dir: where function directories live (default: ``$AIRFLOW_DCACHE_FUNCTIONS_DIR``
        or the repository's ``functions/``).
    :param python: interpreter to run the function with.
    """

    name = "local"

    def __init__(self, function: str, functions_dir: str | os.PathLike[str] | None = None,
                 python: str | None = None) -> None:
        super().__init__()
        self.function = function
        self.functions_dir = functions_dir
        self.python = python or sys.executable
        self._source: FunctionSource | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()  # re-entered when a signal handler calls stop()

    @property
    def source(self) -> FunctionSource:
        if self._source is None:
            self._source = find_function(self.function, self.functions_dir)
        return self._source

    def identify(self) -> FunctionIdentity:
        src = self.source
        return FunctionIdentity("local", src.name, src.digest, command=[Path(self.python).name, "main.py"])

    def client_ip(self) -> str | None:
        return None  # the worker's own address; only the operator knows whether it is loopback

    def child_env(self, workdir: str, env: Mapping[str, str]) -> dict[str, str]:
        """The function's whole environment: a minimal one (never the worker's), then ``env``."""
        src = self.source
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join([str(src.directory), str(SDK_DIR)]),
            **env,
        }

    def start_warm(self, identity: FunctionIdentity, *, timeout: float) -> LocalWarmInstance:
        """A warm instance: one ``main.py`` process serving documents (the SDK's loop), started now."""
        instance = LocalWarmInstance(self)
        instance.start(timeout)
        return instance

    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        src = self.source
        with tempfile.TemporaryDirectory(prefix=f"fn-{src.name}-") as workdir:
            child_env = self.child_env(workdir, env)
            stdout, stderr = bytearray(), bytearray()
            started = now()
            try:
                proc = subprocess.Popen(
                    [self.python, str(src.entrypoint)], cwd=workdir, env=child_env, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                )
            except OSError as exc:
                raise FunctionRunError(f"cannot start {self.python}: {exc}") from exc
            with self._lock:
                self._proc = proc
            if self._stop_requested.is_set():  # on_kill came before the process existed
                self._terminate(proc)
            readers = [
                threading.Thread(target=_drain, args=(proc.stdout, stdout, STDOUT_KEEP_BYTES), daemon=True),
                threading.Thread(target=_drain, args=(proc.stderr, stderr, STDERR_KEEP_BYTES), daemon=True),
            ]
            for t in readers:
                t.start()
            try:
                assert proc.stdin is not None
                proc.stdin.write(task_document)
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # the function exited without reading; its exit code tells why
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._terminate(proc)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # nothing the function spawned outlives it
            for t in readers:
                t.join(timeout=KILL_GRACE_SECONDS)
            with self._lock:
                self._proc = None
            killed = self._stop_requested.is_set()
            return RunResult(proc.returncode, bytes(stdout), bytes(stderr)[-max(LOG_TAIL_BYTES, STDERR_KEEP_BYTES):],
                             started, now(), timed_out=timed_out, killed=killed)

    def stop(self) -> None:
        self._stop_requested.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            # on_kill runs in a SIGTERM handler on the thread that is waiting for the process: only
            # hand the work to another thread, never wait here.
            threading.Thread(target=self._terminate, args=(proc,), name="fn-stop", daemon=True).start()

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, SIGKILL after a grace period."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                proc.wait(timeout=KILL_GRACE_SECONDS)
                # the leader is gone; make sure no child of the group survives
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            except subprocess.TimeoutExpired:
                continue


class LocalWarmInstance(WarmInstance):
    """One warm ``main.py`` process in its own process group and directory (HOME, TMPDIR); see :mod:`.warm`.

    Each document gets a fresh subdirectory of it from the SDK; the whole directory goes when the
    instance does. A kill ends the process group, so nothing the function spawned outlives it.
    """

    runtime = "local"

    def __init__(self, runtime: LocalRuntime) -> None:
        super().__init__(runtime.source.name)
        self.owner = runtime
        self.workdir = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []

    def _spawn(self) -> None:
        src = self.owner.source
        self.workdir = tempfile.mkdtemp(prefix=f"fn-{src.name}-warm-")
        env = self.owner.child_env(self.workdir, {WARM_ENV: self.nonce})
        try:
            proc = subprocess.Popen(
                [self.owner.python, str(src.entrypoint)], cwd=self.workdir, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise FunctionRunError(f"cannot start {self.owner.python}: {exc}") from exc
        self._proc = proc
        self._readers = [
            threading.Thread(target=_pump, args=(proc.stdout, self.stdout.feed, self.stdout.close),
                             name=f"{self.id}-out", daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, self.logs.feed, self.logs.close),
                             name=f"{self.id}-err", daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _send(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _close_input(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _exit_code(self, wait: float) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def _release(self) -> None:
        proc = self._proc
        if proc is not None:
            self._kill()  # the group: whatever a document spawned and left behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_SECONDS)
            for t in self._readers:
                t.join(timeout=KILL_GRACE_SECONDS)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _pump(stream: Any, feed: Callable[[bytes], None], close: Callable[[], None]) -> None:
    """Hand what ``stream`` yields to ``feed`` until EOF, then ``close()``."""
    read = getattr(stream, "read1", None) or stream.read
    try:
        while True:
            try:
                chunk = read(65536)
            except (OSError, ValueError):  # closed under us by _release
                break
            if not chunk:
                break
            feed(chunk)
    finally:
        close()


def _drain(stream: Any, buffer: bytearray, limit: int) -> None:
    read = getattr(stream, "read1", None) or stream.read
    while True:
        chunk = read(65536)
        if not chunk:
            break
        keep_tail(buffer, chunk, limit)
