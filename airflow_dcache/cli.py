"""The ``airflow-dcache`` command: ``server``, ``demo``, ``topology``, ``function``, and ``bench`` in a checkout.

The benchmarks live in the repository's ``benchmarks/`` (they compare against nginx, time the test
service, write ``benchmarks/results/``), not in the package; ``bench`` is therefore only offered when
that directory sits next to the package, and an installed wheel has no such command.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
BENCHMARKS = ("transfer", "events", "billing", "trigger_events", "trigger_billing", "pipeline", "trigger_start",
              "functions", "distributed")


def benchmarks_available() -> bool:
    """True in a source checkout (``benchmarks/`` beside the package), False for an installed wheel."""
    return all((BENCHMARKS_DIR / f"{name}.py").is_file() for name in BENCHMARKS)


def _bench(args: argparse.Namespace) -> int:
    script = BENCHMARKS_DIR / f"{args.name}.py"
    sys.argv = [str(script), *args.rest]
    module = runpy.run_path(str(script))
    return int(module["main"](args.rest))


def _missing_extra(sub: Any, name: str, help_text: str, exc: ImportError) -> None:
    """A subcommand that explains which extra to install instead of failing every other command."""

    def explain(_args: argparse.Namespace) -> int:
        print(f"error: '{name}' needs the bundled service's dependencies ({exc}); "
              "install them with: pip install 'airflow-dcache[server,hdf5]'", file=sys.stderr)
        return 2

    parser = sub.add_parser(name, help=f"{help_text} (needs the [server] extra)")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=explain)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand; returns its exit status.

    :param argv: command-line arguments without the program name.
    """
    parser = argparse.ArgumentParser(
        prog="airflow-dcache",
        description="The dCache-compatible service, the demo, the function kit and (in a checkout) the benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    try:
        from airflow_dcache.server import main as server_main
    except ImportError as exc:  # the [server] extra (aiohttp) is not installed
        _missing_extra(sub, "server", "run the dCache-compatible service", exc)
    else:
        server = sub.add_parser("server", help="run the dCache-compatible service")
        server_main.add_arguments(server)
        server.set_defaults(func=server_main.run)

    try:
        from airflow_dcache import demo
    except ImportError as exc:
        _missing_extra(sub, "demo", "run the demo (service with sample users and data)", exc)
    else:
        demo_parser = sub.add_parser("demo", help="run the demo (service with sample users and data)")
        demo.add_arguments(demo_parser)
        demo_parser.set_defaults(func=demo.run)

    try:
        from airflow_dcache.testing import topology
    except ImportError as exc:
        _missing_extra(sub, "topology", "run Airflow's distributed topology on loopback", exc)
    else:
        topo_parser = sub.add_parser("topology", help="run Airflow's distributed topology on loopback (Postgres, "
                                     "Redis, Celery workers, 2 schedulers, 2 triggerers, both dCache sites)")
        topology.add_arguments(topo_parser)
        topo_parser.set_defaults(func=topology.run)

    from airflow_dcache.functions import kit

    function = sub.add_parser("function", help="write, build and test your own functions; the Docker engine")
    kit.add_arguments(function)
    function.set_defaults(func=kit.run)

    if benchmarks_available():
        bench = sub.add_parser("bench", help="run a benchmark from the checkout's benchmarks/")
        bench.add_argument("name", choices=BENCHMARKS)
        bench.add_argument("rest", nargs=argparse.REMAINDER)
        bench.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
