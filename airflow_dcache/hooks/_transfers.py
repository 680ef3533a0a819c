"""Shared halves of the streaming operations (upload, download, third-party copy).

Streaming bodies are client-specific, but which headers to send, how to wrap a source so it is hashed
while it is sent, and how to judge the result are not. Keeping those here means a fix to verification
reaches both hooks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from airflow_dcache.exceptions import ChecksumMismatch, Conflict, TransferFailed, UnexpectedResponse
from airflow_dcache.hooks import _checksums
from airflow_dcache.hooks._perfmarkers import PerfMarkerParser, TransferOutcome
from airflow_dcache.hooks._settings import ConnectionSettings
from airflow_dcache.hooks.arguments import ChecksumMode, check_mode  # noqa: F401 - the hooks use tx.check_mode
from airflow_dcache.hooks.models import TransferResult
from airflow_dcache.hooks.urls import door_url, mask_url, normalize_path

CHUNK_SIZE = 1024 * 1024
TPC_CREDENTIALS = frozenset({"none", "gridsite", "oidc"})


def upload_url(settings: ConnectionSettings, path: str, xattrs: Mapping[str, Any] | None = None) -> str:
    """Extended attributes ride on the PUT URL as ``xattr.<name>=<value>`` (set atomically with the file)."""
    query = {f"xattr.{k}": str(v) for k, v in (xattrs or {}).items()}
    return door_url(settings, path, query)


def upload_headers(mode: ChecksumMode, md5_hex: str | None, size: int | None) -> dict[str, str]:
    """``Want-Digest`` (and, for sha-256/512, ``Want-Repr-Digest``) asks the pool to report what it
    stored; ``Content-MD5`` makes dCache verify."""
    headers = {"Content-Type": "application/octet-stream"}
    if mode != "none":
        headers.update(_checksums.want_headers(local_algorithms(mode)))  # the pool computes these, reports one
    if md5_hex:
        headers["Content-MD5"] = _checksums.md5_base64(md5_hex)
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


def local_algorithms(mode: ChecksumMode) -> tuple[str, ...]:
    # adler32 is always computed: it is cheap and is the checksum dCache stores by default.
    return ("adler32",) if mode in ("adler32", "none") else ("adler32", mode)


def remaining_size(stream: IO[bytes]) -> int | None:
    """Bytes left in a seekable stream (sent as Content-Length), or None for pipes and sockets."""
    try:
        if not stream.seekable():
            return None
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError):
        return None


def precompute_md5(stream: IO[bytes], chunk_size: int = CHUNK_SIZE) -> str:
    """``Content-MD5`` must precede the body, so a first pass is unavoidable; the stream is rewound."""
    if not stream.seekable():
        raise ValueError("checksum='md5' needs a seekable source; use checksum='adler32' for streams")
    start = stream.tell()
    hasher = _checksums.StreamingChecksum(("md5",))
    while chunk := stream.read(chunk_size):
        hasher.update(chunk)
    stream.seek(start)
    return hasher.hexdigests()["md5"]


class HashingReader:
    """File-like wrapper that hashes what the HTTP client reads, so the upload is read exactly once.

    ``__len__`` is defined only when the size is known: ``requests`` then sends ``Content-Length``
    instead of chunked encoding, which every WebDAV door accepts.
    """

    def __init__(
        self, stream: IO[bytes], algorithms: tuple[str, ...], size: int | None, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self._stream = stream
        self._algorithms = algorithms
        self._size = size
        self._chunk_size = chunk_size
        self._start = stream.tell() if _seekable(stream) else None
        self.hasher = _checksums.StreamingChecksum(algorithms)

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(self._chunk_size if n is None or n < 0 else n)
        if chunk:
            self.hasher.update(chunk)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(self._chunk_size):
            yield chunk

    @property
    def rewindable(self) -> bool:
        return self._start is not None

    def rewind(self) -> None:
        """Restart after a 307 to a pool: the body must be sent again from the beginning."""
        if self._start is None:
            raise UnexpectedResponse("the door redirected the upload but the source stream cannot be rewound")
        self._stream.seek(self._start)
        self.hasher = _checksums.StreamingChecksum(self._algorithms)


class SizedHashingReader(HashingReader):
    def __len__(self) -> int:
        return self._size or 0


def hashing_reader(
    stream: IO[bytes], algorithms: tuple[str, ...], size: int | None, chunk_size: int = CHUNK_SIZE
) -> HashingReader:
    cls = SizedHashingReader if size else HashingReader
    return cls(stream, algorithms, size, chunk_size)


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError):
        return False


def verify(local: Mapping[str, str], remote: Mapping[str, str], *, what: str, method: str, url: str) -> str | None:
    """Compare the first algorithm both sides know; return it, or None when nothing is comparable."""
    match = _checksums.compare(local, remote)
    if match is None:
        return None
    algorithm, mine, theirs = match
    if mine != theirs:
        raise ChecksumMismatch(
            f"{what}: {algorithm} mismatch (local {mine}, server {theirs})", method=method, url=mask_url(url)
        )
    return algorithm


def download_algorithms(remote: Mapping[str, str]) -> tuple[str, ...]:
    """Hash with adler32 plus whatever the server reported, so any returned digest can be checked."""
    extra = [a for a in remote if a in _checksums.SUPPORTED and a != "adler32"]
    return ("adler32", *extra)


def refuse_directory(path: str, url: str, final_url: str) -> None:
    """The door answers GET on a directory with a redirect to ``…/`` and an HTML listing; saving that
    listing as if it were the file would be a silent data error."""
    if path != "/" and urlsplit(final_url).path.endswith("/") and not urlsplit(url).path.endswith("/"):
        raise Conflict(f"{path} is a directory", method="GET", url=mask_url(url))
    if path == "/":
        raise Conflict("/ is a directory", method="GET", url=mask_url(url))


class DownloadReceiver:
    """Hash and count received bytes; judge size and checksum before the file is made visible."""

    def __init__(self, path: str, url: str, headers: Mapping[str, str], verify_checksum: bool) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        self.path = path
        self.url = url
        self.remote = _checksums.digests_from_headers(headers)
        length = lowered.get("content-length", "")
        # A compressed reply has a Content-Length that does not match the decoded bytes.
        known = length.isascii() and length.isdigit() and "content-encoding" not in lowered
        self.expected = int(length) if known else None
        self.verify_checksum = verify_checksum
        self.hasher = _checksums.StreamingChecksum(download_algorithms(self.remote))
        self.result = TransferResult(path=path)

    def update(self, chunk: bytes) -> None:
        self.hasher.update(chunk)

    def finish(self) -> TransferResult:
        if self.expected is not None and self.expected != self.hasher.size:
            raise UnexpectedResponse(
                f"received {self.hasher.size} of {self.expected} bytes", method="GET", url=mask_url(self.url)
            )
        local = self.hasher.hexdigests()
        verified = None
        if self.verify_checksum:
            verified = verify(local, self.remote, what=f"download of {self.path}", method="GET", url=self.url)
        self.result = TransferResult(path=self.path, size=self.hasher.size, checksums=local, verified_by=verified)
        return self.result


def write_atomically(destination: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write next to the target and rename, so a failed download never leaves a plausible file."""
    directory = os.path.dirname(os.path.abspath(destination))
    fd, tmp = tempfile.mkstemp(prefix=".dcache-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CopyRequest:
    method: str
    url: str
    headers: dict[str, str]
    local_path: str
    remote_url: str


def copy_request(
    settings: ConnectionSettings,
    path: str,
    remote_url: str,
    *,
    direction: Literal["pull", "push"],
    remote_token: str | None = None,
    remote_headers: Mapping[str, str] | None = None,
    credential: str = "none",
    require_checksum: bool | None = None,
    overwrite: bool = True,
    want_digest: str | None = "adler32",
) -> CopyRequest:
    """Headers of an HTTP-TPC COPY; ``TransferHeader*`` values are forwarded by dCache to the remote."""
    if "://" not in remote_url:
        raise ValueError("remote_url must be an absolute URL: dCache only does third-party COPY")
    if credential not in TPC_CREDENTIALS:
        raise ValueError(f"credential must be one of {sorted(TPC_CREDENTIALS)}")
    path = normalize_path(path)
    headers = {
        "Source" if direction == "pull" else "Destination": remote_url,
        "Credential": credential,
        "Overwrite": "T" if overwrite else "F",
    }
    if require_checksum is not None:
        headers["RequireChecksumVerification"] = "true" if require_checksum else "false"
    if want_digest:
        headers["Want-Digest"] = want_digest
    if remote_token:
        token = remote_token.strip()
        if " " not in token:
            token = f"Bearer {token}"
        headers["TransferHeaderAuthorization"] = token
    for name, value in (remote_headers or {}).items():
        key = name if name.lower().startswith("transferheader") else f"TransferHeader{name}"
        headers[key] = value
    return CopyRequest("COPY", door_url(settings, path), headers, path, remote_url)


def copy_result(
    request: CopyRequest, parser: PerfMarkerParser, headers: Mapping[str, str], status: int = 202
) -> TransferResult:
    """The last line decides: dCache sends 202 before the copy even starts.

    A server that finishes synchronously and answers 201/204 with no marker stream at all is taken
    at its word (the status is then the outcome).
    """
    outcome = parser.finish()
    if status != 202 and parser.outcome is None and parser.markers == 0:
        outcome = TransferOutcome(success=True, message=f"HTTP {status}")
    if not outcome.success:
        raise TransferFailed(
            f"third-party copy {'from' if 'Source' in request.headers else 'to'} "
            f"{mask_url(request.remote_url)} failed: {outcome.message}",
            method="COPY",
            url=mask_url(request.url),
        )
    last = parser.last_marker
    return TransferResult(
        path=request.local_path,
        size=last.bytes_transferred if last else None,
        checksums=_checksums.digests_from_headers(headers),
        markers=parser.markers,
    )


def copy_secrets(request: CopyRequest) -> list[str]:
    """Remote credentials to register with the log masker before the request is sent."""
    secrets = []
    for name, value in request.headers.items():
        if name.lower() == "transferheaderauthorization":
            secrets.append(value)
            _scheme, _, token = value.partition(" ")
            if token:
                secrets.append(token)
    return secrets
