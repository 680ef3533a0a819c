"""Function-side SDK for airflow-dcache functions: stdlib only, one file, copied into every image.

A function never holds the user's credentials. It reads the task document
(``airflow-dcache/function-task/v1``) from stdin, downloads each input through its pre-authorised URL
(a DOWNLOAD macaroon for exactly that file), uploads its outputs under the output URL prefix (an
UPLOAD-only macaroon for a private temporary directory) and prints one JSON object as the last line
of stdout: the task's return value. Logs go to stderr.

    import dcache_fn

    def run(task: dcache_fn.Task) -> dict:
        src = task.download(task.inputs[0])
        out = task.workdir / "result.txt"
        out.write_text(src.read_text().upper())
        task.upload(out)
        return {"lines": 1}

    if __name__ == "__main__":
        dcache_fn.main(run)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = "airflow-dcache/function-task/v1"
MAX_RESULT_BYTES = 1024 * 1024
CHUNK = 1024 * 1024


class FunctionError(Exception):
    """A failure the function reports with a one-line reason (exit code 1)."""


class AccessRefused(FunctionError):
    """dCache refused a request (401/403): the macaroon does not allow it."""

    def __init__(self, status: int, reason: str, what: str) -> None:
        super().__init__(f"{what}: refused with {status} {reason}")
        self.status = status
        self.reason = reason


def log(*parts: Any) -> None:
    """Log to stderr (stdout carries the result)."""
    print(*parts, file=sys.stderr, flush=True)


def _strip_query(url: str) -> str:
    """A URL without its query, for messages (the query holds ?authz=<macaroon>)."""
    return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()


def _bearer_from_url(url: str) -> str | None:
    """``Bearer <macaroon>`` from a pre-authorised ``?authz=`` URL (the frontend takes headers only)."""
    tokens = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("authz")
    return f"Bearer {tokens[0]}" if tokens else None


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a door's redirect to a pool, but never carry an Authorization header to another origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old, nxt = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
            if (old.scheme, old.netloc) != (nxt.scheme, nxt.netloc):
                new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameOriginRedirects())


def _digest_header(value: str | None) -> dict[str, str]:
    """Parse ``Digest: adler32=0a1b2c3d,md5=...`` into lowercase algorithm → value."""
    out: dict[str, str] = {}
    for part in (value or "").split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            out[name.strip().lower()] = val.strip()
    return out


class Input:
    """One input file: its dCache path, pre-authorised URL, and the checksums/size the operator saw."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.path: str = doc["path"]
        self.url: str = doc["url"]
        self.authorization: str | None = doc.get("authorization")
        self.checksums: dict[str, str] = dict(doc.get("checksums") or {})
        self.size: int | None = doc.get("size")
        self.frontend_url: str | None = doc.get("frontend_url")
        self.pnfsid: str | None = doc.get("pnfsid")
        self.origin: dict[str, Any] | None = doc.get("origin")
        self.name = self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        """The name without its extension, made fit to prefix output names.

        Never empty (``.h5`` gives ``h5``) and at most 200 bytes (a long name is cut and given a digest
        of the whole name), so ``<stem>.preview.png`` is a valid dCache name for every input name.
        """
        base = self.name.rsplit(".", 1)[0] if "." in self.name.lstrip(".") else self.name.lstrip(".")
        base = base or "input"
        if len(base.encode()) > 200:
            import hashlib

            digest = hashlib.sha256(self.name.encode()).hexdigest()[:12]
            base = base.encode()[:180].decode(errors="ignore") + "-" + digest
        return base

    @property
    def version(self) -> dict[str, Any]:
        """The file version this input is: its origin's (for a replica) or its own path, pnfsid and checksums.

        Put it into outputs so that a result always says which upload it derives from.
        """
        if self.origin:
            return dict(self.origin)
        return {"path": self.path, "pnfsid": self.pnfsid, "checksums": dict(self.checksums)}

    def __repr__(self) -> str:  # never show the URL: it carries the macaroon
        return f"Input({self.path!r})"


