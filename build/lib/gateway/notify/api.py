"""The notification API: create, status, preferences, receipts, and the dead-letter queue (admin)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.engines.database import UniqueViolation
from gateway.exceptions import StorageError
from gateway.identity import Identity
from gateway.notify import dlq, metrics
from gateway.notify.idempotency import MAX_KEY_LENGTH, Idempotency, fingerprint
from gateway.notify.models import FieldError, parse_preferences, parse_request
from gateway.notify.receipts import Unauthorized, read_receipt
from gateway.notify.service import NotificationService
from gateway.notify.templates import TemplateDataError
from gateway.request_body import read_json

Handler = Callable[[Request], Awaitable[Response]]
REPLAY_HEADER = "Idempotent-Replay"


def error(
    request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": code, "detail": detail, "request_id": request.scope.get("gateway.request_id"), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def invalid(request: Request, exc: FieldError) -> JSONResponse:
    return error(request, 400, "invalid_field", exc.detail, field=exc.field)


def identity_of(request: Request) -> Identity | None:
    return request.scope.get("gateway.identity")


def routes(service: NotificationService, *, public_url: str) -> list[BaseRoute]:
    if not service.enabled:
        return []

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if not service.ready:
                raise StorageError("the notification store is not ready yet")
            return await handler(request)

        return endpoint

    async def create(request: Request) -> Response:
        identity = identity_of(request)
        if identity is None or identity.kind != "api_key":
            return error(request, 403, "forbidden", "creating notifications needs an API key")
        body = await read_json(request)
        key = request.headers.get("idempotency-key")
        claim: tuple[str, str] | None = None
        if key is not None:
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                return invalid(request, FieldError("Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} characters"))
            claim = (Idempotency.scoped(identity.user_id, key), fingerprint(body))
            known = await service.idempotency.recorded(*claim)
            if known is not None:
                return answer(request, known.verdict, known.response)
        try:
            notification = parse_request(body, service.channels, max_recipients=service.settings.max_recipients)
            if notification.template_id not in service.templates.ids:
                raise FieldError("template_id", f"unknown template {notification.template_id!r}")
            contents = service.render(notification)
        except FieldError as exc:
            return invalid(request, exc)
        except TemplateDataError as exc:
            return error(
                request, 400, "template_error", str(exc), template_id=exc.template_id, channel=exc.channel,
                variables=exc.variables,
            )  # fmt: skip
        if claim is not None:
            outcome = await service.idempotency.claim(*claim)
            if outcome.verdict != "new":
                return answer(request, outcome.verdict, outcome.response)
        try:
            text = await service.create(notification, created_by=identity.user_id, idempotency=claim, contents=contents)
        except UniqueViolation:
            assert claim is not None  # the only unique key a create can hit
            known = await service.idempotency.recorded(*claim)
            return answer(request, known.verdict if known else "in_progress", known.response if known else None)
        except BaseException:
            if claim is not None:
                await service.idempotency.release(*claim)
            raise
        return Response(text, status_code=202, media_type="application/json")

    def answer(request: Request, verdict: str, response: str | None) -> Response:
        if verdict == "replay" and response is not None:
            metrics.REPLAYED.inc()
            return Response(response, 202, media_type="application/json", headers={REPLAY_HEADER: "true"})
        if verdict == "mismatch":
            detail = "this Idempotency-Key was used with a different request body"
            return error(request, 422, "idempotency_key_reused", detail)
        detail = "a request with this Idempotency-Key is still being processed"
        return error(request, 409, "idempotency_key_in_progress", detail, headers={"Retry-After": "1"})

    async def status(request: Request) -> Response:
        identity = identity_of(request)
        if identity is None or identity.kind != "api_key":
            return error(request, 403, "forbidden", "reading a notification's status needs an API key")
        found = await service.status(request.path_params["notification_id"])
        if found is None or not (identity.admin or found["created_by"] == identity.user_id):
            return error(request, 404, "not_found", "no such notification")
        return JSONResponse(found)

    def may_edit(request: Request, user_id: str) -> bool:
        identity = identity_of(request)
        if identity is None or identity.kind == "ip":
            return False
        return identity.admin or identity.user_id == user_id

    async def get_preferences(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if not may_edit(request, user_id):
            return error(request, 403, "forbidden", "only the user themself or an admin API key")
        preferences = await service.preferences(user_id)
        return JSONResponse({"user_id": user_id, **preferences.to_json(), "stored": preferences.stored})

    async def put_preferences(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if not may_edit(request, user_id):
            return error(request, 403, "forbidden", "only the user themself or an admin API key")
        try:
            preferences = parse_preferences(user_id, await read_json(request), service.channels)
        except FieldError as exc:
            return invalid(request, exc)
        await service.store.put_preferences(preferences, service.now())
        return JSONResponse({"user_id": user_id, **preferences.to_json(), "stored": True})

    async def receipt(request: Request) -> Response:
        name = request.path_params["channel"]
        channel = service.channels.get(name)
        if channel is None:
            return error(request, 404, "not_found", f"no channel {name!r}")
        try:
            found = await read_receipt(request, channel, public_url)
        except FieldError as exc:
            return invalid(request, exc)
        except Unauthorized:
            return error(request, 403, "forbidden", "a receipt needs the provider's signature or an admin API key")
        updated = 0
        if found is not None:
            updated = await service.store.apply_receipt(
                name, found.provider_id, found.status, found.error, service.now()
            )
            metrics.RECEIPTS.labels(name, found.status).inc(updated)
        return JSONResponse({"updated": updated})

    def admin_only(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            identity = identity_of(request)
            if identity is None or identity.kind != "api_key" or not identity.admin:
                return error(request, 403, "forbidden", "the dead-letter queue needs an admin API key")
            return await handler(request)

        return endpoint

    async def dlq_list(request: Request) -> Response:
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return invalid(request, FieldError("limit", "limit must be an integer"))
        rows = await dlq.entries(service.store.db, limit=limit)
        return JSONResponse({"entries": [dlq.describe(row) for row in rows]})

    async def dlq_replay(request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        job = await dlq.replay(service.store.db, service.queue, entry_id, now=service.now())
        if job is None:
            return error(request, 404, "not_found", "no dead-letter entry with this id waiting for a replay")
        return JSONResponse({"id": entry_id, "status": "requeued"}, status_code=202)

    return [
        Route("/api/v1/notifications", guarded(create), methods=["POST"]),
        Route("/api/v1/notifications/dlq", guarded(admin_only(dlq_list)), methods=["GET"]),
        Route("/api/v1/notifications/dlq/{entry_id}/replay", guarded(admin_only(dlq_replay)), methods=["POST"]),
        Route("/api/v1/notifications/receipts/{channel}", guarded(receipt), methods=["POST"]),
        Route("/api/v1/notifications/{notification_id}/status", guarded(status), methods=["GET"]),
        Route("/api/v1/users/{user_id}/preferences", guarded(get_preferences), methods=["GET"]),
        Route("/api/v1/users/{user_id}/preferences", guarded(put_preferences), methods=["PUT"]),
    ]
