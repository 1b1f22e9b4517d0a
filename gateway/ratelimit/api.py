"""The rate-limit API: a caller's own windows, the internal check other services and proxies can share, and the
rules an admin manages without a deploy (gateway/ratelimit/rule_store.py)."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.access import caller, require_admin
from gateway.exceptions import InvalidBody, InvalidField, NotFound, StorageError
from gateway.identity import Identity, IdentityResolver
from gateway.ratelimit.rule_store import RuleStore, describe, parse_rule
from gateway.ratelimit.service import RateLimitService
from gateway.request_body import read_json
from gateway.timestamps import format_reset

STATUS_PATH = "/api/v1/rate-limit/status"
CHECK_PATH = "/api/v1/rate-limit/check"
RULES_PATH = "/api/v1/rate-limit/rules"


def service_of(request: Request) -> RateLimitService:
    service: RateLimitService = request.app.state.ratelimit
    return service


def resolver_of(request: Request) -> IdentityResolver:
    resolver: IdentityResolver = request.app.state.identities
    return resolver


async def status(request: Request) -> Response:
    """The caller's own windows; spends nothing."""
    service = service_of(request)
    identity = caller(request)
    if identity is None:  # pragma: no cover - the identity middleware always runs first in the gateway
        raise RuntimeError("no identity in scope")
    limits = []
    for rule in service.rules.for_tier(identity.tier):
        decision = await service.peek(identity, rule)
        if decision is None:
            raise StorageError("the rate-limit engine is unavailable")
        for state in decision.windows:
            limits.append(
                {
                    "rule": rule.name,
                    "window": state.window.name,
                    "limit": state.limit,
                    "remaining": state.remaining,
                    "reset_at": format_reset(state.reset_at),
                }
            )
    return JSONResponse({"user_id": identity.user_id, "tier": identity.tier, "limits": limits})


async def check(request: Request) -> Response:
    """Spend from a user's limit on behalf of another service (an admin key)."""
    service, resolver = service_of(request), resolver_of(request)
    require_admin(request, "the check API")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    user_id, endpoint = body.get("user_id"), body.get("endpoint")
    tier, cost, method = body.get("tier"), body.get("cost"), body.get("method", "GET")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidField("user_id", "user_id must be a non-empty string")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise InvalidField("endpoint", "endpoint must be a path starting with '/'")
    if tier is None:
        tier = (
            resolver.tier_of(user_id)
            or (resolver.settings.user_header.default_tier if resolver.settings.user_header else None)
            or resolver.settings.anonymous_tier
        )
    if not isinstance(tier, str) or tier not in service.settings.tiers:
        raise InvalidField("tier", f"tier must be one of {list(service.settings.tiers)}")
    if cost is not None and (not isinstance(cost, int) or isinstance(cost, bool) or cost < 1):
        raise InvalidField("cost", "cost must be a positive integer")
    if not isinstance(method, str):
        raise InvalidField("method", "method must be a string")
    subject = Identity(user_id, tier, "user_header")
    rule = service.rules.match(tier, endpoint, method.upper())
    if rule is None:
        return JSONResponse(
            {"allowed": True, "remaining": None, "limit": None, "reset_at": None, "retry_after": None, "rule": None}
        )
    verdict = await service.decide(subject, rule, cost or rule.cost, path=endpoint)
    # The design's shape: reset_at in unix seconds, retry_after in seconds, or null when there is nothing to
    # wait for (allowed, or a cost over the limit that no wait lets through).
    waits = not verdict.allowed and not math.isinf(verdict.retry_after)
    payload: dict[str, Any] = {
        "allowed": verdict.allowed,
        "retry_after": max(1, math.ceil(verdict.retry_after)) if waits else None,
        "rule": rule.name,
        "result": verdict.result,
    }
    if verdict.decision is not None:
        tightest = verdict.decision.tightest
        payload.update(limit=tightest.limit, remaining=tightest.remaining, reset_at=math.ceil(tightest.reset_at))
    else:
        payload.update(limit=None, remaining=None, reset_at=None)
    return JSONResponse(payload, status_code=200)


def rule_store_of(request: Request) -> RuleStore:
    require_admin(request, "managing rate-limit rules")
    store: RuleStore = request.app.state.rule_store
    return store


async def list_rules(request: Request) -> Response:
    """Every rule: the configuration's (`source: config`, no id) and the managed ones (`source: api`)."""
    store = rule_store_of(request)
    rules = [describe(rule) for rule in store.service.settings.rules]
    rules += [describe(rule.settings, rule) for rule in store.rules]
    return JSONResponse({"rules": rules})


async def create_rule(request: Request) -> Response:
    store = rule_store_of(request)
    settings = parse_rule(await read_json(request), store.service.settings.tiers)
    rule = await store.create(settings)
    return JSONResponse(describe(rule.settings, rule), status_code=201)


async def replace_rule(request: Request) -> Response:
    store = rule_store_of(request)
    settings = parse_rule(await read_json(request), store.service.settings.tiers)
    rule = await store.replace(request.path_params["rule_id"], settings)
    if rule is None:
        raise NotFound("no managed rule with this id (a rule of the configuration is changed in its YAML)")
    return JSONResponse(describe(rule.settings, rule))


async def delete_rule(request: Request) -> Response:
    store = rule_store_of(request)
    if not await store.delete(request.path_params["rule_id"]):
        raise NotFound("no managed rule with this id")
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route(STATUS_PATH, status, methods=["GET"]),
    Route(CHECK_PATH, check, methods=["POST"]),
    Route(RULES_PATH, list_rules, methods=["GET"]),
    Route(RULES_PATH, create_rule, methods=["POST"]),
    Route(RULES_PATH + "/{rule_id}", replace_rule, methods=["PUT"]),
    Route(RULES_PATH + "/{rule_id}", delete_rule, methods=["DELETE"]),
]
