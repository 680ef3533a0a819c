"""One-shot set-up of the compose stack's two service sites (run inside the image).

``users``: create the users file shared by ``dcache-main`` and ``dcache-buffer`` (PBKDF2 hashes) and the
passwords beside it (0600), and write the Airflow connections ``dcache_main``, ``dcache_buffer`` and
``kafka_billing`` into ``connections.json`` for Airflow's ``LocalFilesystemBackend``, so no password is
put in the compose file or the environment. Idempotent: an existing users file is kept.

``layout``: once both sites listen, lay out the demo's directory tree (drop boxes, processed, archive).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from airflow_dcache.testing.sites import LAYOUT, credentials, lay_out


def _sites(args: argparse.Namespace) -> dict[str, SimpleNamespace]:
    door, frontend = args.door_port, args.frontend_port
    return {name: SimpleNamespace(name=name, webdav=f"http://{host}:{door}", api=f"http://{host}:{frontend}/api/v1")
            for name, host in (("main", args.main_host), ("buffer", args.buffer_host))}


def users(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    passwords = credentials(base)
    connections: dict[str, object] = {
        f"dcache_{name}": {"conn_type": "dcache", "host": site.webdav, "login": "pipeline",
                           "password": passwords["pipeline"],
                           "extra": {"frontend_url": site.api.removesuffix("/api/v1"), "site": name}}
        for name, site in _sites(args).items()
    }
    connections["kafka_billing"] = {"conn_type": "kafka", "extra": {
        "bootstrap.servers": args.kafka, "group.id": "airflow-dcache-billing",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}}
    target = base / "connections.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(connections, fh, indent=2)
    print(f"users file and connections in {base}")
    return 0


def layout(args: argparse.Namespace) -> int:
    passwords = credentials(Path(args.dir))
    for name, site in _sites(args).items():
        lay_out(site, passwords, LAYOUT[name])  # type: ignore[arg-type]
    print("site trees laid out")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=["users", "layout"])
    parser.add_argument("--dir", default="/dcache")
    parser.add_argument("--main-host", default="dcache-main")
    parser.add_argument("--buffer-host", default="dcache-buffer")
    parser.add_argument("--door-port", type=int, default=2880)
    parser.add_argument("--frontend-port", type=int, default=3880)
    parser.add_argument("--kafka", default="kafka:9092")
    args = parser.parse_args(argv)
    return users(args) if args.step == "users" else layout(args)


if __name__ == "__main__":
    sys.exit(main())