class Output:
    """Where outputs go: a URL prefix and the Authorization header value that allows UPLOAD there."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.path: str = doc["path"]
        self.url_prefix: str = doc["url_prefix"].rstrip("/")
        self.authorization: str | None = doc.get("authorization")

    def __repr__(self) -> str:
        return f"Output({self.path!r})"


class Task:
    """The parsed task document plus helpers for moving data."""

    def __init__(self, doc: dict[str, Any], workdir: Path | None = None) -> None:
        if doc.get("schema") != SCHEMA:
            raise FunctionError(f"schema: expected {SCHEMA}, got {doc.get('schema')!r}")
        self.doc = doc
        self.function: str = doc.get("function", "")
        self.parameters: dict[str, Any] = dict(doc.get("parameters") or {})
        self.inputs = [Input(i) for i in doc.get("inputs") or []]
        self.output = Output(doc["output"]) if doc.get("output") else None
        self.deadline: float | None = doc.get("deadline")
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fn-"))
        self.outputs: list[dict[str, Any]] = []

    @classmethod
    def load(cls, stream: Any = None) -> Task:
        """Read the task document from ``$DCACHE_TASK_FILE`` or stdin."""
        path = os.environ.get("DCACHE_TASK_FILE")
        text = Path(path).read_text() if path else (stream or sys.stdin).read()
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise FunctionError(f"task document is not JSON: {exc}") from None
        return cls(doc)

    def _timeout(self) -> float:
        if self.deadline is None:
            return 300.0
        left = self.deadline - time.time()
        if left <= 0:
            raise FunctionError("deadline passed")
        return max(1.0, left)

    def _open(self, request: urllib.request.Request, what: str) -> Any:
        try:
            return _OPENER.open(request, timeout=min(120.0, self._timeout()))
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AccessRefused(exc.code, str(exc.reason), what) from None
            raise FunctionError(f"{what}: {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise FunctionError(f"{what}: {exc.reason}") from None

    # ----------------------------------------------------------------------------- inputs

    def download(self, item: Input, destination: Path | None = None) -> Path:
        """Stream one input to ``destination`` (default: the work directory) and verify it.

        The size and, when the operator or the server gave one, the adler32 must match.
        """
        destination = destination or self.workdir / item.name
        headers = {"Want-Digest": "adler32"}
        if item.authorization:
            headers["Authorization"] = item.authorization
        request = urllib.request.Request(item.url, headers=headers)
        adler, size = 1, 0
        with self._open(request, f"download {item.path}") as response, open(destination, "wb") as out:
            served = _digest_header(response.headers.get("Digest"))
            while chunk := response.read(CHUNK):
                out.write(chunk)
                adler = zlib.adler32(chunk, adler)
                size += len(chunk)
        got = f"{adler:08x}"
        expected = item.checksums.get("adler32") or served.get("adler32")
        if item.size is not None and size != item.size:
            raise FunctionError(f"download {item.path}: got {size} bytes, expected {item.size}")
        if expected and expected.lower() != got:
            raise FunctionError(f"download {item.path}: adler32 {got} != {expected}")
        log(f"downloaded {item.path} ({size} bytes)")
        return destination

    def get(self, url: str, authorization: str | None = None) -> bytes:
        """GET an arbitrary URL with the given credential (used to prove what a macaroon refuses)."""
        headers = {"Authorization": authorization} if authorization else {}
        with self._open(urllib.request.Request(url, headers=headers), f"GET {_strip_query(url)}") as r:
            data: bytes = r.read()
            return data

    def list_directory(self, item: Input) -> list[dict[str, Any]]:
        """The children of a directory input from the frontend namespace API (needs a LIST macaroon)."""
        if not item.frontend_url:
            raise FunctionError(f"input {item.path}: no frontend_url in the task document")
        entries: list[dict[str, Any]] = []
        offset, limit = 0, 1000
        for _ in range(10_000):
            query = urllib.parse.urlencode({"children": "true", "locality": "true", "checksum": "true",
                                            "labels": "true", "offset": offset, "limit": limit})
            url = item.frontend_url + ("&" if "?" in item.frontend_url else "?") + query
            headers = {"Accept": "application/json"}
            credential = item.authorization or _bearer_from_url(item.url)
            if credential:
                headers["Authorization"] = credential
            with self._open(urllib.request.Request(url, headers=headers), f"list {item.path}") as r:
                body = json.loads(r.read())
            children = body.get("children") or []
            entries.extend(children)
            if len(children) < limit:
                break
            offset += limit
        return entries

    # ---------------------------------------------------------------------------- outputs

    def upload(self, source: Path, name: str | None = None) -> dict[str, Any]:
        """PUT ``source`` to ``<url_prefix>/<name>`` and compare the adler32 dCache reports.

        ``name`` may contain ``/`` (dCache creates the parent directories); ``..`` is refused.
        """
        if self.output is None:
            raise FunctionError("this task has no output location")
        name = name or source.name
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise FunctionError(f"upload: bad output name {name!r}")
        name = "/".join(parts)
        url = self.output.url_prefix + "/" + "/".join(urllib.parse.quote(p) for p in parts)
        adler = 1
        with open(source, "rb") as f:
            while chunk := f.read(CHUNK):
                adler = zlib.adler32(chunk, adler)
        size = source.stat().st_size
        headers = {"Want-Digest": "adler32", "Content-Length": str(size),
                   "Content-Type": "application/octet-stream"}
        if self.output.authorization:
            headers["Authorization"] = self.output.authorization
        with open(source, "rb") as body:
            request = urllib.request.Request(url, data=body, headers=headers, method="PUT")
            with self._open(request, f"upload {name}") as response:
                served = _digest_header(response.headers.get("Digest"))
        got = f"{adler:08x}"
        if served.get("adler32") and served["adler32"].lower() != got:
            raise FunctionError(f"upload {name}: dCache stored adler32 {served['adler32']}, sent {got}")
        entry = {"name": name, "size": size, "checksums": {"adler32": got}}
        self.outputs.append(entry)
        log(f"uploaded {name} ({size} bytes)")
        return entry

    def put(self, url: str, data: bytes, authorization: str | None = None) -> int:
        """PUT raw bytes to an arbitrary URL (used to prove what a macaroon refuses)."""
        headers = {"Authorization": authorization} if authorization else {}
        request = urllib.request.Request(url, data=data, headers=headers, method="PUT")
        with self._open(request, f"PUT {_strip_query(url)}") as r:
            return int(r.status)


def emit(result: dict[str, Any]) -> None:
    """Print the result as the last stdout line (compact JSON, at most 1 MiB)."""
    line = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
    if len(line.encode()) > MAX_RESULT_BYTES:
        raise FunctionError(f"result is {len(line.encode())} bytes; the limit is {MAX_RESULT_BYTES}")
    sys.stdout.write("\n" + line + "\n")
    sys.stdout.flush()


def main(run: Callable[[Task], dict[str, Any] | None]) -> None:
    """Load the task, call ``run(task)``, print its result with the uploaded ``outputs``; exit 1 on error.

    Started warm (``$DCACHE_FN_WARM`` set by the runtime), the same call serves one task document after
    the other instead (:func:`_serve`), so a function written for one task needs no change to run warm.
    """
    nonce = os.environ.pop(WARM_ENV, "")
    if nonce:
        sys.exit(_serve(run, nonce))
    try:
        task = Task.load()
        result = dict(run(task) or {})
        result.setdefault("outputs", task.outputs)
        emit(result)
    except FunctionError as exc:
        log(f"error: {exc}")
        sys.exit(1)
    except Exception:
        log(traceback.format_exc())
        sys.exit(1)


# --------------------------------------------------------------------------------- warm mode
#
# The runtime keeps one process (or container) per chunk and sends it one task document per file.
# The channel is the process's own stdin/stdout, one JSON object per line:
#
#   runtime -> function  {"seq": 1, "task": <task document>, "env": {"NAME": "value"}}
#   function -> runtime  {"type": "ready", "protocol": 1, "pid": 7}              (once, after the imports)
#                        {"type": "done", "seq": 1, "status": 0, "result": {...}}  (one per document)
#
# So that nothing the function prints can corrupt that channel, the loop keeps private copies of
# file descriptors 0 and 1 and points fd 1 at stderr (what a function prints becomes log) and fd 0 at
# /dev/null; child processes inherit that too. Each document gets its own working directory (also
# HOME and TMPDIR), its own environment on top of the instance's, and a marker line on stderr when it
# ends, which is how the runtime cuts the shared stderr stream into one log per document.

WARM_ENV = "DCACHE_FN_WARM"
PROTOCOL = 1
_MARK = "\x1edcache-fn:"


def _mark(nonce: str, tag: str) -> None:
    """End a log segment: a line only this instance's runtime knows (the nonce) on stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(2, f"\n{_MARK}{nonce}:{tag}\n".encode())


