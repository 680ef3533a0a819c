"""A test OAuth2/OIDC token issuer: signs WLCG-profile JWTs the service accepts when configured.

Real sites get tokens from INDIGO IAM, CILogon or similar; tests need the same kind of token under
their own control. :class:`TokenIssuer` generates a key pair, publishes its JWKS as a file and
(optionally) over HTTP on 127.0.0.1 with an OpenID discovery document, mints tokens with any scopes,
audience, lifetime and groups, and answers RFC 8693 token exchange requests by *down-scoping* only::

    issuer = TokenIssuer(tmp_path, serve=True)
    issuers_file = issuer.write_issuers_file(tmp_path / "issuers.json", prefix="/data")
    server = start_server(tmp_path / "srv", "--token-issuers", str(issuers_file))
    token = issuer.mint(scope="storage.read:/run1", aud=issuer.audience)
    issuer.close()
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: The RFC 8693 grant type and token type the exchange endpoint speaks.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: A scope label covers itself and these (the WLCG profile: modify ⊇ create, stage ⊇ read).
_COVERS = {"storage.modify": {"storage.modify", "storage.create"}, "storage.stage": {"storage.stage", "storage.read"}}
_DEFAULT_AUDIENCE = "https://dcache.test"


def _private_key(alg: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if alg.startswith("ES"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    maker = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    jwk = dict(maker.to_jwk(key.public_key(), as_dict=True))
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


def scope_within(requested: str, granted: Iterable[str]) -> bool:
    """Whether one requested scope is covered by a granted one (same or wider label, same or parent path)."""
    label, _, path = requested.partition(":")
    for have in granted:
        have_label, _, have_path = have.partition(":")
        if label not in _COVERS.get(have_label, {have_label}):
            continue
        if not path and not have_path:
            return True
        if path and have_path:
            base = have_path.rstrip("/") or "/"
            norm = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
            if ".." in path.split("/"):
                continue
            if base == "/" or norm == base or norm.startswith(base + "/"):
                return True
    return False


class TokenIssuer:
    """A key pair, its JWKS file, a minting method and (with ``serve``) an HTTP issuer on 127.0.0.1.

    :param base: directory for ``jwks.json``.
    :param issuer: the ``iss`` value; with ``serve`` it is the HTTP server's URL and may not be given.
    :param alg: ``RS256`` or ``ES256``.
    :param serve: publish discovery, JWKS and a token-exchange endpoint over HTTP.
    :param audience: the audience minted tokens carry by default (and the one the issuers file accepts).
    """

    def __init__(self, base: Path, issuer: str | None = None, *, alg: str = "RS256", serve: bool = False,
                 audience: str = _DEFAULT_AUDIENCE) -> None:
        if alg not in ("RS256", "ES256"):
            raise ValueError("alg must be RS256 or ES256")
        if serve and issuer is not None:
            raise ValueError("a served issuer's iss is its URL; do not pass issuer")
        base.mkdir(parents=True, exist_ok=True)
        self.alg = alg
        self.audience = audience
        self.kid = uuid.uuid4().hex[:12]
        self._key = _private_key(alg)
        self.jwks_path = base / "jwks.json"
        self.exchanges: list[dict[str, str]] = []  # requests the exchange endpoint answered (no tokens)
        self.jwks_fetches = 0  # GET /jwks served: lets tests see how often a relying party refreshes
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if serve:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._thread = threading.Thread(target=self._server.serve_forever, name="token-issuer", daemon=True)
            self._thread.start()
            issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = issuer or "https://issuer.test"
        self.write_jwks()

    # -- keys ------------------------------------------------------------------------------------
    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [_public_jwk(self._key, self.kid, self.alg)]}

    @property
    def public_pem(self) -> bytes:
        """The public key in PEM form (what an algorithm-confusion attack would use as an HMAC secret)."""
        from cryptography.hazmat.primitives import serialization

        return bytes(self._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))

    @property
    def jwks_url(self) -> str | None:
        return f"{self.issuer}/jwks" if self._server is not None else None

    def write_jwks(self) -> Path:
        """(Re)write the JWKS file, e.g. after :meth:`rotate`."""
        self.jwks_path.write_text(json.dumps(self.jwks), encoding="utf-8")
        return self.jwks_path

    def rotate(self) -> None:
        """A new key pair and kid, published at once; tokens signed before no longer verify."""
        self.kid = uuid.uuid4().hex[:12]
        self._key = _private_key(self.alg)
        self.write_jwks()

    # -- tokens ----------------------------------------------------------------------------------
    def claims(self, *, sub: str = "test-subject", scope: str | None = None, aud: str | list[str] | None = "",
               lifetime: float = 600, nbf: float | None = None, iat: float | None = None,
               groups: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
        """The claims :meth:`mint` signs; ``aud=""`` means the issuer's default audience, None none."""
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "wlcg.ver": "1.0", "jti": uuid.uuid4().hex,
            "iat": int(now if iat is None else iat), "exp": int(now + lifetime),
        }
        if nbf is not None:
            claims["nbf"] = int(nbf)
        if aud is not None:
            claims["aud"] = aud or self.audience
        if scope is not None:
            claims["scope"] = scope
        groups = list(groups)
        if groups:
            claims["wlcg.groups"] = groups
        claims.update(extra)
        return claims

    def mint(self, *, kid: str | None = None, key: Any = None, alg: str | None = None,
             headers: Mapping[str, Any] | None = None, **claims: Any) -> str:
        """A signed JWT; ``kid``/``key``/``alg`` let a test forge what a real issuer never would."""
        import jwt

        payload = self.claims(**claims)
        return jwt.encode(payload, key if key is not None else self._key, algorithm=alg or self.alg,
                          headers={"kid": kid or self.kid, **(headers or {})})

    def decode(self, token: str) -> dict[str, Any]:
        """A token this issuer signed, verified (signature, exp); raises ``jwt.PyJWTError`` otherwise."""
        import jwt

        return dict(jwt.decode(token, self._key.public_key(), algorithms=[self.alg],
                               options={"verify_aud": False}))

    # -- configuration for the service --------------------------------------------------------------
    def issuer_config(self, *, prefix: str = "/", use_url: bool = False, **fields: Any) -> dict[str, Any]:
        """This issuer's entry of a ``--token-issuers`` file; ``fields`` add or override keys."""
        jwks = self.jwks_url if use_url and self.jwks_url else str(self.jwks_path)
        return {"issuer": self.issuer, "jwks": jwks, "prefix": prefix, "audiences": [self.audience], **fields}

    def write_issuers_file(self, path: Path, *extra_issuers: Mapping[str, Any], **fields: Any) -> Path:
        """Write a ``--token-issuers`` file trusting this issuer (and ``extra_issuers``)."""
        path.write_text(json.dumps({"issuers": [self.issuer_config(**fields), *extra_issuers]}), encoding="utf-8")
        return path

    # -- RFC 8693 --------------------------------------------------------------------------------
    def exchange(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a token-exchange request: only a narrower scope (and shorter life) is ever granted."""
        import jwt

        if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            return 400, {"error": "unsupported_grant_type"}
        if form.get("subject_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            return 400, {"error": "invalid_request", "error_description": "subject_token_type"}
        try:
            subject = self.decode(form.get("subject_token", ""))
        except jwt.PyJWTError:
            return 400, {"error": "invalid_grant", "error_description": "subject token is not valid"}
        granted = str(subject.get("scope", "")).split()
        wanted = [s for s in form.get("scope", "").split() if s]
        if not wanted:
            return 400, {"error": "invalid_scope", "error_description": "a down-scoped token needs a scope"}
        if not all(scope_within(s, granted) for s in wanted):
            return 400, {"error": "invalid_scope", "error_description": "requested scope exceeds the subject token's"}
        lifetime = max(1.0, min(float(subject["exp"]) - time.time(), float(form.get("lifetime", 3600) or 3600)))
        audience = form.get("audience") or subject.get("aud") or self.audience
        token = self.mint(sub=str(subject.get("sub", "")), scope=" ".join(wanted), aud=audience, lifetime=lifetime,
                          groups=subject.get("wlcg.groups", ()), act={"sub": str(subject.get("sub", ""))})
        self.exchanges.append({"scope": " ".join(wanted), "audience": str(audience)})
        return 200, {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                     "expires_in": int(lifetime), "scope": " ".join(wanted)}

    def close(self) -> None:
        """Stop the HTTP server, if any; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> TokenIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # request lines could carry tokens in a query; keep test output clean

        def _json(self, status: int, doc: Mapping[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._json(200, {"issuer": issuer.issuer, "jwks_uri": f"{issuer.issuer}/jwks",
                                 "token_endpoint": f"{issuer.issuer}/token",
                                 "grant_types_supported": [TOKEN_EXCHANGE_GRANT]})
            elif self.path == "/jwks":
                issuer.jwks_fetches += 1
                self._json(200, issuer.jwks)
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= 65536:
                self._json(413, {"error": "invalid_request"})
                return
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8", "replace")))
            status, doc = issuer.exchange(form)
            self._json(status, doc)

    return Handler
