"""Down-scoped bearer tokens for functions, by OAuth 2.0 Token Exchange (RFC 8693) at the token's issuer.

Where a site authenticates with WLCG tokens, nobody but the issuer can sign one, so the runner
cannot mint a per-file credential the way it mints a macaroon. It asks the issuer instead: the
pipeline's own token is the ``subject_token``, the request names exactly one ``storage.*`` scope for
one file (or the private output directory), and the issuer, which allows only down-scoping, answers
with a token that can do that and nothing else. The token endpoint comes from the issuer's
``/.well-known/openid-configuration``. Connection extras tune it (all optional):

* ``token_prefix``: the site's path prefix for this issuer (scope paths are relative to it; default ``/``);
* ``token_audience``: the ``audience`` requested (default: the pipeline token's ``aud``);
* ``token_exchange_client_id`` / ``token_exchange_client_secret``: client authentication (HTTP Basic),
  which issuers such as INDIGO IAM require for token exchange.

No token ever appears in an exception or log line; each is registered with the log masker at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_dcache.hooks.models import AuthType, ConnectionSettings
from airflow_dcache.hooks.token_file import TokenFileReader

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CREDENTIAL_KINDS = ("macaroon", "token")

#: The narrowest WLCG scope covering a set of dCache activities, widest need first.
_SCOPE_FOR: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"DELETE", "MANAGE"}), "storage.modify"),
    (frozenset({"STAGE"}), "storage.stage"),
    (frozenset({"UPLOAD", "UPDATE_METADATA"}), "storage.create"),
    (frozenset({"DOWNLOAD", "LIST", "READ_METADATA"}), "storage.read"),
)


class TokenExchangeError(Exception):
    """The exchange could not be done; the message names the field or the issuer's error, never a token."""


def scope_label(activities: Iterable[str]) -> str:
    """The WLCG scope for ``activities`` (e.g. DOWNLOAD → storage.read, UPLOAD → storage.create).

    A set that needs several labels (UPLOAD and DOWNLOAD) gets the one that covers both only when it
    exists (storage.modify does not read), so such a set is refused rather than silently widened.
    """
    wanted = {a.upper() for a in activities}
    for triggers, label in _SCOPE_FOR:
        if wanted & triggers:
            covered = _COVERED[label]
            if not wanted <= covered:
                raise TokenExchangeError(f"activities {sorted(wanted)} fit no single WLCG storage scope")
            return label
    raise TokenExchangeError(f"activities {sorted(wanted)} fit no WLCG storage scope")


_COVERED = {
    "storage.read": {"DOWNLOAD", "LIST", "READ_METADATA"},
    "storage.stage": {"DOWNLOAD", "LIST", "READ_METADATA", "STAGE"},
    "storage.create": {"UPLOAD", "UPDATE_METADATA", "READ_METADATA", "MANAGE"},
    "storage.modify": {"UPLOAD", "UPDATE_METADATA", "READ_METADATA", "MANAGE", "DELETE", "LIST"},
}


def unverified_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, not verified (the service verifies; here we only need ``iss`` and ``aud``)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenExchangeError("credentials='token' needs the connection's token to be a JWT")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise TokenExchangeError("the connection's token is not a well-formed JWT") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("iss"), str):
        raise TokenExchangeError("the connection's token has no issuer (iss)")
    return payload


def subject_token(settings: ConnectionSettings) -> str:
    """The pipeline's current token: inline, or read from its (possibly rotated) token file."""
    if settings.auth_type is AuthType.BEARER and settings.token:
        return settings.token
    if settings.auth_type is AuthType.TOKEN_FILE and settings.token_file:
        return TokenFileReader(settings.token_file).read()[0]
    raise TokenExchangeError(f"credentials='token' needs a connection with auth_type bearer or token_file, "
                             f"not {settings.auth_type.value}")


