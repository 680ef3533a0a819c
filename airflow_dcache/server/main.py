"""``airflow-dcache server``: start the dCache-compatible service and announce its URLs."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from airflow_dcache.server.app import run_until_stopped
from airflow_dcache.server.config import ServerConfig
from airflow_dcache.server.http import log_filters
from airflow_dcache.server.services.billing.settings import (
    BillingConfigError,
    parse_bootstrap,
    parse_config_options,
    parse_topic,
)
from airflow_dcache.server.services.third_party_copy import HostPolicy
from airflow_dcache.server.storage.users import UsersFileError, load_users, write_dev_users


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, type=Path, help="namespace, pools and secrets live here")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--webdav-port", type=int, default=2880, help="WebDAV door port; 0 picks a free one")
    parser.add_argument("--frontend-port", type=int, default=3880, help="frontend REST port; 0 picks a free one")
    parser.add_argument("--users", type=Path, help="users file (JSON); without it a development admin is created")
    parser.add_argument("--site", default="main", help="site name of this instance's pools")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) for HTTPS")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for HTTPS")
    parser.add_argument("--tls-client-ca", type=Path,
                        help="accept X.509 client certificates issued by these CAs (users map by 'dn')")
    parser.add_argument(
        "--allow-insecure-macaroons", action="store_true",
        help="DEVELOPMENT ONLY: mint and accept macaroons over plain HTTP (dCache refuses this; "
             "bearer tokens sent unencrypted can be stolen)",
    )
    parser.add_argument("--no-overwrite", action="store_true", help="refuse PUT onto an existing file")
    parser.add_argument("--max-upload", type=int, help="largest accepted upload in bytes")
    parser.add_argument("--tpc-marker-period", type=float, default=5.0,
                        help="seconds between third-party-copy performance markers (default 5)")
    parser.add_argument("--tpc-allow-hosts", default="", metavar="PATTERN[,PATTERN]",
                        help="non-loopback hosts third-party copies may contact: names, *.domain, IPs "
                             "or CIDR networks (default: loopback only)")
    parser.add_argument("--tpc-ca-bundle", type=Path,
                        help="extra CA certificates (PEM) trusted for third-party-copy remotes")
    parser.add_argument("--tpc-connect-timeout", type=float, default=10.0,
                        help="seconds to wait for a third-party-copy remote to accept a connection")
    parser.add_argument("--events-disconnect-timeout", type=int, default=300, metavar="SECONDS",
                        help="default seconds an SSE event channel survives without a client")
    parser.add_argument("--tape-flush-delay", type=float, default=1.0, help="seconds before a flush to tape")
    parser.add_argument("--tape-stage-delay", type=float, default=1.0, help="seconds a recall from tape takes")
    parser.add_argument("--bulk-archive-after", type=float, default=14 * 86400,
                        help="seconds after which finished bulk requests nobody cleared are archived "
                             "(dCache's bulk.limits.archiver-window, 14 days)")
    parser.add_argument("--default-qos", choices=["disk", "tape", "disk+tape"], default="disk",
                        help="QoS given to newly uploaded files")
    parser.add_argument("--redirect-reads", action="store_true",
                        help="answer GET with 302 to a pool mover URL (dCache's webdav.redirect.on-read)")
    parser.add_argument("--redirect-writes", action="store_true",
                        help="answer PUT with 'Expect: 100-continue' by 307 to a pool mover URL")
    parser.add_argument("--pool-port", type=int, default=0, help="pool mover port used by redirects (0: free)")
    parser.add_argument("--kafka-bootstrap", metavar="HOST:PORT[,HOST:PORT]",
                        help="publish dCache billing records to this Kafka cluster (spooled while it is down)")
    parser.add_argument("--kafka-topic", default="billing", help="billing topic (default billing)")
    parser.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                        help="extra librdkafka producer property; repeatable")
    parser.add_argument("--billing-spool-dir", type=Path, metavar="DIR",
                        help="where billing records wait for Kafka (default: --data-dir); uploads get 507 "
                             "while its file system has no room for them")
    parser.add_argument("--rate-limit", type=float, metavar="N",
                        help="answer 429 + Retry-After above N requests per second per client, as dCache's "
                             "frontend/door rate limiter (off by default)")
    parser.add_argument("--bulk-max-requests-per-user", type=int, default=5000, metavar="N",
                        help="unfinished bulk/stage requests a user may have before 429 (dCache default 5000)")
    parser.add_argument("--digest-headers", choices=["both", "rfc3230", "rfc9530"], default="both",
                        help="answer Want-Digest and Want-Repr-Digest (both), only RFC 3230 (dCache before 12.0) "
                             "or only RFC 9530")
    parser.add_argument("--tape-api-path", default="/api/v1/tape", metavar="PATH",
                        help="where the WLCG Tape REST API is served on the frontend (default /api/v1/tape)")
    parser.add_argument("--wlcg-tape-rest-api", metavar="FILE|none",
                        help="serve this JSON file as /.well-known/wlcg-tape-rest-api, as dCache's "
                             "dcache.wellknown!wlcg-tape-rest-api.path; 'none' serves no document (404)")
    parser.add_argument("--token-issuers", type=Path, metavar="FILE",
                        help="accept JWT bearer tokens (WLCG/OIDC) from the issuers this JSON/YAML file "
                             "configures (keys, path prefix, audiences, identity and group mapping)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--access-log", type=Path, metavar="FILE",
                        help="append one JSON line per authenticated request (method, path, user, asserted "
                             "roles; never a credential)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tpc_options(args: argparse.Namespace) -> tuple[str, ...]:
    if not 0 < args.tpc_marker_period <= 3600:
        raise SystemExit("error: --tpc-marker-period must be between 0 and 3600 seconds")
    if not 0 < args.tpc_connect_timeout <= 600:
        raise SystemExit("error: --tpc-connect-timeout must be between 0 and 600 seconds")
    if args.tpc_ca_bundle is not None and not args.tpc_ca_bundle.is_file():
        raise SystemExit(f"error: --tpc-ca-bundle {args.tpc_ca_bundle} is not a file")
    patterns = tuple(p.strip() for p in args.tpc_allow_hosts.split(",") if p.strip())
    try:
        HostPolicy(patterns)
    except ValueError as err:
        raise SystemExit(f"error: --tpc-allow-hosts: {err}") from None
    return patterns


def _kafka_options(args: argparse.Namespace) -> dict[str, Any]:
    """--kafka-*, checked before anything starts so a typo names its option."""
    if args.kafka_bootstrap is None:
        if args.kafka_topic != "billing" or args.kafka_config or args.billing_spool_dir is not None:
            raise SystemExit("error: --kafka-topic, --kafka-config and --billing-spool-dir need --kafka-bootstrap")
        return {}
    spool_dir = args.billing_spool_dir
    if spool_dir is not None:
        if spool_dir.exists() and not spool_dir.is_dir():
            raise SystemExit(f"error: --billing-spool-dir {spool_dir} is not a directory")
        try:
            spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SystemExit(f"error: --billing-spool-dir {spool_dir}: {err.strerror or err}") from None
        if not os.access(spool_dir, os.W_OK | os.X_OK):
            raise SystemExit(f"error: --billing-spool-dir {spool_dir} is not writable")
    try:
        return {"kafka_bootstrap": parse_bootstrap(args.kafka_bootstrap), "kafka_topic": parse_topic(args.kafka_topic),
                "kafka_config": parse_config_options(args.kafka_config),
                "billing_spool_dir": spool_dir.resolve() if spool_dir is not None else None}
    except BillingConfigError as err:
        raise SystemExit(f"error: {err}") from None


def _limit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Rate limit, bulk quota, digest headers and tape REST placement, checked."""
    if args.rate_limit is not None and not 0 < args.rate_limit <= 1_000_000:
        raise SystemExit("error: --rate-limit must be a number of requests per second above 0")
    if not 1 <= args.bulk_max_requests_per_user <= 1_000_000:
        raise SystemExit("error: --bulk-max-requests-per-user must be between 1 and 1000000")
    path = args.tape_api_path.rstrip("/")
    if not path.startswith("/") or "//" in path or any(c in path for c in "?#{} "):
        raise SystemExit("error: --tape-api-path must be an absolute URL path such as /api/v1/tape")
    discovery = args.wlcg_tape_rest_api
    if discovery is not None and discovery != "none":
        if not os.access(discovery, os.R_OK):
            raise SystemExit(f"error: --wlcg-tape-rest-api file {discovery} is not readable")
        discovery = str(Path(discovery).resolve())
    return {"rate_limit": args.rate_limit, "bulk_max_requests_per_user": args.bulk_max_requests_per_user,
            "digest_headers": args.digest_headers, "tape_api_path": path, "tape_discovery": discovery}


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise SystemExit("error: --tls-client-ca needs --tls-cert and --tls-key")
    for name in ("webdav_port", "frontend_port", "pool_port"):
        if not 0 <= getattr(args, name) <= 65535:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be between 0 and 65535")
    if args.max_upload is not None and args.max_upload <= 0:
        raise SystemExit("error: --max-upload must be positive")
    allow_hosts = _tpc_options(args)
    if not 1 <= args.events_disconnect_timeout <= 86400:
        raise SystemExit("error: --events-disconnect-timeout must be between 1 and 86400 seconds")
    for name in ("tape_flush_delay", "tape_stage_delay"):
        if not 0 <= getattr(args, name) <= 86400:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be between 0 and 86400 seconds")
    if not 1 <= args.bulk_archive_after <= 365 * 86400:
        raise SystemExit("error: --bulk-archive-after must be between 1 second and 365 days")
    limits = _limit_options(args)
    kafka = _kafka_options(args)
    if args.token_issuers is not None:
        from airflow_dcache.server.services.bearer_tokens import IssuerConfigError, load_issuers

        try:
            load_issuers(args.token_issuers)
        except IssuerConfigError as err:
            raise SystemExit(f"error: --token-issuers: {err}") from None
    return ServerConfig(
        **limits,
        **kafka,
        data_dir=args.data_dir.resolve(), host=args.host, webdav_port=args.webdav_port,
        frontend_port=args.frontend_port, users_file=args.users, site=args.site, tls_cert=args.tls_cert,
        tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, allow_insecure_macaroons=args.allow_insecure_macaroons,
        allow_overwrite=not args.no_overwrite, max_upload=args.max_upload,
        tpc_marker_period=args.tpc_marker_period, tpc_allow_hosts=allow_hosts,
        tpc_ca_bundle=args.tpc_ca_bundle, tpc_connect_timeout=args.tpc_connect_timeout,
        events_disconnect_timeout=args.events_disconnect_timeout,
        tape_flush_delay=args.tape_flush_delay, tape_stage_delay=args.tape_stage_delay,
        default_qos=args.default_qos, redirect_reads=args.redirect_reads, redirect_writes=args.redirect_writes,
        pool_port=args.pool_port, bulk_archive_after=args.bulk_archive_after,
        token_issuers=getattr(args, "token_issuers", None),
    )


def prepare_users(config: ServerConfig) -> Path:
    """Return the users file, creating a development one (loopback only) when none was given."""
    if config.users_file is not None:
        return config.users_file
    if not _is_loopback(config.host):
        raise SystemExit("error: without --users the development admin is only allowed on a loopback address")
    path = config.data_dir / "users.json"
    if not path.exists():
        config.data_dir.mkdir(parents=True, exist_ok=True)
        password = write_dev_users(path)
        print(f"admin password: {password}", file=sys.stderr, flush=True)
        print(f"(development users file written to {path}; this password is not shown again)",
              file=sys.stderr, flush=True)
    return path


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_filters.install()
    if args.access_log:
        access = logging.getLogger("airflow_dcache.server.access")
        handler = logging.FileHandler(args.access_log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    config = config_from_args(args)
    try:
        users = load_users(prepare_users(config))
    except UsersFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def ready(urls: dict[str, str]) -> None:
        line = dict(urls, site=config.site, pid=os.getpid(), data_dir=str(config.data_dir))
        print(json.dumps(line), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_until_stopped(config, users, stop, ready)

    try:
        asyncio.run(main())
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        return 1
    except BillingConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
