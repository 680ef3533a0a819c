"""Wiring: storage → services → HTTP apps for the door and the frontend, and their lifecycle."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_dcache.server.config import ServerConfig
from airflow_dcache.server.http import digests
from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.http.bulk import BulkRequests
from airflow_dcache.server.http.errors import error_middleware
from airflow_dcache.server.http.events import EventsApi
from airflow_dcache.server.http.frontend import Frontend
from airflow_dcache.server.http.labels import Labels
from airflow_dcache.server.http.pool_groups import PoolGroups
from airflow_dcache.server.http.pool_mover import PoolMover
from airflow_dcache.server.http.qos_management import QosManagement
from airflow_dcache.server.http.rate_limit import RateLimiter, rate_limit_middleware
from airflow_dcache.server.http.tape_rest import TapeRest
from airflow_dcache.server.http.third_party_copy import ThirdPartyCopyHandler
from airflow_dcache.server.http.webdav import WebDavDoor
from airflow_dcache.server.services import errors as e
from airflow_dcache.server.services.billing import BillingPublisher, KafkaSettings, build_publisher
from airflow_dcache.server.services.bulk import BulkService
from airflow_dcache.server.services.events import EventBus
from airflow_dcache.server.services.login import join_under
from airflow_dcache.server.services.macaroons import MacaroonService
from airflow_dcache.server.services.movers import MoverRegistry, RedirectPolicy
from airflow_dcache.server.services.namespace import NamespaceService
from airflow_dcache.server.services.storage_events import ChannelRegistry, EventsSettings
from airflow_dcache.server.services.tape import TapeService, TapeSettings
from airflow_dcache.server.services.third_party_copy import ThirdPartyCopyService, TpcSettings
from airflow_dcache.server.services.transfers import TransferService
from airflow_dcache.server.storage.bulk_db import BulkDB
from airflow_dcache.server.storage.hsm import HsmStore
from airflow_dcache.server.storage.macaroon_secrets import MacaroonSecretStore
from airflow_dcache.server.storage.namespace_db import NamespaceDB
from airflow_dcache.server.storage.pool import Pool
from airflow_dcache.server.storage.users import User

if TYPE_CHECKING:
    from airflow_dcache.server.services.bearer_tokens import BearerTokenService

IO_THREADS = 64

# aiohttp's header limits (8190 bytes a line/field) already answer oversized headers with 400.
_HANDLER_ARGS = {"max_line_size": 8190, "max_field_size": 8190, "read_bufsize": 4 << 20}


@dataclass
class Services:
    """Everything below the HTTP layer, built once per server."""

    db: NamespaceDB
    pool: Pool
    events: EventBus
    namespace: NamespaceService
    transfers: TransferService
    macaroons: MacaroonService
    tape: TapeService
    bulk: BulkService
    movers: MoverRegistry
    storage_events: ChannelRegistry
    billing: BillingPublisher | None = None

    def close(self) -> None:
        if self.billing is not None:
            self.billing.close()  # spools what is still queued before anything else closes
        self.db.close()
        self.bulk.db.close()


def build_services(config: ServerConfig) -> Services:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = NamespaceDB(config.data_dir / "namespace.db")
    pool = Pool(config.pool_name, config.data_dir / "pools" / config.pool_name)
    events = EventBus()
    namespace = NamespaceService(db, pool, events)
    transfers = TransferService(namespace, allow_overwrite=config.allow_overwrite, max_upload=config.max_upload)
    macaroons = MacaroonService(MacaroonSecretStore(config.data_dir / "macaroon-secrets.json"))
    hsm = HsmStore(f"{config.site}-hsm", config.data_dir / "hsm" / config.site)
    tape = TapeService(namespace, hsm, TapeSettings(config.tape_flush_delay, config.tape_stage_delay,
                                                    config.default_qos))
    bulk = BulkService(BulkDB(config.data_dir / "bulk.db"), namespace, tape,
                       archive_after_s=config.bulk_archive_after,
                       max_requests_per_user=config.bulk_max_requests_per_user)
    storage_events = ChannelRegistry(namespace, EventsSettings(disconnect_timeout=config.events_disconnect_timeout),
                                     bus=events)
    return Services(db, pool, events, namespace, transfers, macaroons, tape, bulk, MoverRegistry(), storage_events)


def start_billing(config: ServerConfig, services: Services) -> None:
    """With --kafka-bootstrap: publish the event bus's transfers as dCache billing records."""
    if config.kafka_bootstrap is None:
        return
    settings = KafkaSettings(config.kafka_bootstrap, config.kafka_topic, config.kafka_config,
                             client_id=f"dcache-billing-{config.site}")
    services.billing = build_publisher(config.billing_spool_dir or config.data_dir, config.pool_name, settings)
    services.events.subscribe(services.billing.on_event)
    services.transfers.upload_guards.append(services.billing.admit_upload)  # 507 while the spool is full
    services.billing.start()


def tpc_service(config: ServerConfig, services: Services) -> ThirdPartyCopyService:
    settings = TpcSettings(marker_period=config.tpc_marker_period, allow_hosts=config.tpc_allow_hosts,
                           ca_bundle=config.tpc_ca_bundle, connect_timeout=config.tpc_connect_timeout)
    return ThirdPartyCopyService(services.namespace, services.transfers, settings,
                                 bring_online=services.tape.bring_online)


