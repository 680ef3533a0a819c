"""HTTP third-party copy (HTTP-TPC): pull a remote file into the namespace, or push one out.

This is the transfer half of dCache's COPY with a ``Source`` or ``Destination`` URL; the HTTP layer
parses the request and streams performance markers while :meth:`ThirdPartyCopyService.run` works.

* A pull streams the remote ``GET`` body into :meth:`TransferService.upload`, so the file is entered
  into the namespace only when it is complete and its adler32 agrees with the remote's (asked for with
  ``Want-Digest: adler32``, from the ``GET`` or a ``HEAD`` afterwards). Anything else aborts the upload:
  no half-written file is ever visible.
* A push streams the local replica in a ``PUT`` (with ``Content-Length``) and then asks the remote for
  its adler32 with a ``HEAD``.

Remote hosts are restricted: only addresses that are loopback, or allowed by the operator's
``--tpc-allow-hosts`` list, are ever connected to. The check is made on the resolved addresses at
connection time (a resolver that filters), and on every redirect hop, so neither DNS tricks nor a
redirect can steer the server elsewhere. Credentials forwarded with ``TransferHeader*`` go only to
the origin the client named, never to a redirect target on another origin, and are never logged.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import os
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from airflow_dcache.server.services import permissions as perm
from airflow_dcache.server.services.activity import Activity
from airflow_dcache.server.services.errors import AlreadyExists, BadRequest, NotAuthenticated, NotFound, ServiceError
from airflow_dcache.server.services.login import Login
from airflow_dcache.server.services.namespace import Entry, NamespaceService
from airflow_dcache.server.services.transfers import TransferService, adler32_hex
from airflow_dcache.server.storage.namespace_db import now_ms

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
CHUNK = 1 << 20
REDIRECTS = (301, 302, 303, 307, 308)
# Headers a client may not set on the remote request through TransferHeader<Name>: they belong to
# the connection or the body framing, which this server controls.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te",
    "keep-alive", "trailer", "proxy-connection",
})
SECRET_QUERY_KEYS = frozenset({"authz", "access_token", "token"})


class Direction(enum.Enum):
    PULL = "pull"
    PUSH = "push"


class CopyFailure(Exception):
    """The copy started (202 sent) and failed; ``message`` becomes ``failure: <message>``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line: it ends the marker stream


class PreconditionFailed(ServiceError):
    """``Overwrite: F`` and the target exists (412)."""


class HostNotAllowed(OSError):
    """Raised by the filtering resolver; an OSError so aiohttp reports it as a connection failure."""


@dataclass(frozen=True)
class TpcSettings:
    marker_period: float = 5.0
    allow_hosts: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_redirects: int = 10


@dataclass(frozen=True)
class CopyRequest:
    """A validated COPY: what to do, where, and what to send to the remote."""

    direction: Direction
    path: str  # the local path, as the caller sees it
    remote: str  # absolute http(s) URL
    transfer_headers: tuple[tuple[str, str], ...] = ()
    require_checksum: bool = True
    overwrite: bool = True
    client: str = ""


@dataclass
class Progress:
    """What the performance markers report; updated by the transfer, read by the marker writer."""

    started: float = field(default_factory=time.time)
    state_description: str = "Mover created"
    connected_at: float | None = None
    last_transferred: float | None = None
    transferred: int = 0
    remote_address: str | None = None  # "tcp:IP:PORT" once a connection is made

    def add(self, count: int) -> None:
        self.transferred += count
        self.last_transferred = time.time()


