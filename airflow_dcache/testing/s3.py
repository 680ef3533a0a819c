"""An S3-protocol server on loopback (moto's standalone server), so a test broker can keep its log across restarts.

tansu's only storage engines in the wheel's build are memory and S3 (``FeatureNotEnabled`` for postgres
and libsql). With its log in S3, a tansu restart keeps the topics, the records and the committed
consumer-group offsets, as a restart of a real Kafka broker does; that is what a broker-restart fault
test needs. The S3 server itself lives only as long as the test's process and keeps objects in memory.

moto runs as a subprocess from an interpreter that can import ``moto.server`` (and ``flask``):
``$AIRFLOW_DCACHE_S3_PYTHON``, else ``.venv-s3`` in the current directory (the checkout, where
``scripts/bootstrap`` makes it; its own venv because botocore pins ``python-dateutil<3``), else the
current interpreter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
#: Credentials of the throw-away server (moto accepts any); never a real secret.
ACCESS_KEY = "airflow-dcache-tests"


def s3_python() -> str | None:
    """An interpreter that can run ``moto.server``, or ``None`` (the caller skips)."""
    candidates = [os.environ.get("AIRFLOW_DCACHE_S3_PYTHON", "")]
    candidates.append(str(Path.cwd() / ".venv-s3" / "bin" / "python"))
    candidates.append(sys.executable)
    for python in filter(None, candidates):
        if not os.access(python, os.X_OK):
            continue
        probe = subprocess.run([python, "-c", "import moto.server, flask"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return python
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running moto S3 server: ``endpoint``, ``create_bucket`` and the environment tansu needs."""

    python: str
    workdir: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What an S3 client (tansu's object store) reads to reach this server over plain HTTP."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ACCESS_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "moto.log", "ab") as log:
            self.process = subprocess.Popen([self.python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}; see {self.workdir / 'moto.log'}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.endpoint + "/", timeout=1):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"moto not answering on {self.endpoint} after {START_TIMEOUT:.0f} s")

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"creating bucket {name}: HTTP {response.status}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