@dataclass
class TokenExchanger:
    """Exchanges the pipeline's token for one scope at a time at the issuer's token endpoint."""

    settings: ConnectionSettings
    token: str = field(repr=False)
    issuer: str
    prefix: str = "/"
    audience: str | list[str] | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    _endpoint: str | None = field(default=None, repr=False)

    @classmethod
    def from_connection(cls, settings: ConnectionSettings, extras: Mapping[str, Any], *,
                        prefix: str | None = None, audience: str | None = None) -> TokenExchanger:
        """Build from the connection (extras as described in the module) and operator overrides."""
        token = subject_token(settings)
        claims = unverified_claims(token)
        prefix = prefix if prefix is not None else extras.get("token_prefix", "/")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise TokenExchangeError(f"token_prefix must be an absolute path, got {prefix!r}")
        aud = audience if audience is not None else extras.get("token_audience") or claims.get("aud")
        client_id = extras.get("token_exchange_client_id")
        secret = extras.get("token_exchange_client_secret")
        if (client_id is None) != (secret is None):
            raise TokenExchangeError("token_exchange_client_id and token_exchange_client_secret go together")
        if secret:
            from airflow.sdk.log import mask_secret

            mask_secret(str(secret))
        return cls(settings, token, claims["iss"], "/" + prefix.strip("/") if prefix.strip("/") else "/",
                   aud, client_id, secret)

    def scope_path(self, ns_path: str) -> str:
        """``ns_path`` relative to the issuer's prefix on this site (scope paths are)."""
        if self.prefix == "/":
            return ns_path
        if ns_path == self.prefix:
            return "/"
        if not ns_path.startswith(self.prefix + "/"):
            raise TokenExchangeError(f"{ns_path} is outside the token prefix {self.prefix}: no scope can name it")
        return ns_path[len(self.prefix):]

    def token_for(self, ns_path: str, activities: Iterable[str]) -> str:
        """A token allowing exactly ``activities`` on ``ns_path`` (and below it, for a directory)."""
        return self.exchange(f"{scope_label(activities)}:{self.scope_path(ns_path)}")

    def exchange(self, scope: str) -> str:
        """One RFC 8693 request; the issuer refuses anything wider than the pipeline's own token."""
        form: dict[str, str] = {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": self.token,
                                "subject_token_type": ACCESS_TOKEN_TYPE,
                                "requested_token_type": ACCESS_TOKEN_TYPE, "scope": scope}
        if isinstance(self.audience, str):
            form["audience"] = self.audience
        elif isinstance(self.audience, list) and self.audience:
            form["audience"] = " ".join(str(a) for a in self.audience)
        auth = (self.client_id, self.client_secret) if self.client_id and self.client_secret else None
        status, doc = self._post(self.endpoint(), form, auth)
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if status != 200 or not isinstance(token, str) or not token:
            error = doc.get("error", "") if isinstance(doc, dict) else ""
            why = doc.get("error_description", "") if isinstance(doc, dict) else ""
            raise TokenExchangeError(f"token exchange for scope {scope} refused by {self.endpoint()}: "
                                     f"HTTP {status} {str(error)[:64]} {str(why)[:200]}".rstrip())
        from airflow_dcache.utils.masking import masked_part
        from airflow_dcache.version_compat import mask_for_task_logs

        mask_for_task_logs(masked_part(token))  # one per input: whole tokens would make masking quadratic
        return token

    def endpoint(self) -> str:
        """The issuer's token endpoint, from its OpenID discovery document (fetched once)."""
        if self._endpoint is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            status, doc = self._get(url)
            endpoint = doc.get("token_endpoint") if isinstance(doc, dict) else None
            if status != 200 or not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise TokenExchangeError(f"issuer {self.issuer} publishes no token_endpoint ({url}: HTTP {status})")
            self._endpoint = endpoint
        return self._endpoint

    # -- HTTP -----------------------------------------------------------------------------------
    def _session(self) -> Any:
        import requests

        session = requests.Session()
        session.trust_env = False
        session.verify = self.settings.ca_bundle or self.settings.verify
        return session

    def _get(self, url: str) -> tuple[int, Any]:
        import requests

        try:
            with self._session() as session:
                response = session.get(url, timeout=self.settings.timeout, headers={"Accept": "application/json"})
                return response.status_code, _json(response)
        except requests.RequestException as exc:
            raise TokenExchangeError(f"cannot reach issuer {self.issuer}: {type(exc).__name__}") from None

    def _post(self, url: str, form: dict[str, str], auth: tuple[str, str] | None) -> tuple[int, Any]:
        import requests

        try:
            with self._session() as session:
                response = session.post(url, data=form, auth=auth, timeout=self.settings.timeout,
                                        headers={"Accept": "application/json"})
                return response.status_code, _json(response)
        except requests.RequestException as exc:
            raise TokenExchangeError(f"cannot reach token endpoint {url}: {type(exc).__name__}") from None


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
