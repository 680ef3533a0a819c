"""Server settings gathered from the command line; plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    webdav_port: int = 2880
    frontend_port: int = 3880
    users_file: Path | None = None
    site: str = "main"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    allow_insecure_macaroons: bool = False
    allow_overwrite: bool = True
    max_upload: int | None = None
    tpc_marker_period: float = 5.0
    tpc_allow_hosts: tuple[str, ...] = ()
    tpc_ca_bundle: Path | None = None
    tpc_connect_timeout: float = 10.0
    events_disconnect_timeout: int = 300
    tape_flush_delay: float = 1.0
    tape_stage_delay: float = 1.0
    default_qos: str = "disk"
    redirect_reads: bool = False
    redirect_writes: bool = False
    pool_port: int = 0
    bulk_archive_after: float = 14 * 86400
    kafka_bootstrap: str | None = None  # billing records go to Kafka only when set
    kafka_topic: str = "billing"
    kafka_config: tuple[tuple[str, str], ...] = ()
    billing_spool_dir: Path | None = None  # None: the billing spool lives in data_dir
    token_issuers: Path | None = None  # JWT bearer tokens are accepted only from the issuers it lists
    rate_limit: float | None = None  # requests/s per client, dCache's frontend/door rate limiter; None: off
    bulk_max_requests_per_user: int = 5000  # bulk.limits.max-requests-per-user
    digest_headers: str = "both"  # which of Want-Digest / Want-Repr-Digest the door answers
    tape_api_path: str = "/api/v1/tape"  # where the WLCG Tape REST API is mounted on the frontend
    tape_discovery: str | None = None  # None: generated document; "none": absent (404); else a JSON file

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def pool_name(self) -> str:
        return f"{self.site}-pool1"