# -- the remote-host policy ----------------------------------------------------------------------
class HostPolicy:
    """Which remote hosts may be contacted: loopback always, plus the operator's allow-list.

    Patterns are exact host names, ``*.example.org`` (any name below example.org), IP addresses or
    CIDR networks. A name that matches a name pattern is trusted with whatever it resolves to;
    otherwise each resolved address must be loopback or inside an allowed network.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in patterns:
            pattern = raw.strip().lower().rstrip(".")
            if not pattern:
                continue
            try:
                self.networks.append(ipaddress.ip_network(pattern, strict=False))
                continue
            except ValueError:
                pass
            if pattern.startswith("*."):
                if not _valid_hostname(pattern[2:]):
                    raise ValueError(f"bad host pattern: {raw!r}")
                self.suffixes.append(pattern[1:])
            elif _valid_hostname(pattern) and "*" not in pattern:
                self.names.add(pattern)
            else:
                raise ValueError(f"bad host pattern: {raw!r} (expected a host name, *.domain, an IP or a CIDR)")

    def name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or any(ip in net for net in self.networks)


def _valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(
        0 < len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) for label in labels
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _refused(host: str) -> str:
    return (f"remote host {host} is not allowed: only loopback addresses and the hosts in "
            "--tpc-allow-hosts may be contacted")


class PolicyResolver(AbstractResolver):
    """Resolves through aiohttp's default resolver and drops every address the policy refuses."""

    def __init__(self, policy: HostPolicy, timeout: float, on_resolved: Callable[[str, int], None]) -> None:
        self.policy = policy
        self.timeout = timeout
        self.on_resolved = on_resolved
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            async with asyncio.timeout(self.timeout):
                found = await self._inner.resolve(host, port, family)
        except TimeoutError:
            raise OSError(f"resolving {host} timed out after {self.timeout:g} s") from None
        if not self.policy.name_allowed(host):
            found = [r for r in found if self.policy.address_allowed(r["host"])]
        if not found:
            raise HostNotAllowed(_refused(host))
        self.on_resolved(found[0]["host"], port)
        return found

    async def close(self) -> None:
        await self._inner.close()


# -- URL and header helpers ----------------------------------------------------------------------
def redact(url: str) -> str:
    """The URL without user info and with token-like query values hidden (for logs and billing)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "REDACTED" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_remote_url(url: str) -> str:
    """Validate an absolute remote URL; returns it unchanged or raises :class:`BadRequest`."""
    try:
        parts = urlsplit(url.strip())  # raises ValueError for e.g. an unclosed IPv6 bracket
    except ValueError as err:
        raise BadRequest(f"Malformed remote URL: {err}") from None
    if not (parts.scheme and parts.netloc):
        raise BadRequest(f"Third-party copy needs an absolute URL with a scheme and a host: {url[:200]}")
    if parts.scheme.lower() not in SCHEMES:
        raise BadRequest(f"unsupported scheme {parts.scheme[:20]!r} in {redact(url)[:200]} "
                         f"(supported: {', '.join(SCHEMES)})")
    if "@" in parts.netloc:
        raise BadRequest("Credentials in the remote URL are not supported; use TransferHeaderAuthorization")
    if not parts.hostname:
        raise BadRequest(f"Remote URL has no host: {redact(url)[:200]}")
    try:
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise BadRequest(f"Remote URL has a bad port: {redact(url)[:200]}") from None
    return url.strip()


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def parse_digest(value: str | None, algorithm: str = "adler32") -> str | None:
    """The value of one algorithm in an RFC 3230 ``Digest`` header (``adler32=0a1b2c3d,md5=…``)."""
    if not value:
        return None
    for item in value.split(","):
        name, sep, digest = item.strip().partition("=")
        if sep and name.strip().lower() == algorithm:
            digest = digest.strip().lower()
            if algorithm == "adler32":
                try:
                    return adler32_hex(int(digest, 16))
                except ValueError:
                    return None
            return digest
    return None


def _where(url: str) -> str:
    _, host, port = _origin(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _rejected(method: str, response: aiohttp.ClientResponse) -> str:
    """``rejected GET: 404 Not Found``, plus the remote's own reason phrase when it says more."""
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    text = f"rejected {method}: {response.status} {phrase}".rstrip()
    reason = " ".join((response.reason or "").split())[:200]
    if reason and reason.lower() != phrase.lower():
        text += f" ({reason})"
    return text


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def protocol_name(url: str) -> str:
    return "RemoteHttpsDataTransfer" if url.lower().startswith("https:") else "RemoteHttpDataTransfer"


