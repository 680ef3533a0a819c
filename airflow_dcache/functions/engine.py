"""The project's private Docker engine: start (or find), stop and check it, from an installed package.

The function runner's engine has its own data root, exec root, pid file and socket, so it never touches
a system Docker, and no network plumbing (``--bridge=none --iptables=false --ip-masq=false``): containers
use ``--network host`` and talk to loopback services only. Starting it needs root and ``dockerd``
(``apt-get install docker.io``). Overridable: ``$AIRFLOW_DCACHE_DOCKER_ROOT`` (state directory),
``$AIRFLOW_DCACHE_DOCKER_SOCK`` (socket path).

``airflow-dcache function engine start|stop|status`` and ``scripts/docker-engine`` (a checkout's wrapper)
run :func:`main`; ``start`` and ``status`` print ``DOCKER_HOST=unix://...`` on stdout, which callers
(the demo, the tests) read. Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "AIRFLOW_DCACHE_DOCKER_ROOT"
SOCK_ENV = "AIRFLOW_DCACHE_DOCKER_SOCK"
DEFAULT_ROOT = "/var/lib/airflow-dcache-docker"
DEFAULT_SOCK = "/run/airflow-dcache-docker.sock"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class EngineError(Exception):
    """The engine cannot be started (not root, no dockerd, did not answer in time)."""


@dataclass(frozen=True)
class Engine:
    """Where the private engine keeps its state and listens."""

    root: Path
    sock: Path

    @classmethod
    def from_env(cls) -> Engine:
        return cls(Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT), Path(os.environ.get(SOCK_ENV) or DEFAULT_SOCK))

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value of this engine."""
        return f"unix://{self.sock}"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def answers(self, timeout: float = 3.0) -> bool:
        """The engine's ``/_ping`` over its socket returns 200."""
        return ping(str(self.sock), timeout)

    def pid(self) -> int | None:
        """The pid in the pid file when that process still exists and is a ``dockerd``.

        The state directory outlives reboots and container restarts, where pids are reused at once: a
        pid that now belongs to another program is a stale file, never something to signal.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:
            name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return pid if name == "dockerd" else None

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start dockerd unless an engine answers already (idempotent); returns ``DOCKER_HOST``."""
        if self.answers():
            return self.host
        if os.geteuid() != 0:
            raise EngineError("dockerd needs root")
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineError("dockerd not installed (apt-get install docker.io)")
        for directory in (self.root / "data", self.root / "exec", self.sock.parent):
            directory.mkdir(parents=True, exist_ok=True)
        running = self.pid()
        if running is None:
            self.pidfile.unlink(missing_ok=True)  # a stale pid file from a killed engine, if any
            self.sock.unlink(missing_ok=True)
            self._spawn(dockerd)
        # else: our engine runs but is slow to answer (busy, starting): wait for it, never start a second
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return self.host
            time.sleep(0.5)
        raise EngineError(f"dockerd{f' (pid {running})' if running else ''} did not answer on {self.sock} "
                          f"within {timeout:.0f} s; last log lines:\n" + _tail(self.log, 20))

    def _spawn(self, dockerd: str) -> None:
        with open(self.log, "ab") as log, open(os.devnull, "rb") as devnull:
            # A session of its own (setsid): the engine outlives this command and its terminal.
            subprocess.Popen(
                [dockerd, "--host", self.host, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile),
                 "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--userland-proxy=false"],
                stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the engine this module started (by its pid file; nothing else)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


def ping(sock: str, timeout: float = 3.0) -> bool:
    """``GET /_ping`` on a Docker socket; True on HTTP 200."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="start", choices=("start", "stop", "status"),
                        help="start if needed and print DOCKER_HOST (default); stop the engine started here; "
                             "status: exit 0 when it answers")


def run(args: argparse.Namespace, prog: str = "docker-engine") -> int:
    engine = Engine.from_env()
    if args.action == "status":
        if engine.answers():
            print(f"DOCKER_HOST={engine.host}")
            return 0
        print(f"docker engine not answering on {engine.sock}", file=sys.stderr)
        return 1
    if args.action == "stop":
        engine.stop()
        return 0
    try:
        print(f"DOCKER_HOST={engine.start()}")
    except (EngineError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker-engine", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
