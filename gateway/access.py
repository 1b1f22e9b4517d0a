"""Who may call an endpoint of the gateway's own API: the checks every endpoint uses, each raising one error.

The identity middleware has already said who the caller is (gateway/identity.py); these only decide.
"""

from __future__ import annotations

from starlette.requests import Request

from gateway.exceptions import Forbidden
from gateway.identity import Identity


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
