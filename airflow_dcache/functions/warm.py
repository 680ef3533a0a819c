"""Warm functions: one long-lived instance runs many task documents, one after the other.

A cold run starts a process (or a container) per file and pays the interpreter start and the
function's imports (numpy, h5py) every time. A warm instance pays them once (its *cold start*, measured
from spawn to the function's ``ready`` frame) and then takes one task document per file, as
OpenWhisk's warm containers do. What a file gets does not change: its own task document with its
own macaroons, its own environment (the per-file ``env``, secrets included), its own private output
area and working directory, and its own activation record, which names the instance and its cold
start cost.

**The channel** is the instance's stdin and stdout, one JSON object per line (see the SDK,
``sdk/dcache_fn.py``, for the frames). Chosen over a unix socket in a tmpfs because it is the same
for a subprocess and a container (Docker's attach stream carries stdin/stdout/stderr, no mount of a
host directory into a read-only container, no socket file to clean up), it needs no new file in the
image, and the document and its secrets never touch a file system, the container's environment or
``docker inspect``. The SDK keeps private duplicates of fds 0 and 1 and points fd 1 at stderr, so
whatever a function prints is log, never a frame. The shared stderr stream is cut into one log per
document by marker lines that carry a per-instance nonce.

**Failures stay per file.** A non-zero status is that document's exit code and the instance goes
on. An instance that dies (crash, ``os._exit``, OOM kill), does not answer within the document's
timeout (it is killed) or answers a malformed frame is *broken*: that document fails with the reason,
the instance is discarded and the next document starts a new one (a new cold start). If no instance
can be started at all (an old function that does not use ``dcache_fn.main``, an image without the
warm loop), the pool runs every document cold, as before, and says so in the records.

:class:`WarmPool` is a :class:`~airflow_dcache.functions.runtime.FunctionRuntime`, so
:class:`~airflow_dcache.functions.activation.Activation` runs on it unchanged; several threads may
call :meth:`WarmPool.run` at once, each getting an instance of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import statistics
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from airflow_dcache.functions.runtime import (
    MAX_RESULT_BYTES,
    FunctionIdentity,
    FunctionRunError,
    FunctionRuntime,
    RunResult,
    WarmUnsupported,
    keep_tail,
    now,
)

WARM_ENV = "DCACHE_FN_WARM"
"""Set (to the instance's nonce) in a warm instance's environment: the SDK's ``main`` then serves documents."""
PROTOCOL = 1
MAX_FRAME_BYTES = MAX_RESULT_BYTES + 64 * 1024
"""A reply frame is the result (at most 1 MiB) plus a few fields; a longer line is a broken instance."""
LOG_KEEP_BYTES = 64 * 1024
"""Log kept per document (its tail), as the cold runtimes keep of stderr."""
MARKER = b"\x1edcache-fn:"
LOG_SETTLE_SECONDS = 2.0
"""How long to wait, after a reply, for the document's end marker to come through the stderr stream."""
EXIT_WAIT_SECONDS = 5.0
DEFAULT_INSTANCES = 3
WARM_INSTANCES_ENV = "AIRFLOW_DCACHE_WARM_INSTANCES"
"""Warm instances per chunk (``0``: run every file cold); the default is ``min(concurrency, 3)``."""

log = logging.getLogger(__name__)


def pool_size(requested: int | str | None, concurrency: int) -> int:
    """Instances per chunk: ``requested``, else ``$AIRFLOW_DCACHE_WARM_INSTANCES``, else ``min(concurrency, 3)``.

    Small on purpose: each instance holds a loaded interpreter (hundreds of MB for numpy/h5py), and on
    a worker a few warm instances already keep its cores busy.
    """
    import os

    value: Any = requested if requested is not None else os.environ.get(WARM_INSTANCES_ENV)
    if value is None or (isinstance(value, str) and not value.strip()):
        return max(1, min(concurrency, DEFAULT_INSTANCES))
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ValueError(f"warm instances ({WARM_INSTANCES_ENV}): expected a whole number >= 0, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------ streams


class LineFeed:
    """Bytes in, protocol lines out on a queue; ``None`` at EOF, ``b""`` for a line over the limit."""

    def __init__(self, out: queue.Queue[bytes | None], limit: int = MAX_FRAME_BYTES) -> None:
        self.out = out
        self.limit = limit
        self._partial = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> None:
        self._partial.extend(data)
        while True:
            cut = self._partial.find(b"\n")
            if cut < 0:
                break
            line = bytes(self._partial[:cut])
            del self._partial[: cut + 1]
            if self._overflow:
                self._overflow = False
                continue
            if line.strip():
                self.out.put(line)
        if len(self._partial) > self.limit:
            self._partial.clear()
            if not self._overflow:
                self._overflow = True
                self.out.put(b"")  # the reader sees a broken frame at once, not a timeout later

    def close(self) -> None:
        if self._partial.strip() and not self._overflow:
            self.out.put(bytes(self._partial))
        self._partial.clear()
        self.out.put(None)


class LogSegments:
    """The instance's stderr, cut into one log per document at the marker lines the SDK writes.

    ``take(tag)`` waits (bounded) until the marker ``tag`` has come through, then returns what was
    logged before it since the previous cut; at EOF or after the wait it returns whatever is there and
    discards the rest of that segment when its marker arrives late. Each segment keeps its last
    :data:`LOG_KEEP_BYTES`.
    """

    def __init__(self, nonce: str, keep: int = LOG_KEEP_BYTES) -> None:
        self._marker = MARKER + nonce.encode() + b":"
        self._keep = keep
        self._partial = bytearray()
        self._current = bytearray()
        self._done: dict[str, bytes] = {}
        self._abandoned: set[str] = set()
        self._closed = False
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._partial.extend(data)
            while True:
                cut = self._partial.find(b"\n")
                if cut < 0:
                    break
                line = bytes(self._partial[: cut + 1])
                del self._partial[: cut + 1]
                if line.startswith(self._marker):
                    tag = line[len(self._marker):].strip().decode("ascii", "replace")
                    body = bytes(self._current)
                    self._current.clear()
                    if tag in self._abandoned:  # the rest of a segment already handed out: never another's
                        self._abandoned.discard(tag)
                        continue
                    # the SDK starts the marker on a fresh line: drop that one newline again
                    self._done[tag] = body[:-1] if body.endswith(b"\n") else body
                    self._cond.notify_all()
                else:
                    keep_tail(self._current, line, self._keep)
            if len(self._partial) > self._keep:  # a very long line without newline: keep its tail
                keep_tail(self._current, bytes(self._partial), self._keep)
                self._partial.clear()

    def close(self) -> None:
        with self._cond:
            keep_tail(self._current, bytes(self._partial), self._keep)
            self._partial.clear()
            self._closed = True
            self._cond.notify_all()

    def take(self, tag: str, wait: float) -> bytes:
        """The segment that ends at marker ``tag`` (waiting up to ``wait`` s), else all that is left."""
        with self._cond:
            self._cond.wait_for(lambda: tag in self._done or self._closed, timeout=max(0.0, wait))
            if tag in self._done:
                return self._done.pop(tag)
            # The marker is late (a loaded machine) or will never come (a crash): hand out what there
            # is, and drop the segment's late rest when its marker does come, so that no later
            # document's log (masked with that document's secrets only) carries this one's lines.
            rest = bytes(self._current) + bytes(self._partial)
            self._current.clear()
            self._partial.clear()
            self._done.clear()
            if not self._closed:
                self._abandoned.add(tag)
            return rest


# ----------------------------------------------------------------------------------- instance


class WarmInstance(ABC):
    """One long-lived process or container running one function; :meth:`run` takes one document at a time.

    Subclasses provide the transport (spawn, send, kill, exit code, release); the protocol is here so
    both runtimes judge an instance the same way.
    """

    runtime = ""

    def __init__(self, function: str) -> None:
        self.function = function
        self.id = f"{self.runtime}-{uuid.uuid4().hex[:12]}"
        self.nonce = secrets.token_hex(8)
        self.frames: queue.Queue[bytes | None] = queue.Queue()
        self.stdout = LineFeed(self.frames)
        self.logs = LogSegments(self.nonce)
        self.cold_start: float | None = None
        self.started = now()
        self.documents = 0
        self.broken: str | None = None
        self.startup_log = b""
        self._run_lock = threading.Lock()
        self._killed = threading.Event()

    # -------------------------------------------------------------------------- transport

    @abstractmethod
    def _spawn(self) -> None:
        """Start the process/container with :data:`WARM_ENV` set to :attr:`nonce`; feed :attr:`stdout` and
        :attr:`logs` from reader threads and close both at EOF."""

    @abstractmethod
    def _send(self, data: bytes) -> None:
        """Write to the instance's stdin (``OSError`` when it is gone)."""

    @abstractmethod
    def _close_input(self) -> None:
        """EOF on the instance's stdin: the SDK's loop then exits 0."""

    @abstractmethod
    def _kill(self) -> None:
        """Kill at once (safe twice, from any thread)."""

    @abstractmethod
    def _exit_code(self, wait: float) -> int | None:
        """The exit status once it has exited (waiting up to ``wait`` s), else ``None``."""

    @abstractmethod
    def _release(self) -> None:
        """Free what the instance holds (reap, remove the container, delete its directory)."""

    # -------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float) -> None:
        """Spawn and wait for the ``ready`` frame; :attr:`cold_start` is the seconds that took.

        :raises WarmUnsupported: it exited, answered something else or said nothing within ``timeout``.
        """
        begin = time.monotonic()
        try:
            self._spawn()
        except FunctionRunError:
            raise
        except OSError as exc:
            raise WarmUnsupported(f"cannot start a warm instance of {self.function}: {exc}") from exc
        kind, frame, reason = self._next(begin + timeout)
        if kind != "frame" or frame is None or frame.get("type") != "ready":
            if kind == "timeout":
                reason = f"no ready frame within {timeout:.0f} s"
            elif kind == "eof":
                reason = f"exited with code {self._exit_code(EXIT_WAIT_SECONDS)} before it was ready"
            elif kind == "frame":
                reason = "its first frame is not a ready frame"
            self._kill()
            text = self.logs.take("ready", wait=0.5 if kind == "eof" else 0).decode("utf-8", "replace")
            self._release()
            tail = "\n".join(text.strip().splitlines()[-10:])
            raise WarmUnsupported(f"warm instance of {self.function}: {reason}" + (f"\n{tail}" if tail else ""))
        self.cold_start = time.monotonic() - begin
        self.startup_log = self.logs.take("ready", wait=LOG_SETTLE_SECONDS)
        if self.startup_log.strip():
            log.debug("warm instance %s started with log: %s", self.id,
                      self.startup_log[-2000:].decode("utf-8", "replace"))

    def describe(self, document: int | None = None) -> dict[str, Any]:
        """What an activation record says about the instance that ran it."""
        info: dict[str, Any] = {"id": self.id, "runtime": self.runtime,
                                "cold_start_seconds": round(self.cold_start, 3) if self.cold_start is not None
                                else None, "started": self.started.isoformat(timespec="milliseconds")}
        if document is not None:
            info["document"] = document
        return info

    def run(self, task_document: bytes, *, env: Mapping[str, str], timeout: float) -> RunResult:
        """Run one document; never raises for a failing function (a broken instance sets :attr:`broken`)."""
        with self._run_lock:
            return self._run(task_document, env, timeout)

    def _run(self, task_document: bytes, env: Mapping[str, str], timeout: float) -> RunResult:
        started = now()
        if self.broken:
            return RunResult(None, b"", b"", started, now(), failure=f"warm instance {self.id} is broken: "
                             f"{self.broken}", warm=self.describe())
        self.documents += 1
        seq = self.documents
        warm = self.describe(seq)
        try:
            document = json.loads(task_document)
        except ValueError:
            return RunResult(None, b"", b"", started, now(), failure="the task document is not JSON", warm=warm)
        frame = json.dumps({"seq": seq, "task": document, "env": dict(env)}, separators=(",", ":")).encode()
        with contextlib.suppress(OSError):  # it is gone; reading says how
            self._send(frame + b"\n")
        kind, reply, reason = self._next(time.monotonic() + timeout)
        if kind == "frame" and reply is not None and not (reply.get("type") == "done" and reply.get("seq") == seq
                                                           and isinstance(reply.get("status"), int)):
            kind, reason = "bad", f"a reply that is not the answer to document {seq}"
        if kind == "frame" and reply is not None:
            logs = self.logs.take(f"end:{seq}", wait=LOG_SETTLE_SECONDS)
            status = int(reply["status"])
            stdout = b""
            if status == 0:
                stdout = b"\n" + json.dumps(reply.get("result"), separators=(",", ":")).encode() + b"\n"
            return RunResult(status, stdout, logs, started, now(), warm=warm)
        # broken: timed out, died, or said something that is not a reply
        timed_out = kind == "timeout"
        if kind != "eof":
            self._kill()
        code = self._exit_code(EXIT_WAIT_SECONDS)
        logs = self.logs.take(f"end:{seq}", wait=LOG_SETTLE_SECONDS)
        failure: str | None = None
        if timed_out:  # the exit code cannot say it, but ``timed_out`` does
            self.broken = f"timed out after {timeout:.0f} s on document {seq} (killed)"
        elif kind == "eof":
            failure = (f"the warm instance {self.id} ended (exit code {code}) while running this document"
                       + ("" if self._killed.is_set() else "; it is replaced for the next file"))
            self.broken = failure
        else:
            failure = f"the warm instance {self.id} answered with a malformed frame ({reason}); it is replaced"
            self.broken = failure
        return RunResult(code, b"", logs, started, now(), timed_out=timed_out, killed=self._killed.is_set(),
                         failure=failure, warm=warm)

    def _next(self, deadline: float) -> tuple[str, dict[str, Any] | None, str | None]:
        """The next frame: ``("frame", dict, None)``, ``("eof"|"timeout", None, None)`` or ``("bad", None, why)``."""
        try:
            line = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return "timeout", None, None
        if line is None:
            self.frames.put(None)  # EOF stays EOF for whoever reads next
            return "eof", None, None
        if not line:
            return "bad", None, f"a line longer than {MAX_FRAME_BYTES} bytes"
        try:
            frame = json.loads(line)
        except ValueError:
            return "bad", None, "a line that is not JSON"
        if not isinstance(frame, dict):
            return "bad", None, "a line that is not a JSON object"
        return "frame", frame, None

    def kill(self) -> None:
        """Stop it now (``on_kill``): a document in progress fails as killed."""
        self._killed.set()
        self._kill()

    def close(self) -> None:
        """EOF on stdin, a short wait for the loop to exit, then kill; always releases."""
        try:
            if not self.broken and not self._killed.is_set():
                with contextlib.suppress(OSError):
                    self._close_input()
                if self._exit_code(EXIT_WAIT_SECONDS) is None:
                    self._kill()
            else:
                self._kill()
        finally:
            self._release()


# --------------------------------------------------------------------------------------- pool


class WarmPool(FunctionRuntime):
    """A :class:`FunctionRuntime` that runs documents on up to ``size`` warm instances, started on demand.

    :param make: a new runtime object of the function (``local`` or ``docker``); the pool identifies
        the function once with the first one (per chunk, not per file) and starts instances from them.
    :param size: at most this many instances at once; ``0`` runs every document cold (a new runtime
        object per document, as :class:`~airflow_dcache.functions.activation.Activation` always did).
    :param start_timeout: bound on one cold start (default: the document's timeout).
    """

    def __init__(self, make: Callable[[], FunctionRuntime], size: int, *, start_timeout: float | None = None) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"size: expected >= 0, got {size}")
        self.make = make
        self.size = size
        self.start_timeout = start_timeout
        self.primary = make()
        self.name = self.primary.name
        self._identity: FunctionIdentity | None = None
        self._identify_error: BaseException | None = None
        self._cond = threading.Condition()
        self._idle: list[WarmInstance] = []
        self._all: set[WarmInstance] = set()
        self._cold: set[FunctionRuntime] = set()
        self._starting = 0
        self.fallback: str | None = None if size else "warm instances are switched off (0 per chunk)"
        self.cold_starts: list[float] = []
        self.replaced = 0
        self.documents = 0

    def identify(self) -> FunctionIdentity:
        """Once per pool (per chunk): the image check and source digest are not repeated per file.

        A failure (missing or stale image) is kept too, so every file fails with that same reason
        without asking the engine again.
        """
        with self._cond:
            if self._identity is None and self._identify_error is None:
                try:
                    self._identity = self.primary.identify()
                except (FunctionRunError, ValueError) as exc:
                    self._identify_error = exc
            if self._identify_error is not None:
                raise self._identify_error
            assert self._identity is not None
            return self._identity

    def client_ip(self) -> str | None:
        return self.primary.client_ip()

    def run(self, task_document: bytes, *, env: dict[str, str], timeout: float) -> RunResult:
        if self._stop_requested.is_set():
            return RunResult(None, b"", b"", now(), now(), killed=True)
        instance = self._acquire(timeout)
        if instance is None:
            return self._run_cold(task_document, env, timeout)
        try:
            result = instance.run(task_document, env=env, timeout=timeout)
        finally:
            self._give_back(instance)
        with self._cond:
            self.documents += 1
        if self._stop_requested.is_set():
            result.killed = True
        return result

    def _acquire(self, timeout: float) -> WarmInstance | None:
        """An idle instance, a new one (its cold start now), or ``None`` to run cold."""
        deadline = time.monotonic() + max(timeout, 1.0)
        with self._cond:
            while True:
                if self.fallback is not None:
                    return None
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._starting < self.size:
                    self._starting += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:  # more callers than instances, and none came back in time: run this one cold
                    return None
                self._cond.wait(left)
        identity = self.identify()
        try:
            instance = self.make().start_warm(identity, timeout=self.start_timeout or timeout)
        except WarmUnsupported as exc:
            with self._cond:
                self._starting -= 1
                if self.fallback is None and not self._all:
                    self.fallback = str(exc)
                    log.warning("%s runs cold, one start per file: %s", identity.name, exc)
                self._cond.notify_all()
            return None
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting -= 1
            self._all.add(instance)
            if instance.cold_start is not None:
                self.cold_starts.append(instance.cold_start)
        log.info("warm instance %s of %s ready: cold start %.3f s", instance.id, identity.name,
                 instance.cold_start or 0.0)
        if self._stop_requested.is_set():
            instance.kill()
        return instance

    def _give_back(self, instance: WarmInstance) -> None:
        if instance.broken or self._stop_requested.is_set():
            log.warning("warm instance %s is discarded: %s", instance.id, instance.broken or "stopped")
            with self._cond:
                self._all.discard(instance)
                if instance.broken:
                    self.replaced += 1
                self._cond.notify_all()
            instance.close()
            return
        with self._cond:
            self._idle.append(instance)
            self._cond.notify_all()

    def _run_cold(self, task_document: bytes, env: dict[str, str], timeout: float) -> RunResult:
        runtime = self.make()
        with self._cond:
            self._cold.add(runtime)
        try:
            if self._stop_requested.is_set():
                runtime.stop()
            result = runtime.run(task_document, env=env, timeout=timeout)
        finally:
            with self._cond:
                self._cold.discard(runtime)
        result.warm = {"fallback": self.fallback} if self.fallback else None
        return result

    def stop(self) -> None:
        """``on_kill``: kill every instance and cold run (from a signal handler: never waits)."""
        self._stop_requested.set()
        with self._cond:
            instances = list(self._all)
            colds = list(self._cold)
        for runtime in colds:
            runtime.stop()
        def kill_all() -> None:
            for instance in instances:
                instance.kill()

        if instances:
            threading.Thread(target=kill_all, name="fn-stop", daemon=True).start()

    def close(self) -> None:
        """End every instance (EOF, then kill); call when the chunk is done."""
        with self._cond:
            instances = list(self._all)
            self._all.clear()
            self._idle.clear()
        for instance in instances:
            try:
                instance.close()
            except Exception as exc:  # a container the engine lost: nothing left to free
                log.warning("closing warm instance %s: %s", instance.id, exc)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Cold starts (count, seconds p50/max), documents and replaced instances; for logs and benchmarks."""
        with self._cond:
            starts = list(self.cold_starts)
            return {
                "instances_started": len(starts), "documents": self.documents, "replaced": self.replaced,
                "cold_start_seconds": {"p50": round(statistics.median(starts), 3) if starts else None,
                                       "max": round(max(starts), 3) if starts else None},
                "fallback": self.fallback, "size": self.size,
            }
