"""Helpers shared by the benchmarks in this directory.

The benchmarks are scripts, not tests: they start real servers as subprocesses, drive them with
external clients and report numbers. The parts every benchmark needs -- machine info for the JSON
report, a plain-text table, resident-memory sampling of a server process, port and process
handling -- live here so that the transfer benchmark and later ones (events, ...) report in the
same shape.

Everything here is Linux-specific on purpose (``/proc``); the benchmarks only run on Linux.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

MB = 1_000_000  # throughput and memory are reported in SI megabytes (10**6 bytes)
MIB = 1 << 20
GIB = 1 << 30
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------------------
# Sizes and statistics
# --------------------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": MIB, "G": GIB}


def parse_size(text: str) -> int:
    """Parse ``1M``/``64M``/``1G``/``512K``/``100`` into bytes (binary units, as file sizes are)."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = int(number) * _SIZE_UNITS[unit]
    except ValueError as exc:
        raise ValueError(f"bad size {text!r}: expected e.g. 1M, 64M, 1G") from exc
    if value <= 0:
        raise ValueError(f"bad size {text!r}: must be positive")
    return value


def format_size(n: int) -> str:
    """Inverse of :func:`parse_size` for whole units, so table rows read like the CLI arguments."""
    for suffix, unit in (("G", GIB), ("M", MIB), ("K", 1 << 10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return f"{n}B"


def median(values: Sequence[float]) -> float:
    """Median, because single slow repetitions (page-cache writeback, scheduling) skew means."""
    return float(statistics.median(values))


# --------------------------------------------------------------------------------------------------
# Output: table and JSON
# --------------------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Render a left/right aligned plain-text table (numbers right-aligned) for terminal output."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells[1:] if r[i] not in ("", "-")) and len(cells) > 1
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _looks_numeric(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True


def default_results_path(name: str) -> Path:
    """``benchmarks/results/<name>-<UTC timestamp>.json``; the directory is git-ignored."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_DIR / f"{name}-{stamp}.json"


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` atomically (temp file + rename) so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------------
# Machine info
# --------------------------------------------------------------------------------------------------


def command_version(argv: Sequence[str], timeout: float = 10.0) -> str | None:
    """First line of a ``--version``-style command (stdout or stderr: nginx prints to stderr)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def machine_info(tools: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Describe the machine so numbers from different runs/hosts can be compared honestly."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_bytes": _meminfo_bytes("MemTotal"),
        "kernel": platform.release(),
        "uname": " ".join(platform.uname()),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "hostname": socket.gethostname(),
        "load_average": list(os.getloadavg()),
        "timestamp_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    for name, argv in (tools or {}).items():
        info[f"{name}_version"] = command_version(argv)
    return info


def busy_warning(threshold: float = 0.5) -> str | None:
    """A warning when the 1-minute load says other work shares the CPUs: numbers will be noisy."""
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    if load <= threshold:
        return None
    return (
        f"warning: load average {load:.1f} on {cpus} CPUs -- other work is running, "
        "so throughput numbers will be noisy and lower than on an idle machine"
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _meminfo_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------------------------------
# Ports and processes
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def exit_on_termination(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks stop the servers and remove temp dirs.

    Python's default for these signals is to die at once, which would leave nginx and our server
    running. Only the main thread may install handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def free_port(host: str = LOOPBACK) -> int:
    """Ask the kernel for a free port. Racy in theory, fine for a benchmark on an idle machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll until something accepts TCP connections; fail fast if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL: a benchmark must never leave servers behind."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)
    except ProcessLookupError:
        return proc.poll()


def process_tree(pid: int, max_depth: int = 4) -> list[int]:
    """``pid`` and its descendants: a console-script wrapper or worker processes count as the server."""
    result = [pid]
    frontier = [pid]
    for _ in range(max_depth):
        children: list[int] = []
        for parent in frontier:
            children.extend(_children(parent))
        if not children:
            break
        result.extend(children)
        frontier = children
    return result


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            kids.extend(int(tok) for tok in text.split())
    except (OSError, ValueError):
        pass
    return kids


def read_status_bytes(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``, ...) in bytes, None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (``echo 5 > clear_refs``) so the peak belongs to the measured phase only.

    Needs the same user as the process (or root); if it fails the reported HWM is the process-lifetime
    peak, which is still an upper bound, and the sampled peak stays accurate.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


@dataclass
class RssStats:
    """Memory of a process tree during one measured phase, in bytes."""

    peak_sampled: int = 0
    peak_hwm: int | None = None
    samples: int = 0
    samples_alive: int = 0  # samples where at least one process of the tree could be read
    hwm_was_reset: bool = False
    pids: list[int] = field(default_factory=list)

    @property
    def peak(self) -> int:
        """The larger of the sampled peak and VmHWM: sampling can miss spikes shorter than its period."""
        return max(self.peak_sampled, self.peak_hwm or 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak,
            "peak_sampled_bytes": self.peak_sampled,
            "vm_hwm_bytes": self.peak_hwm,
            "vm_hwm_reset_before_phase": self.hwm_was_reset,
            "samples": self.samples,
            "samples_alive": self.samples_alive,
            "pids": self.pids,
        }


class RssSampler:
    """Sample the summed VmRSS of a process tree every ``interval`` seconds in a background thread.

    Use as a context manager around one measured phase; ``stats`` is filled in on exit. VmHWM is
    reset at the start (when permitted) and read at the end, to catch peaks between samples.
    """

    def __init__(self, pid: int, interval: float = 0.02, max_seconds: float = 3600.0) -> None:
        self.pid = pid
        self.interval = interval
        self.max_seconds = max_seconds  # hard bound on the thread's life, whatever the caller does
        self.stats = RssStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pids: list[int] = [pid]

    def __enter__(self) -> RssSampler:
        self._pids = process_tree(self.pid)
        self.stats = RssStats(pids=list(self._pids))
        self.stats.hwm_was_reset = all([reset_peak_rss(p) for p in self._pids])
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"rss-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample_once()
        hwms = [read_status_bytes(p, "VmHWM") for p in self._pids]
        known = [h for h in hwms if h is not None]
        self.stats.peak_hwm = sum(known) if known else None

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._sample_once()
            self._stop.wait(self.interval)

    def _sample_once(self) -> None:
        values = [read_status_bytes(p, "VmRSS") for p in self._pids]
        known = [v for v in values if v is not None]
        total = sum(known)
        self.stats.samples += 1
        self.stats.samples_alive += bool(known)
        self.stats.peak_sampled = max(self.stats.peak_sampled, total)


def run_async_benchmark(name: str, args: Any, run: Any, build_table: Any, *, tmp_dir: Path | None,
                        extra: Mapping[str, Any] | None = None, hide_settings: Sequence[str] = ()) -> int:
    """The frame of an asyncio benchmark: a scratch directory, run, print the table, write the JSON.

    ``run(args, base)`` is a coroutine function returning a dict with an ``errors`` list;
    ``build_table(result)`` returns ``(table, checks)``. Exit code: 2 on errors, 1 if a check failed.
    """
    import asyncio
    import shutil
    import tempfile

    root = tmp_dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    base = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=root))
    started = time.time()
    load_start = os.getloadavg()
    try:
        with exit_on_termination():
            result = asyncio.run(run(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table, checks = build_table(result)
    print(table)
    for error in result["errors"]:
        print(f"error: {error}", file=sys.stderr)
    out = args.out or default_results_path(name.replace("_", "-"))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in hide_settings}
    write_json(out, {"benchmark": name, "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg(),
                     "machine": machine_info(), "settings": settings, **(extra or {}),
                     "checks": checks, "results": result, "table": table,
                     "wall_seconds": round(time.time() - started, 1)})
    print(f"\nresults: {out}")
    if result["errors"]:
        return 2
    return 0 if checks and all(checks.values()) else 1
