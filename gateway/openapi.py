"""The gateway's own API, described: `/openapi.json` (OpenAPI 3.1) and `/docs`, a page rendered from it here.

The document is written by hand, next to nothing it could drift from unnoticed: the test suite runs schemathesis
against it (tests/test_openapi.py), so an endpoint that answers outside its description fails CI. It describes
what this configuration serves: the health paths as configured, the notification API only when it is enabled.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.version import __version__

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required is not None:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


_TIME = {"type": "string", "format": "date-time"}
_ID = {"type": "string", "minLength": 1, "maxLength": 200}

_LINK: dict[str, Schema] = {
    "short_url": {"type": "string"},
    "short_code": {"type": "string"},
    "long_url": {"type": "string"},
    "created_at": _TIME,
    "expires_at": _nullable(_TIME),
    "max_visits": _nullable({"type": "integer"}),
    "tags": {"type": "array", "items": {"type": "string"}},
}
_LINK_DETAILS: dict[str, Schema] = {
    "custom_alias": {"type": "boolean"},
    "owner": _nullable({"type": "string"}),
    "state": {"enum": ["active", "expired", "visit_limit_reached"]},
    "visits": {"type": "integer", "minimum": 0},
    "click_count": {"type": "integer", "minimum": 0},
    "clicks_by_day": {
        "type": "array",
        "items": _object(
            {"day": {"type": "string"}, "agent": {"type": "string"}, "clicks": {"type": "integer"}},
            ["day", "agent", "clicks"],
        ),
    },
}


#: A rate-limit rule's fields, as in the YAML (gateway/config/ratelimit.py RuleSettings).
_RULE: dict[str, Schema] = {
    "name": {"type": "string"},
    "tier": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    "match": {"type": "string", "pattern": "^/"},
    "methods": _nullable({"type": "array", "items": {"type": "string"}}),
    "windows": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    "cost": {"type": "integer", "minimum": 1},
    "on_failure": {"enum": ["open", "closed", "local"]},
    "shadow": {"type": "boolean"},
}
_API_KEY: dict[str, Schema] = {
    "id": {"type": "string"},
    "user_id": {"type": "string"},
    "tier": {"type": "string"},
    "scopes": {"type": "array", "items": {"type": "string"}},
    "name": _nullable({"type": "string"}),
    "created_at": _TIME,
    "revoked_at": _nullable(_TIME),
}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": {"type": "string", "description": "A stable, machine-readable code such as invalid_field."},
            "detail": {"type": "string", "description": "What went wrong, for a human."},
            "request_id": _nullable({"type": "string"}),
            "field": {"type": "string", "description": "The request field (or header) that was refused."},
        },
        ["error", "detail", "request_id"],
        closed=False,  # some errors add context, such as a template error's variables
    ),
    "CreateLink": _object(
        {
            "long_url": {
                "type": "string",
                "maxLength": 2048,
                "description": "An http:// or https:// URL, not to this gateway nor a blocked domain.",
                "examples": ["https://example.com/a/long/path?q=1"],
            },
            "custom_alias": {"type": "string", "pattern": "^[A-Za-z0-9_-]{3,64}$"},
            "expires_at": {"type": "string", "format": "date-time", "description": "In the future, with offset."},
            "max_visits": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "tags": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"},
                "maxItems": 10,
            },
        },
        ["long_url"],
    ),
    "Link": _object(_LINK, list(_LINK)),
    "LinkDetails": _object(_LINK | _LINK_DETAILS, [*_LINK, *_LINK_DETAILS]),
    "BulkResults": _object(
        {
            "results": {
                "type": "array",
                "items": _object(
                    {"status": {"type": "integer"}, "link": _ref("Link"), "error": {"type": "object"}}, ["status"]
                ),
            }
        },
        ["results"],
    ),
    "LinkStats": _object(
        {
            "short_code": {"type": "string"},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "clicks": {"type": "integer", "minimum": 0},
            **{
                f"by_{name}": {
                    "type": "array",
                    "items": _object(
                        {name: {"type": "string"}, "clicks": {"type": "integer", "minimum": 1}}, [name, "clicks"]
                    ),
                }
                for name in ("day", "device", "referrer", "browser")
            },
        },
        ["short_code", "from", "to", "clicks", "by_day", "by_device", "by_referrer", "by_browser"],
    ),
    "LinkPage": _object(
        {"links": {"type": "array", "items": _ref("Link")}, "next_cursor": _nullable({"type": "string"})},
        ["links", "next_cursor"],
    ),
    "ApiKey": _object(_API_KEY, list(_API_KEY)),
    "RateLimitRule": _object(
        {
            "id": _nullable({"type": "string"}),
            "source": {"enum": ["config", "api"]},
            **_RULE,
            "created_at": _nullable({"type": "string", "format": "date-time"}),
            "updated_at": _nullable({"type": "string", "format": "date-time"}),
        },
        ["id", "source", "name", "match", "windows", "cost", "on_failure", "shadow", "created_at", "updated_at"],
        closed=False,
    ),
    "UserTier": _object(
        {
            "user_id": {"type": "string"},
            "tier": {"type": "string"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
        ["user_id", "tier", "updated_at"],
    ),
    "NewApiKey": _object(_API_KEY | {"key": {"type": "string"}}, [*_API_KEY, "key"]),
    "RateLimitStatus": _object(
        {
            "user_id": {"type": "string"},
            "tier": {"type": "string"},
            "limits": {
                "type": "array",
                "items": _object(
                    {
                        "rule": {"type": "string"},
                        "window": {"type": "string"},
                        "limit": {"type": "integer"},
                        "remaining": {"type": "integer", "minimum": 0},
                        "reset_at": _TIME,
                    },
                    ["rule", "window", "limit", "remaining", "reset_at"],
                ),
            },
        },
        ["user_id", "tier", "limits"],
    ),
    "RateLimitCheck": _object(
        {
            "user_id": {"type": "string", "minLength": 1},
            "endpoint": {"type": "string", "pattern": "^/", "description": "The path the caller asks about."},
            "method": {"type": "string", "default": "GET"},
            "tier": {"type": "string", "description": "Default: the user's tier as the gateway resolves it."},
            "cost": {"type": "integer", "minimum": 1},
        },
        ["user_id", "endpoint"],
        closed=False,
    ),
    "RateLimitVerdict": _object(
        {
            "allowed": {"type": "boolean"},
            "rule": _nullable({"type": "string"}),
            "result": {"type": "string", "description": "allowed, limited, failed_open, failed_closed, ..."},
            "limit": _nullable({"type": "integer"}),
            "remaining": _nullable({"type": "integer"}),
            "reset_at": _nullable({"type": "integer", "description": "Unix seconds."}),
            "retry_after": _nullable({"type": "integer", "minimum": 1}),
        },
        ["allowed", "rule", "limit", "remaining", "reset_at", "retry_after"],
    ),
    "NotificationRequest": _object(
        {
            "user_ids": {"type": "array", "items": _ID, "minItems": 1},
            "template_id": {"type": "string", "minLength": 1},
            "channels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "data": {"type": "object", "description": "The template's variables."},
            "priority": {"enum": ["critical", "high", "normal", "low"], "default": "normal"},
            "scheduled_at": {"type": "string", "format": "date-time"},
        },
        ["user_ids", "template_id", "channels"],
    ),
    "NotificationAccepted": _object(
        {
            "notification_id": {"type": "string"},
            "status": {"const": "queued"},
            "recipient_count": {"type": "integer", "minimum": 1},
            "created_at": _TIME,
        },
        ["notification_id", "status", "recipient_count", "created_at"],
    ),
    "NotificationStatus": _object(
        {
            "notification_id": {"type": "string"},
            "status": {"type": "string"},
            "template_id": {"type": "string"},
            "priority": {"type": "string"},
            "created_at": _TIME,
            "scheduled_at": _nullable(_TIME),
            "created_by": _nullable({"type": "string"}),
            "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
            "recipients": {
                "type": "array",
                "description": "One entry per recipient and channel.",
                "items": _object(
                    {
                        "user_id": {"type": "string"},
                        "channel": {"type": "string"},
                        "status": {"type": "string"},
                        "reason": _nullable({"type": "string"}),
                        "attempts": {"type": "integer"},
                        "last_error": _nullable({"type": "string"}),
                        "provider_id": _nullable({"type": "string"}),
                        "created_at": _TIME,
                        "updated_at": _TIME,
                        "sent_at": _nullable(_TIME),
                        "delivered_at": _nullable(_TIME),
                    },
                    ["user_id", "channel", "status", "attempts", "created_at", "updated_at"],
                ),
            },
        },
        ["notification_id", "status", "template_id", "priority", "created_at", "summary", "recipients"],
    ),
    "UserNotifications": _object(
        {
            "user_id": {"type": "string"},
            "notifications": {
                "type": "array",
                "items": _object(
                    {
                        "notification_id": {"type": "string"},
                        "template_id": {"type": "string"},
                        "priority": {"type": "string"},
                        "created_at": _TIME,
                        "deliveries": {"type": "array", "items": {"type": "object"}},
                    },
                    ["notification_id", "template_id", "priority", "created_at", "deliveries"],
                ),
            },
            "next_cursor": _nullable({"type": "string"}),
        },
        ["user_id", "notifications", "next_cursor"],
    ),
    "PreferencesUpdate": _object(
        {
            "channels": {"type": "array", "items": {"type": "string"}},
            "primary_channel": _nullable({"type": "string"}),
            "digest_channel": _nullable({"type": "string"}),
            "email": _nullable({"type": "string", "maxLength": 254}),
            "phone": _nullable({"type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$"}),
            "device_tokens": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 100},
            "webhook_url": _nullable({"type": "string"}),
        },
        ["channels"],
    ),
    "Preferences": _object(
        {
            "user_id": {"type": "string"},
            "channels": _nullable({"type": "array", "items": {"type": "string"}}),
            "primary_channel": _nullable({"type": "string"}),
            "digest_channel": _nullable({"type": "string"}),
            "email": _nullable({"type": "string"}),
            "phone": _nullable({"type": "string"}),
            "device_tokens": {"type": "array", "items": {"type": "string"}},
            "webhook_url": _nullable({"type": "string"}),
            "stored": {"type": "boolean", "description": "False: the configured defaults, never stored."},
        },
        ["user_id", "channels", "device_tokens", "stored"],
    ),
    "Receipt": _object(
        {
            "provider_id": {"type": "string", "minLength": 1},
            "status": {"enum": ["delivered", "opened", "failed"]},
            "error": {"type": "string"},
        },
        ["provider_id", "status"],
        closed=False,
    ),
    "EventTypes": _object(
        {
            "event_types": {
                "type": "array",
                "items": _object(
                    {
                        "type": {"type": "string"},
                        "description": {"type": "string"},
                        "fields": {
                            "type": "array",
                            "items": _object(
                                {
                                    "name": {"type": "string"},
                                    "type": {
                                        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                                    },
                                },
                                ["name", "type"],
                            ),
                        },
                    },
                    ["type", "description", "fields"],
                ),
            }
        },
        ["event_types"],
    ),
    "DeadLetters": _object(
        {
            "entries": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "string"},
                        "channel": {"type": "string"},
                        "kind": {"enum": ["send", "digest", "attach"]},
                        "notification_id": _nullable({"type": "string"}),
                        "user_id": _nullable({"type": "string"}),
                        "digest_id": _nullable({"type": "string"}),
                        "error": _nullable({"type": "string"}),
                        "attempts": {"type": "integer"},
                        "failed_at": _nullable(_TIME),
                    },
                    ["id", "channel", "kind", "error", "attempts", "failed_at"],
                ),
            }
        },
        ["entries"],
    ),
}

_ERRORS = {
    400: "Invalid input: `field` names what was refused (a body field, a parameter, a header, the path).",
    401: "The X-API-Key names no known key, or the call needs one (shortener.require_api_key).",
    403: "The caller's identity may not do this.",
    404: "Not found.",
    409: "A conflict (a taken alias, an idempotent request still running).",
    413: "The body is over server.limits.max_api_body.",
    415: "The body is not JSON.",
    422: "An Idempotency-Key reused with another body.",
    429: "Rate limited: see Retry-After and the RateLimit headers.",
    503: "A store is unavailable, or the gateway is shutting down: see Retry-After.",
}
#: What any own-API call may answer: the edge refuses a path it cannot forward byte for byte, an unknown API key
#: is refused before routing, the limiter runs before the endpoint, and a store or the drain may refuse it.
_ALWAYS = (400, 401, 429, 503)


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    ok: tuple[int, str, Schema | None],
    errors: tuple[int, ...] = (),
    *,
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
    secured: bool = True,
    description: str = "",
) -> Schema:
    status, meaning, schema = ok
    responses: dict[str, Any] = {str(status): {"description": meaning, **(_json(schema) if schema else {})}}
    for code in sorted(set(errors) | set(_ALWAYS) | ({413, 415} if body is not None else set())):
        responses[str(code)] = {"description": _ERRORS[code], **_json(_ref("Error"))}
    operation: Schema = {"summary": summary, "responses": responses}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if parameters:
        operation["parameters"] = parameters
    if not secured:
        operation["security"] = [{}, {"apiKey": []}]
    return operation


def _image_operation(operation: Schema) -> Schema:
    """`operation` whose 200 is an SVG or a PNG image."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    operation["responses"]["200"]["content"] = {"image/svg+xml": binary, "image/png": binary}
    return operation