def _frontend_status(err: e.ServiceError) -> int | None:
    """dCache's frontend reports a non-empty directory as a plain 400."""
    return 400 if isinstance(err, e.NotEmpty) else None


def _rate_limit(config: ServerConfig) -> list[Any]:
    """dCache's per-client rate limiter (``--rate-limit``), one per service as each door has its own."""
    return [] if config.rate_limit is None else [rate_limit_middleware(RateLimiter(config.rate_limit))]


def bearer_tokens(config: ServerConfig, users: dict[str, User]) -> BearerTokenService | None:
    """JWT bearer tokens are accepted only with ``--token-issuers``; the file was checked at start-up."""
    if config.token_issuers is None:
        return None
    from airflow_dcache.server.services.bearer_tokens import BearerTokenService

    return BearerTokenService.from_file(config.token_issuers, users)


def build_apps(
    config: ServerConfig, services: Services, users: dict[str, User]
) -> tuple[web.Application, web.Application]:
    auth = Authenticator(users, services.macaroons, looks_like_macaroon=MacaroonService.looks_like_macaroon,
                         tls=config.tls, allow_insecure_macaroons=config.allow_insecure_macaroons,
                         bearer=bearer_tokens(config, users))
    digests.configure(config.digest_headers)
    door_app = web.Application(middlewares=[*_rate_limit(config), error_middleware(door=True)],
                               handler_args=_HANDLER_ARGS)
    WebDavDoor(auth, services.namespace, services.transfers, services.macaroons, services.tape, tls=config.tls,
               allow_insecure_macaroons=config.allow_insecure_macaroons,
               tpc=ThirdPartyCopyHandler(tpc_service(config, services)),
               redirects=RedirectPolicy(services.movers, config.redirect_reads, config.redirect_writes)
               if config.redirect_reads or config.redirect_writes else None).install(door_app)
    frontend_app = web.Application(middlewares=[*_rate_limit(config),
                                                error_middleware(door=False, status_override=_frontend_status)],
                                   handler_args=_HANDLER_ARGS)
    frontend = Frontend(auth, services.namespace, services.tape)
    frontend.install(frontend_app)
    QosManagement(auth, config.site).install(frontend_app)
    BulkRequests(frontend, services.bulk).install(frontend_app)
    Labels(frontend).install(frontend_app)
    PoolGroups(frontend).install(frontend_app)
    TapeRest(frontend, services.bulk, config.site, base=config.tape_api_path,
             discovery=config.tape_discovery).install(frontend_app)
    EventsApi(auth, services.storage_events).install(frontend_app)
    return door_app, frontend_app


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:  # like dCache's accept-client-cert: asked for, not required
        ctx.load_verify_locations(config.tls_client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@dataclass
class RunningServer:
    runners: list[web.AppRunner]
    urls: dict[str, str]

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _serve(app: web.Application, host: str, port: int, ctx: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, backlog=1024, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, bound


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


async def start(config: ServerConfig, services: Services, users: dict[str, User]) -> RunningServer:
    door_app, frontend_app = build_apps(config, services, users)
    ctx = ssl_context(config)
    scheme = "https" if ctx else "http"
    door_runner, door_port = await _serve(door_app, config.host, config.webdav_port, ctx)
    front_runner, front_port = await _serve(frontend_app, config.host, config.frontend_port, ctx)
    frontend = _url(scheme, config.host, front_port)
    urls = {"webdav": _url(scheme, config.host, door_port), "frontend": frontend, "api": f"{frontend}/api/v1"}
    runners = [door_runner, front_runner]
    if config.redirect_reads or config.redirect_writes:
        pool_app = web.Application(middlewares=[error_middleware(door=True)], handler_args=_HANDLER_ARGS)
        PoolMover(services.movers, services.namespace, services.transfers).install(pool_app)
        pool_runner, pool_port = await _serve(pool_app, config.host, config.pool_port, ctx)
        services.movers.base_url = urls["pool"] = _url(scheme, config.host, pool_port)
        runners.append(pool_runner)
    return RunningServer(runners, urls)


def provision_homes(services: Services, users: dict[str, User]) -> None:
    for user in users.values():
        home = join_under(user.root, user.home) if user.home != "/" else user.root
        if home != "/":
            services.namespace.provision_home(home, user.uid, user.gids[0])


async def run_until_stopped(config: ServerConfig, users: dict[str, User], stop: asyncio.Event,
                            on_ready: Callable[[dict[str, str]], None]) -> None:
    # Uploads fsync in worker threads; a disk absorbs many concurrent fsyncs (journal commits are
    # shared), so allow far more threads than cores: they spend their time waiting, not computing.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="io"))
    services = build_services(config)
    start_billing(config, services)
    provision_homes(services, users)
    await services.tape.start()
    await services.bulk.start()
    server = await start(config, services, users)
    try:
        on_ready(server.urls)
        await stop.wait()
    finally:
        await server.stop()
        await services.bulk.stop()
        await services.tape.stop()
        services.close()
