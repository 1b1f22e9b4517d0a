"""Who may call an endpoint of the gateway's own API: the checks every endpoint uses, each raising one error.

The identity middleware has already said who the caller is (gateway/identity.py); these only decide.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.exceptions import Forbidden
from gateway.identity import Identity
from gateway.responses import send_gateway_error


def caller(request: Request) -> Identity | None:
    identity: Identity | None = request.scope.get("gateway.identity")
    return identity


def is_admin(identity: Identity | None) -> bool:
    return identity is not None and identity.kind == "api_key" and identity.admin


def user_of(identity: Identity | None) -> str | None:
    """The caller's user id, or None for an anonymous caller (known only by address)."""
    if identity is None or identity.kind == "ip":
        return None
    return identity.user_id


def require_api_key(request: Request, action: str) -> Identity:
    """The caller, who must hold an API key: `action` reads "creating notifications" and the like."""
    identity = caller(request)
    if identity is None or identity.kind != "api_key":
        raise Forbidden(f"{action} needs an API key")
    return identity


def require_admin(request: Request, action: str) -> Identity:
    identity = caller(request)
    if not is_admin(identity):
        raise Forbidden(f"{action} needs an admin API key")
    assert identity is not None
    return identity


def require_user_or_admin(request: Request, user_id: str, action: str) -> Identity:
    """The user themself (however identified, but not by address alone) or an admin."""
    identity = caller(request)
    if not (is_admin(identity) or (user_of(identity) is not None and user_of(identity) == user_id)):
        raise Forbidden(f"{action}: only the user themself or an admin API key")
    assert identity is not None
    return identity


#: The scope each part of the own API needs of a managed key (gateway/apikeys.py), by path prefix.
SCOPED_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("/api/v1/notifications/event-types", None),  # public, as the API's description is
    ("/api/v1/keys", "admin"),
    ("/api/v1/rate-limit/check", "admin"),
    ("/api/v1/notifications/dlq", "admin"),
    ("/api/v1/urls", "links"),
    ("/api/v1/notifications", "notifications"),
    ("/api/v1/users/", "notifications"),
)
READ_METHODS = frozenset({"GET", "HEAD"})


def scope_refusal(identity: Identity | None, path: str, method: str) -> str | None:
    """Why a managed key may not make this call, or None. Keys from the YAML (scopes None) may make any."""
    if identity is None or identity.scopes is None or "admin" in identity.scopes:
        return None
    for prefix, needed in SCOPED_PREFIXES:
        if path.startswith(prefix):
            if needed is None:
                return None
            reads = needed != "admin" and method in READ_METHODS and "read" in identity.scopes
            if needed in identity.scopes or reads:
                return None
            return f"this API key's scopes ({', '.join(sorted(identity.scopes))}) do not allow this call"
    return None


class ScopeMiddleware:
    """Refuses, before any endpoint runs, a managed key's call outside its scopes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = scope_refusal(scope.get("gateway.identity"), scope["path"], scope["method"])
            if refusal is not None:
                await send_gateway_error(send, Forbidden(refusal), scope.get("gateway.request_id"))
                return
        await self.app(scope, receive, send)
