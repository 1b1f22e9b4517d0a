"""The shortener's API: create a link, read its metadata and clicks, delete it.

Who may do what:
- create: anyone, or only API keys when `shortener.require_api_key` is true. It is false by default so
  that the embedded default works without declaring keys; a public deployment should turn it on (or put a
  rate-limit rule on POST /api/v1/urls), since an open shortener attracts abuse. The caller's user id (API
  key or trusted user header) becomes the link's owner; anonymous callers create ownerless links.
- read and delete: the owner, or an admin API key. An ownerless link's metadata is public, and only an admin
  may delete it. With `require_api_key`, reads and deletes need an API key too.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.exceptions import CircuitOpen, StorageError
from gateway.identity import Identity
from gateway.request_body import read_json
from gateway.shortener.store import Link
from gateway.shortener.validation import InvalidField, parse_create

if TYPE_CHECKING:
    from gateway.shortener.service import ShortenerService


class AliasTaken(Exception):
    """The custom alias belongs to another link (a deleted one included: codes are never reused)."""


def error(
    request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": code, "detail": detail, "request_id": request.scope.get("gateway.request_id"), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable(request: Request, exc: StorageError) -> JSONResponse:
    retry_after = max(1, math.ceil(exc.retry_after)) if isinstance(exc, CircuitOpen) else 5
    return error(
        request,
        503,
        "storage_unavailable",
        f"the link store is unavailable: {exc}",
        headers={"Retry-After": str(retry_after)},
    )


def owner_of(identity: Identity | None) -> str | None:
    if identity is None or identity.kind == "ip":
        return None
    return identity.user_id


def routes(service: ShortenerService) -> list[BaseRoute]:
    settings = service.config

    def refused(request: Request) -> Response | None:
        identity: Identity | None = request.scope.get("gateway.identity")
        if settings.require_api_key and (identity is None or identity.kind != "api_key"):
            return error(request, 401, "api_key_required", "this shortener needs an API key for that")
        return None

    async def create(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        body = await read_json(request)
        try:
            wanted = parse_create(body, service.rules, time.time())
        except InvalidField as exc:
            return error(request, 400, "invalid_field", exc.detail, field=exc.field)
        try:
            link = await service.create(wanted, owner_of(request.scope.get("gateway.identity")))
        except AliasTaken:
            detail = f"the alias '{wanted.custom_alias}' is taken"
            return error(request, 409, "alias_taken", detail, field="custom_alias")
        except StorageError as exc:
            return unavailable(request, exc)
        return JSONResponse(
            service.describe(link), status_code=201, headers={"Location": f"/api/v1/urls/{link.short_code}"}
        )

    async def one(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        code = request.path_params["code"]
        identity: Identity | None = request.scope.get("gateway.identity")
        try:
            link = await service.store.get(code)
            if link is None or link.deleted_at is not None:
                return error(request, 404, "not_found", f"no short link '{code}'")
            is_admin = identity is not None and identity.kind == "api_key" and identity.admin
            is_owner = link.owner is not None and link.owner == owner_of(identity)
            if request.method == "DELETE":
                if not (is_owner or is_admin):
                    return error(request, 403, "forbidden", "only the link's owner or an admin may delete it")
                await service.delete(link)
                return Response(status_code=204)
            if not (is_owner or is_admin or link.owner is None):
                return error(request, 403, "forbidden", "only the link's owner or an admin may read it")
            daily = await service.store.clicks_by_day(code)
        except StorageError as exc:
            return unavailable(request, exc)
        return JSONResponse(service.describe(link, daily=daily))

    return [
        Route("/api/v1/urls", create, methods=["POST"]),
        Route("/api/v1/urls/{code}", one, methods=["GET", "DELETE"]),
    ]


def describe_link(link: Link, short_url: str) -> dict[str, Any]:
    return {
        "short_url": short_url,
        "short_code": link.short_code,
        "long_url": link.long_url,
        "created_at": rfc3339(link.created_at),
        "expires_at": rfc3339(link.expires_at) if link.expires_at is not None else None,
        "max_visits": link.max_visits,
    }


def rfc3339(epoch: float) -> str:
    whole = math.floor(epoch)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    millis = round((epoch - whole) * 1000)
    return f"{stamp}.{millis:03d}Z" if 0 < millis < 1000 else f"{stamp}Z"
