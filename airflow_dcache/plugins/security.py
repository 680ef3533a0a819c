"""Who is calling: Airflow's own authentication for every endpoint of the dCache view.

A plugin's FastAPI app is mounted under the API server but gets none of the core API's dependencies,
so each route here depends on :func:`require_viewer` (the page calls it itself, with :func:`bearer`).
It resolves the caller exactly as the core API does (``Authorization: Bearer`` first, else the UI's
``_token`` cookie) through the configured auth
manager, refuses anonymous callers (401) and callers the auth manager does not allow the ``dCache``
custom view (403). The caller's token is kept so the backend can call Airflow's REST API *as the
user* (DAG runs, assets): Airflow's authorisation then decides, not this plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

RESOURCE_NAME = "dCache"
COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    """The authenticated Airflow user and the JWT they presented (never logged, never sent to dCache)."""

    user: Any
    token: str

    @property
    def name(self) -> str:
        getter = getattr(self.user, "get_name", None)
        return str(getter() if callable(getter) else getattr(self.user, "username", "?"))

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"Caller(user={self.name!r})"


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def bearer(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's ``Authorization: Bearer`` credentials (``None`` without), for routes that call
    :func:`authenticate` themselves (the page): the header counts there exactly as on the API routes."""
    return await _bearer(request)


async def authenticate(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    """The caller, or 401 (no or expired token) / 403 (invalid token), as the core API answers."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    if credentials is not None and credentials.scheme.lower() == "bearer":
        token: str | None = credentials.credentials
    else:
        token = request.cookies.get(COOKIE)
    user = await resolve_user_from_token(token)  # raises HTTPException 401/403
    assert token is not None
    return Caller(user, token)


async def require_viewer(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """An authenticated caller allowed to see the ``dCache`` view (auth manager's custom-view check)."""
    if not _auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME, user=caller.user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"not allowed to use the {RESOURCE_NAME} view")
    return caller


def may_trigger(caller: Caller, dag_id: str) -> bool:
    """The auth manager's answer to "may this user create a run of ``dag_id``" (a pre-check for a clear 403)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return bool(_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                  details=DagDetails(id=dag_id), user=caller.user))


def login_url(next_url: str) -> str:
    """Where the page sends an anonymous browser (the auth manager's login, coming back afterwards)."""
    try:
        return str(_auth_manager().get_url_login(next_url=next_url))
    except Exception:  # a manager without a login page: Airflow's default route
        return f"/auth/login?next={next_url}"


ViewerDep = Annotated[Caller, Depends(require_viewer)]