# -- the service ---------------------------------------------------------------------------------
class ThirdPartyCopyService:
    def __init__(self, namespace: NamespaceService, transfers: TransferService,
                 settings: TpcSettings | None = None,
                 bring_online: Callable[[Login, Entry], Awaitable[None]] | None = None) -> None:
        self.ns = namespace
        self.transfers = transfers
        self.bring_online = bring_online  # recalls a tape-only push source, as a pool would
        self.settings = settings or TpcSettings()
        self.policy = HostPolicy(self.settings.allow_hosts)
        self._ssl: ssl.SSLContext | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """System CAs plus the configured bundle; built once, on first use."""
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if self.settings.ca_bundle is not None:
                ctx.load_verify_locations(cafile=str(self.settings.ca_bundle))
            self._ssl = ctx
        return self._ssl

    # -- checks made before the 202 ------------------------------------------------------------
    async def check_host(self, url: str) -> None:
        """Refuse (400) a remote that cannot be allowed; a name that does not resolve now is left
        to the transfer, which then fails with a ``failure:`` line."""
        host = (urlsplit(url).hostname or "").lower()
        if self.policy.name_allowed(host):
            return
        if _is_ip(host):
            if not self.policy.address_allowed(host):
                raise BadRequest(_refused(host))
            return
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return
        if not any(self.policy.address_allowed(str(info[4][0])) for info in infos):
            raise BadRequest(_refused(host))

    def authorise(self, login: Login, req: CopyRequest) -> Entry | None:
        """Everything that can be refused with a plain 401/403/404/409/412 before the copy starts.

        Returns the local source entry of a push (None for a pull).
        """
        if login.anonymous:
            raise NotAuthenticated("Anonymous third-party copy is not allowed")
        if req.direction is Direction.PUSH:
            entry = self.ns.open_for_read(login, req.path)
            if not entry.inode.on_disk and (self.bring_online is None or not entry.inode.on_tape):
                raise NotFound(f"Replica of {req.path} is not available")
            if not entry.inode.on_disk:
                perm.require_activity(login, Activity.STAGE, req.path)
            return entry
        try:
            self.transfers.authorise_upload(login, req.path, replace=req.overwrite)
        except AlreadyExists as err:  # Overwrite: F onto an existing file
            raise PreconditionFailed(err.message) from None
        return None

    # -- the transfer -------------------------------------------------------------------------
    async def run(self, login: Login, req: CopyRequest, progress: Progress, source: Entry | None = None) -> None:
        """Do the copy; returns on success, raises :class:`CopyFailure` otherwise."""
        log.info("third-party %s %s %s (user %s)", req.direction.value, req.path, redact(req.remote),
                 login.username)
        try:
            async with self._session(progress) as session:
                if req.direction is Direction.PULL:
                    await self._pull(session, login, req, progress)
                else:
                    assert source is not None
                    await self._push(session, login, req, source, progress)
        except CopyFailure:
            raise
        except ServiceError as err:
            raise CopyFailure(err.message) from None
        except aiohttp.ClientConnectorError as err:
            raise CopyFailure(self._connect_message(err)) from None
        except aiohttp.ConnectionTimeoutError:
            raise CopyFailure(f"connection to {_where(req.remote)} timed out after "
                              f"{self.settings.connect_timeout:g} s") from None
        except aiohttp.SocketTimeoutError:
            raise CopyFailure(f"remote {_where(req.remote)} sent nothing for "
                              f"{self.settings.idle_timeout:g} s") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise CopyFailure(f"timed out talking to {redact(req.remote)} (connect timeout "
                              f"{self.settings.connect_timeout:g} s, idle timeout "
                              f"{self.settings.idle_timeout:g} s)") from None
        except aiohttp.ClientPayloadError as err:
            raise CopyFailure(f"transfer from remote interrupted: {_short(err)}") from None
        except aiohttp.ClientError as err:
            raise CopyFailure(f"remote transfer error: {_short(err)}") from None
        except OSError as err:
            raise CopyFailure(f"I/O error: {_short(err)}") from None

    def _connect_message(self, err: aiohttp.ClientConnectorError) -> str:
        cause = err.os_error
        where = f"{err.host}:{err.port}"
        if isinstance(cause, HostNotAllowed):
            return str(cause)
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            return f"TLS certificate of {where} not trusted: {_short(err.certificate_error)}"
        if isinstance(err, aiohttp.ClientConnectorSSLError):
            return f"TLS handshake with {where} failed: {_short(cause)}"
        if isinstance(err, aiohttp.ClientConnectorDNSError):
            return f"cannot resolve {err.host}: {_short(cause)}"
        if isinstance(cause, TimeoutError) or "timeout" in _short(cause).lower():
            return f"connection to {where} timed out after {self.settings.connect_timeout:g} s"
        reason = os.strerror(cause.errno) if cause.errno else _short(cause)
        return f"cannot connect to {where}: {reason}"

    def _session(self, progress: Progress) -> aiohttp.ClientSession:
        s = self.settings

        def resolved(address: str, port: int) -> None:
            progress.remote_address = _endpoint(address, port)

        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(self.policy, s.connect_timeout, resolved), ssl=self.ssl_context,
            use_dns_cache=False, force_close=True, limit=4,
        )
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=s.connect_timeout,
                                        sock_read=s.idle_timeout)
        # The bytes are stored as sent: ask for no content coding, and never decode one.
        return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Accept-Encoding"),
                                     headers={"User-Agent": "airflow-dcache-tpc/1",
                                              "Accept-Encoding": "identity"})

    async def _request(self, session: aiohttp.ClientSession, method: str, req: CopyRequest,
                       progress: Progress, *, extra_headers: dict[str, str] | None = None,
                       body: Callable[[], AsyncIterator[bytes]] | None = None,
                       content_length: int | None = None) -> aiohttp.ClientResponse:
        """One request to the remote, following redirects by hand (each hop checked by the policy).

        TransferHeaders go only to the origin the client named. The caller releases the response.
        """
        url = req.remote
        origin = _origin(url)
        for _ in range(self.settings.max_redirects + 1):
            host = urlsplit(url).hostname or ""
            if _is_ip(host) and not self.policy.address_allowed(host):
                raise CopyFailure(_refused(host))
            headers: list[tuple[str, str]] = list(req.transfer_headers) if _origin(url) == origin else []
            headers += list((extra_headers or {}).items())
            if content_length is not None:
                headers.append(("Content-Length", str(content_length)))
            if _is_ip(host):
                progress.remote_address = _endpoint(host, _origin(url)[2])
            response = await session.request(
                method, url, headers=headers, data=body() if body is not None else None,
                allow_redirects=False, expect100=body is not None,
            )
            self._note_peer(response, progress)
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                response.release()
                url = urljoin(url, location)
                if urlsplit(url).scheme.lower() not in SCHEMES:
                    raise CopyFailure(f"remote redirected {method} to an unsupported scheme: {redact(url)[:200]}")
                continue
            return response
        raise CopyFailure(f"too many redirects for {method} {redact(req.remote)}")

    @staticmethod
    def _note_peer(response: aiohttp.ClientResponse, progress: Progress) -> None:
        conn = response.connection
        peer = conn.transport.get_extra_info("peername") if conn and conn.transport else None
        if peer:
            progress.remote_address = _endpoint(str(peer[0]), int(peer[1]))
        if progress.connected_at is None:
            progress.connected_at = time.time()

    async def _remote_adler32(self, session: aiohttp.ClientSession, req: CopyRequest,
                              progress: Progress) -> str | None:
        response = await self._request(session, "HEAD", req, progress, extra_headers={"Want-Digest": "adler32"})
        try:
            if response.status >= 300:
                raise CopyFailure(f"checksum query {_rejected('HEAD', response)}")
            return parse_digest(response.headers.get("Digest"))
        finally:
            response.release()

    def _check(self, req: CopyRequest, remote: str | None, local: str) -> None:
        if remote is None:
            if req.require_checksum:
                raise CopyFailure("remote did not supply an adler32 checksum (Want-Digest: adler32) and "
                                  "RequireChecksumVerification is true")
            return
        if remote != local:
            raise CopyFailure(f"checksum mismatch: remote adler32={remote}, transferred data adler32={local}")

    async def _pull(self, session: aiohttp.ClientSession, login: Login, req: CopyRequest,
                    progress: Progress) -> None:
        progress.state_description = "Mover created"
        response = await self._request(session, "GET", req, progress, extra_headers={"Want-Digest": "adler32"})
        try:
            if response.status != 200:
                raise CopyFailure(_rejected("GET", response))
            remote_digest = parse_digest(response.headers.get("Digest"))
            length = response.content_length

            async def body() -> AsyncIterator[bytes]:
                adler = 1
                buf = bytearray()
                async for data in response.content.iter_any():
                    adler = zlib.adler32(data, adler)
                    progress.add(len(data))
                    buf += data
                    if len(buf) >= CHUNK:
                        yield bytes(buf)
                        buf.clear()
                if buf:
                    yield bytes(buf)
                # Still inside the upload: raising here aborts it, so nothing is committed.
                local = adler32_hex(adler)
                if length is not None and progress.transferred != length:
                    raise CopyFailure(f"remote sent {progress.transferred} of {length} bytes")
                remote = remote_digest
                if remote is None:
                    progress.state_description = "Verifying checksum"
                    remote = await self._remote_adler32(session, req, progress)
                self._check(req, remote, local)

            await self.transfers.upload(
                login, req.path, body(), client=req.client, content_length=length,
                extra={"protocol": protocol_name(req.remote), "tpc": "pull", "remote": redact(req.remote)},
            )
        finally:
            response.release()

    async def _push(self, session: aiohttp.ClientSession, login: Login, req: CopyRequest, entry: Entry,
                    progress: Progress) -> None:
        if not entry.inode.on_disk and self.bring_online is not None:
            progress.state_description = "Staging from tape"
            await self.bring_online(login, entry)
        started = now_ms()
        replica = self.ns.pool.data_path(entry.inode.id)
        size = entry.inode.size
        if not req.overwrite:
            response = await self._request(session, "HEAD", req, progress)
            response.release()
            if response.status < 300:
                raise CopyFailure(f"destination {redact(req.remote)} exists and Overwrite is F")

        def body() -> AsyncIterator[bytes]:
            progress.transferred = 0  # a redirected PUT starts over

            async def chunks() -> AsyncIterator[bytes]:
                if progress.connected_at is None:  # the body is requested once connected
                    progress.connected_at = time.time()
                with open(replica, "rb") as f:
                    while data := f.read(CHUNK):
                        progress.add(len(data))
                        yield data
            return chunks()

        try:
            response = await self._request(session, "PUT", req, progress, body=body, content_length=size)
        except FileNotFoundError:
            raise CopyFailure(f"replica of {req.path} disappeared") from None
        try:
            if response.status not in (200, 201, 204):
                raise CopyFailure(_rejected("PUT", response))
        finally:
            response.release()
        if progress.transferred != size:
            raise CopyFailure(f"sent {progress.transferred} of {size} bytes")
        progress.state_description = "Verifying checksum"
        remote = await self._remote_adler32(session, req, progress)
        local = entry.inode.adler32 or self._local_adler32(replica)
        self._check(req, remote, local)
        self.transfers.download_finished(
            login, entry, progress.transferred, started, req.client,
            extra={"protocol": protocol_name(req.remote), "tpc": "push", "remote": redact(req.remote)},
        )

    @staticmethod
    def _local_adler32(path: Path) -> str:
        adler = 1
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                adler = zlib.adler32(data, adler)
        return adler32_hex(adler)


def marker_text(progress: Progress, now: float | None = None) -> str:
    """One performance marker block in dCache's format (the mover lines once connected)."""
    t = int(now if now is not None else time.time())
    lines = ["Perf Marker", f"    Timestamp: {t}", "    State: Running",
             f"    State description: {progress.state_description}", "    Stripe Index: 0"]
    if progress.connected_at is not None:
        start = int(progress.started)
        last = int(progress.last_transferred or progress.connected_at)
        lines += [
            f"    Stripe Start Time: {start}",
            f"    Stripe Last Transferred: {last}",
            f"    Stripe Transfer Time: {max(0, t - start)}",
            f"    Stripe Bytes Transferred: {progress.transferred}",
            "    Stripe Status: RUNNING",
        ]
    lines.append("    Total Stripe Count: 1")
    if progress.connected_at is not None and progress.remote_address:
        lines.append(f"    RemoteConnections: tcp:{progress.remote_address}")
    lines.append("End")
    return "\n".join(lines) + "\n"


__all__ = [
    "CopyFailure", "CopyRequest", "Direction", "HostPolicy", "PreconditionFailed", "Progress",
    "ThirdPartyCopyService", "TpcSettings", "check_remote_url", "marker_text", "parse_digest", "redact",
]
