"""The notification API: create, status, preferences, receipts, and the dead-letter queue (admin).

Endpoints raise the gateway's errors (gateway/exceptions.py); one handler renders them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import metrics
from gateway.access import is_admin, require_admin, require_api_key, require_user_or_admin
from gateway.cursors import decode_cursor, encode_cursor, page_size
from gateway.engines.database import UniqueViolation
from gateway.events import catalog
from gateway.exceptions import Conflict, IdempotencyKeyReused, InvalidField, NotFound, StorageError
from gateway.notify import dlq
from gateway.notify.idempotency import MAX_KEY_LENGTH, Idempotency, fingerprint
from gateway.notify.models import PENDING, parse_preferences, parse_request
from gateway.notify.receipts import read_receipt
from gateway.notify.service import NotificationService, delivery_view
from gateway.request_body import read_json
from gateway.timestamps import format_time, parse_time

REPLAY_HEADER = "Idempotent-Replay"


def service_of(request: Request) -> NotificationService:
    """The notification service of the app serving `request`, once its store has answered."""
    service: NotificationService = request.app.state.notifications
    if not service.ready:
        raise StorageError("the notification store is not ready yet")
    return service


async def create(request: Request) -> Response:
    service = service_of(request)
    identity = require_api_key(request, "creating notifications")
    body = await read_json(request)
    key = request.headers.get("idempotency-key")
    claim: tuple[str, str] | None = None
    if key is not None:
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise InvalidField("Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} characters")
        claim = (Idempotency.scoped(identity.user_id, key), fingerprint(body))
        known = await service.idempotency.recorded(*claim)
        if known is not None:
            return answer(known.verdict, known.response)
    notification = parse_request(body, service.channels, max_recipients=service.settings.max_recipients)
    if notification.template_id not in service.templates.ids:
        raise InvalidField("template_id", f"unknown template {notification.template_id!r}")
    contents = service.render(notification)
    if claim is not None:
        outcome = await service.idempotency.claim(*claim)
        if outcome.verdict != "new":
            return answer(outcome.verdict, outcome.response)
    try:
        text = await service.create(notification, created_by=identity.user_id, idempotency=claim, contents=contents)
    except UniqueViolation:
        assert claim is not None  # the only unique key a create can hit
        known = await service.idempotency.recorded(*claim)
        return answer(known.verdict if known else "in_progress", known.response if known else None)
    except BaseException:
        if claim is not None:
            await service.idempotency.release(*claim)
        raise
    return Response(text, status_code=202, media_type="application/json")


def answer(verdict: str, response: str | None) -> Response:
    """What a request with a known Idempotency-Key gets: the first answer again, or why not."""
    if verdict == "replay" and response is not None:
        metrics.NOTIFY_REPLAYED.inc()
        return Response(response, 202, media_type="application/json", headers={REPLAY_HEADER: "true"})
    if verdict == "mismatch":
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    detail = "a request with this Idempotency-Key is still being processed"
    raise Conflict("idempotency_key_in_progress", detail, retry_after_s=1)


async def status(request: Request) -> Response:
    service = service_of(request)
    identity = require_api_key(request, "reading a notification's status")
    found = await service.status(request.path_params["notification_id"])
    if found is None or not (is_admin(identity) or found["created_by"] == identity.user_id):
        raise NotFound("no such notification")
    return JSONResponse(found)


async def get_preferences(request: Request) -> Response:
    service = service_of(request)
    user_id = request.path_params["user_id"]
    require_user_or_admin(request, user_id, "reading preferences")
    preferences = await service.preferences(user_id)
    return JSONResponse({"user_id": user_id, **preferences.to_json(), "stored": preferences.stored})


#: The `status` filter of a user's notifications: a delivery status, or `pending` for every not yet sent one.
STATUS_FILTERS = frozenset({"pending", "sent", "delivered", "opened", "failed", "skipped"})


async def user_notifications(request: Request) -> Response:
    """`GET /api/v1/users/{user_id}/notifications?from=&to=&status=&cursor=&limit=`: newest first, each with its
    deliveries to that user; the user themself or an admin."""
    service = service_of(request)
    user_id = request.path_params["user_id"]
    require_user_or_admin(request, user_id, "reading a user's notifications")
    query = request.query_params
    since = parse_time("from", query["from"]) if "from" in query else None
    until = parse_time("to", query["to"]) if "to" in query else None
    statuses: list[str] | None = None
    if "status" in query:
        wanted = [part.strip() for part in query["status"].split(",") if part.strip()]
        unknown = sorted(set(wanted) - STATUS_FILTERS)
        if not wanted or unknown:
            raise InvalidField("status", f"status must be some of {sorted(STATUS_FILTERS)} (comma-separated)")
        statuses = sorted({s for want in wanted for s in (PENDING if want == "pending" else {want})})
    limit = page_size(query.get("limit"))
    cursor = query.get("cursor")
    found = await service.store.user_notifications(
        user_id,
        since=since,
        until=until,
        statuses=statuses,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = found[:limit]
    next_cursor = encode_cursor(page[-1][0]["created_at"], page[-1][0]["id"]) if len(found) > limit else None
    entries = [
        {
            "notification_id": notification["id"],
            "template_id": notification["template_id"],
            "priority": notification["priority"],
            "created_at": format_time(notification["created_at"]),
            "deliveries": [delivery_view(row) for row in rows],
        }
        for notification, rows in page
    ]
    return JSONResponse({"user_id": user_id, "notifications": entries, "next_cursor": next_cursor})


async def put_preferences(request: Request) -> Response:
    service = service_of(request)
    user_id = request.path_params["user_id"]
    require_user_or_admin(request, user_id, "changing preferences")
    preferences = parse_preferences(user_id, await read_json(request), service.channels)
    await service.store.put_preferences(preferences, service.now())
    return JSONResponse({"user_id": user_id, **preferences.to_json(), "stored": True})


async def receipt(request: Request) -> Response:
    service = service_of(request)
    name = request.path_params["channel"]
    channel = service.channels.get(name)
    if channel is None:
        raise NotFound(f"no channel {name!r}")
    found = await read_receipt(request, channel, service.public_url)
    updated = 0
    if found is not None:
        updated = await service.store.apply_receipt(name, found.provider_id, found.status, found.error, service.now())
        metrics.NOTIFY_RECEIPTS.labels(name, found.status).inc(updated)
    return JSONResponse({"updated": updated})


async def dlq_list(request: Request) -> Response:
    service = service_of(request)
    require_admin(request, "the dead-letter queue")
    try:
        limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise InvalidField("limit", "limit must be an integer") from None
    rows = await dlq.entries(service.store.db, limit=limit)
    return JSONResponse({"entries": [dlq.describe(row) for row in rows]})


async def dlq_replay(request: Request) -> Response:
    service = service_of(request)
    require_admin(request, "the dead-letter queue")
    entry_id = request.path_params["entry_id"]
    job = await dlq.replay(service.store.db, service.queue, entry_id, now=service.now())
    if job is None:
        raise NotFound("no dead-letter entry with this id waiting for a replay")
    return JSONResponse({"id": entry_id, "status": "requeued"}, status_code=202)


async def event_types(request: Request) -> Response:
    """The gateway's event types and their fields: what a hook (or a receiver of its notifications) can read.
    Public, like the API's description."""
    return JSONResponse({"event_types": catalog()})


ROUTES: list[BaseRoute] = [
    Route("/api/v1/notifications", create, methods=["POST"]),
    Route("/api/v1/notifications/event-types", event_types, methods=["GET"]),
    Route("/api/v1/notifications/dlq", dlq_list, methods=["GET"]),
    Route("/api/v1/notifications/dlq/{entry_id}/replay", dlq_replay, methods=["POST"]),
    Route("/api/v1/notifications/receipts/{channel}", receipt, methods=["POST"]),
    Route("/api/v1/notifications/{notification_id}/status", status, methods=["GET"]),
    Route("/api/v1/users/{user_id}/preferences", get_preferences, methods=["GET"]),
    Route("/api/v1/users/{user_id}/notifications", user_notifications, methods=["GET"]),
    Route("/api/v1/users/{user_id}/preferences", put_preferences, methods=["PUT"]),
]