def _path_parameter(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def document(
    *,
    health_path: str,
    ready_path: str,
    metrics_path: str,
    notifications: bool,
    channels: Sequence[str] = (),
    templates: Sequence[str] = (),
) -> Schema:
    """The OpenAPI 3.1 description of what this configuration serves (its channels and templates by name)."""
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        health_path: {"get": {"summary": "Liveness", "security": [{}], "responses": {"200": {"description": "up"}}}},
        ready_path: {
            "get": {
                "summary": "Readiness: 503 while an engine is down or the gateway drains",
                "security": [{}],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        metrics_path: {
            "get": {
                "summary": "Prometheus metrics",
                "security": [{}],
                "responses": {"200": {"description": "", **text}},
            }
        },
        "/api/v1/urls": {
            "get": _operation(
                "A caller's links, newest first, by cursor (an admin may name any owner)",
                (200, "One page; next_cursor is null on the last.", _ref("LinkPage")),
                (403,),
                parameters=[
                    {"name": "owner", "in": "query", "schema": {"type": "string", "default": "me"}},
                    {"name": "tag", "in": "query", "schema": {"type": "string"}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                ],
                secured=False,
            ),
            "post": _operation(
                "Create a short link",
                (201, "Created; Location names the link's metadata.", _ref("Link")),
                (401, 409),
                body=_ref("CreateLink"),
                secured=False,
            ),
        },
        "/api/v1/urls/bulk": {
            "post": _operation(
                "Create up to 100 links, each on its own: 201 or the error a single create gets, per item",
                (200, "One result per item, in order.", _ref("BulkResults")),
                (401,),
                body=_object(
                    {"links": {"type": "array", "items": _ref("CreateLink"), "minItems": 1, "maxItems": 100}},
                    ["links"],
                ),
                secured=False,
            )
        },
        "/api/v1/urls/{code}": {
            "parameters": [_path_parameter("code")],
            "get": _operation(
                "A link's metadata and clicks (its owner, an admin, or anyone for an ownerless link)",
                (200, "The link.", _ref("LinkDetails")),
                (401, 403, 404),
                secured=False,
            ),
            "delete": _operation(
                "Delete a link (its owner or an admin); its code is never reused",
                (204, "Deleted.", None),
                (401, 403, 404),
                secured=False,
            ),
        },
        "/api/v1/urls/{code}/qr": {
            "parameters": [_path_parameter("code")],
            "get": _image_operation(
                _operation(
                    "The short URL as a QR code (whoever may read the link)",
                    (200, "The image.", None),
                    (401, 403, 404),
                    parameters=[
                        {"name": "format", "in": "query", "schema": {"enum": ["svg", "png"], "default": "svg"}},
                        {"name": "size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 40}},
                    ],
                    secured=False,
                )
            ),
        },
        "/api/v1/urls/{code}/stats": {
            "parameters": [_path_parameter("code")],
            "get": _operation(
                "A link's clicks over a range of UTC days, by day, device class, referrer host and browser "
                "(whoever may read the link)",
                (200, "The statistics; referrers and browsers are the top 50, most clicks first.", _ref("LinkStats")),
                (400, 401, 403, 404),
                parameters=[
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                ],
                secured=False,
            ),
        },
        "/api/v1/keys": {
            "get": _operation(
                "The managed API keys, newest first, without their secrets (admin)",
                (
                    200,
                    "Every key, revoked ones too.",
                    _object({"keys": {"type": "array", "items": _ref("ApiKey")}}, ["keys"]),
                ),
                (403,),
            ),
            "post": _operation(
                "Create an API key; its text is in this answer only (admin)",
                (201, "The key, with `key`.", _ref("NewApiKey")),
                (403,),
                body=_object(
                    {
                        "user_id": {"type": "string", "minLength": 1, "maxLength": 200},
                        "tier": {"type": "string"},
                        "scopes": {
                            "type": "array",
                            "items": {"enum": ["admin", "links", "notifications", "read"]},
                            "minItems": 1,
                        },
                        "name": {"type": "string", "maxLength": 200},
                    },
                    ["user_id", "tier", "scopes"],
                ),
            ),
        },
        "/api/v1/keys/{key_id}": {
            "parameters": [_path_parameter("key_id")],
            "delete": _operation("Revoke an API key (admin)", (204, "Revoked.", None), (403, 404)),
        },
        "/api/v1/rate-limit/rules": {
            "get": _operation(
                "Every rate-limit rule: the configuration's and the managed ones (admin)",
                (
                    200,
                    "The rules.",
                    _object({"rules": {"type": "array", "items": _ref("RateLimitRule")}}, ["rules"]),
                ),
                (403,),
            ),
            "post": _operation(
                "Add a managed rule (the YAML's grammar); every replica applies it within rule_refresh (admin)",
                (201, "The rule.", _ref("RateLimitRule")),
                (400, 403, 409),
                body=_object(_RULE, ["match", "windows"]),
            ),
        },
        "/api/v1/rate-limit/rules/{rule_id}": {
            "parameters": [_path_parameter("rule_id")],
            "put": _operation(
                "Replace a managed rule; changed windows count afresh (admin)",
                (200, "The rule.", _ref("RateLimitRule")),
                (400, 403, 404, 409),
                body=_object(_RULE, ["match", "windows"]),
            ),
            "delete": _operation("Remove a managed rule (admin)", (204, "Removed.", None), (403, 404)),
        },
        "/api/v1/users/{user_id}/tier": {
            "parameters": [_path_parameter("user_id")],
            "put": _operation(
                "Store a user's tier; it overrides their credential's tier on every replica (admin)",
                (200, "The stored tier.", _ref("UserTier")),
                (400, 403),
                body=_object({"tier": {"type": "string"}}, ["tier"]),
            ),
            "get": _operation("A user's stored tier (admin)", (200, "The stored tier.", _ref("UserTier")), (403, 404)),
            "delete": _operation(
                "Forget a user's stored tier: their credential's applies again (admin)",
                (204, "Forgotten.", None),
                (403, 404),
            ),
        },
        "/api/v1/rate-limit/status": {
            "get": _operation(
                "The caller's own windows (spends nothing, never limited)",
                (200, "Every window of every rule for the caller's tier.", _ref("RateLimitStatus")),
                secured=False,
            )
        },
        "/api/v1/rate-limit/check": {
            "post": _operation(
                "Spend from a user's limit on behalf of another service (admin)",
                (200, "The decision, in the design's shape.", _ref("RateLimitVerdict")),
                (403,),
                body=_ref("RateLimitCheck"),
            )
        },
    }
    schemas = dict(SCHEMAS)
    if notifications:
        request = schemas["NotificationRequest"]
        properties = dict(request["properties"])
        properties["template_id"] = {"enum": list(templates)}
        properties["channels"] = {**properties["channels"], "items": {"enum": list(channels)}}
        schemas["NotificationRequest"] = {**request, "properties": properties}
        idempotency = {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
        paths |= {
            "/api/v1/notifications": {
                "post": _operation(
                    "Send a notification to users (202: queued per recipient and channel)",
                    (202, "Accepted.", _ref("NotificationAccepted")),
                    (403, 409, 422),
                    body=_ref("NotificationRequest"),
                    parameters=[idempotency],
                )
            },
            "/api/v1/notifications/event-types": {
                "get": _operation(
                    "The gateway's event types and their fields (what hooks and their receivers can read)",
                    (200, "Every event type.", _ref("EventTypes")),
                    secured=False,
                )
            },
            "/api/v1/notifications/{notification_id}/status": {
                "parameters": [_path_parameter("notification_id")],
                "get": _operation(
                    "Per-recipient status (its creator or an admin)",
                    (200, "The status.", _ref("NotificationStatus")),
                    (403, 404),
                ),
            },
            "/api/v1/notifications/dlq": {
                "get": _operation(
                    "The dead-letter queue (admin)",
                    (200, "Newest first.", _ref("DeadLetters")),
                    (400, 403),
                    parameters=[
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                    ],
                )
            },
            "/api/v1/notifications/dlq/{entry_id}/replay": {
                "parameters": [_path_parameter("entry_id")],
                "post": _operation(
                    "Send a dead-lettered message again from attempt 1 (admin)",
                    (202, "Requeued.", _object({"id": {"type": "string"}, "status": {"const": "requeued"}})),
                    (403, 404),
                ),
            },
            "/api/v1/notifications/receipts/{channel}": {
                "parameters": [_path_parameter("channel")],
                "post": _operation(
                    "A delivery receipt: the provider's signed callback (a form), or JSON from an admin",
                    (200, "How many deliveries moved.", _object({"updated": {"type": "integer"}}, ["updated"])),
                    (400, 403, 404, 413, 415),
                    body=_ref("Receipt"),
                ),
            },
            "/api/v1/users/{user_id}/notifications": {
                "parameters": [_path_parameter("user_id")],
                "get": _operation(
                    "A user's notifications, newest first, each with its deliveries to them (the user or an admin)",
                    (200, "One page; next_cursor is null on the last.", _ref("UserNotifications")),
                    (403,),
                    parameters=[
                        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    ],
                ),
            },
            "/api/v1/users/{user_id}/preferences": {
                "parameters": [_path_parameter("user_id")],
                "get": _operation(
                    "A user's channels and addresses (the user or an admin)",
                    (200, "Stored, or the defaults.", _ref("Preferences")),
                    (403,),
                ),
                "put": _operation(
                    "Replace a user's preferences (the user or an admin)",
                    (200, "Stored.", _ref("Preferences")),
                    (403,),
                    body=_ref("PreferencesUpdate"),
                ),
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gateway",
            "version": __version__,
            "description": "The gateway's own API. Errors share one body (Error); every call may be rate limited.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"apiKey": []}],
    }


class ApiDescription:
    """The two endpoints, holding the document built once per configuration."""

    def __init__(self, spec: Schema) -> None:
        self.spec = spec
        self._json = json.dumps(spec, separators=(",", ":")).encode()
        self._page = render_page(spec).encode()

    async def openapi(self, request: Request) -> Response:
        return Response(self._json, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(self._page)


def render_page(spec: Schema) -> str:
    """A readable page from the document: no script, no asset fetched from anywhere."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gateway API</title><style>"
        "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code,pre{font:13px ui-monospace,monospace}pre{background:#f4f4f4;padding:.6rem;overflow:auto}"
        "h3{border-top:1px solid #ddd;padding-top:1rem}.m{font-weight:bold;text-transform:uppercase}</style></head>"
        f"<body><h1>{esc(spec['info']['title'])} {esc(spec['info']['version'])}</h1>"
        f"<p>{esc(spec['info']['description'])} The machine-readable form: <a href='{OPENAPI_PATH}'>"
        f"{OPENAPI_PATH}</a>. Authenticate with the <code>X-API-Key</code> header.</p>"
    ]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            parts.append(f"<h3><span class='m'>{esc(method)}</span> <code>{esc(path)}</code></h3>")
            parts.append(f"<p>{esc(operation['summary'])}</p>")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                parts.append(f"<p>Body: <code>{esc(_schema_name(body))}</code></p>")
            answers = ", ".join(
                f"{esc(code)} {esc(_answer_name(answer))}" for code, answer in operation["responses"].items()
            )
            parts.append(f"<p>Answers: {answers}</p>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        parts.append(f"<h3 id='{esc(name)}'>{esc(name)}</h3><pre>{esc(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def _schema_name(schema: Schema) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1] or "object"


def _answer_name(answer: Schema) -> str:
    schema = answer.get("content", {}).get("application/json", {}).get("schema")
    return _schema_name(schema) if schema is not None else answer.get("description", "")
