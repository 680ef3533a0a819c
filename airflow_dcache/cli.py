"""The ``airflow-dcache`` command: ``server``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path


def _bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / f"{args.name}.py"
    if not script.exists():
        print(f"error: no benchmark {args.name!r} (benchmarks live in a source checkout)", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    module = runpy.run_path(str(script))
    return int(module["main"](args.rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-dcache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from airflow_dcache.server import main as server_main

    server = sub.add_parser("server", help="run the dCache-compatible service")
    server_main.add_arguments(server)
    server.set_defaults(func=server_main.run)

    from airflow_dcache import demo

    demo_parser = sub.add_parser("demo", help="run the demo (service with sample users and data)")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run)

    bench = sub.add_parser("bench", help="run a benchmark from benchmarks/")
    bench.add_argument("name", choices=["transfer", "events", "billing"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