def _status(exc: SystemExit) -> int:
    """The exit status ``sys.exit(code)`` would have given (``None`` 0, an int itself, anything else 1)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    log(str(code))
    return 1


def _one(run: Callable[[Task], dict[str, Any] | None], doc: Any, workdir: Path) -> dict[str, Any]:
    """Run one document as :func:`main` would run it cold; the reply frame (without ``seq``)."""
    try:
        if not isinstance(doc, dict):
            raise FunctionError("task document is not a JSON object")
        task = Task(doc, workdir=workdir)
        result = dict(run(task) or {})
        result.setdefault("outputs", task.outputs)
        line = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
        if len(line.encode()) > MAX_RESULT_BYTES:
            raise FunctionError(f"result is {len(line.encode())} bytes; the limit is {MAX_RESULT_BYTES}")
        return {"status": 0, "result": json.loads(line)}
    except FunctionError as exc:
        log(f"error: {exc}")
        return {"status": 1}
    except SystemExit as exc:  # sys.exit(3) in a function: that document's exit status, as cold
        return {"status": _status(exc)}
    except Exception:
        log(traceback.format_exc())
        return {"status": 1}


def _serve(run: Callable[[Task], dict[str, Any] | None], nonce: str) -> int:
    """The warm loop: answer task documents from stdin until EOF; returns the exit status (0)."""
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "wb")
    requests = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)  # whatever the function prints goes to the log, never into the channel
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    base_env = dict(os.environ)
    base_dir = Path(tempfile.gettempdir())
    home = os.getcwd()

    def reply(frame: dict[str, Any]) -> None:
        replies.write(json.dumps(frame, separators=(",", ":"), default=str).encode() + b"\n")
        replies.flush()

    _mark(nonce, "ready")
    reply({"type": "ready", "protocol": PROTOCOL, "pid": os.getpid()})
    for line in requests:
        if not line.strip():
            continue
        try:
            frame = json.loads(line)
            seq = int(frame["seq"])
        except (ValueError, KeyError, TypeError):
            log("error: a malformed request frame; stopping")
            return 2
        workdir = Path(tempfile.mkdtemp(prefix=f"doc-{seq}-", dir=base_dir))
        env = {str(k): str(v) for k, v in (frame.get("env") or {}).items()}
        os.environ.clear()
        os.environ.update({**base_env, "HOME": str(workdir), "TMPDIR": str(workdir), **env})
        tempfile.tempdir = str(workdir)
        os.chdir(workdir)
        try:
            answer = _one(run, frame.get("task"), workdir)
        finally:
            os.chdir(home)
            tempfile.tempdir = None
            os.environ.clear()
            os.environ.update(base_env)
            shutil.rmtree(workdir, ignore_errors=True)
        _mark(nonce, f"end:{seq}")
        reply({"type": "done", "seq": seq, **answer})
    return 0
