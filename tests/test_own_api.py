"""Conventions every endpoint of the own API shares: one error body with its Retry-After rule, one timestamp
format in and out, one authorization check per kind of caller."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.exceptions import Conflict
from gateway.notify.api import answer
from gateway.responses import ErrorResponse
from gateway.settings import parse_settings
from tests.notify.harness import ADMIN_KEY
from tests.own_api import USER_KEY, own_api_config

#: The one format of every timestamp the API writes.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(parse_settings(own_api_config(tmp_path), environ={}))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            yield client
    finally:
        await app.shutdown()


def assert_error(response: httpx.Response, status: int, error: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error and body["detail"] and body["request_id"] == response.headers["x-request-id"]
    assert body.get("field") == field


async def test_every_timestamp_written_has_one_format(client: httpx.AsyncClient) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    expiring = {"long_url": "https://example.com/", "expires_at": "2099-01-01T00:00:00+01:00"}
    link = (await client.post("/api/v1/urls", json=expiring, headers=admin)).json()
    welcome = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["log"], "data": {"name": "A"}}
    later = {**welcome, "scheduled_at": "2099-01-01T00:00:00Z"}
    sent = (await client.post("/api/v1/notifications", json=later, headers=admin)).json()
    status = (await client.get(f"/api/v1/notifications/{sent['notification_id']}/status", headers=admin)).json()
    windows = (await client.get("/api/v1/rate-limit/status", headers={"X-API-Key": USER_KEY})).json()["limits"]
    stamps = [link["created_at"], link["expires_at"], sent["created_at"], status["created_at"]]
    stamps += [status["scheduled_at"], windows[0]["reset_at"]]
    assert link["expires_at"] == "2098-12-31T23:00:00.000Z" and status["scheduled_at"] == "2099-01-01T00:00:00.000Z"
    for stamp in stamps:
        assert TIMESTAMP.fullmatch(stamp), stamp


@pytest.mark.parametrize("value", ["2099-01-01T00:00:00", "2099-01-01", "tomorrow", 1_900_000_000])
async def test_a_timestamp_without_an_offset_is_refused_the_same_everywhere(
    client: httpx.AsyncClient, value: object
) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    link = await client.post("/api/v1/urls", json={"long_url": "https://example.com/", "expires_at": value})
    assert_error(link, 400, "invalid_field", "expires_at")
    welcome = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["log"], "data": {"name": "A"}}
    later = await client.post("/api/v1/notifications", json={**welcome, "scheduled_at": value}, headers=admin)
    assert_error(later, 400, "invalid_field", "scheduled_at")


async def test_refusals_share_one_body(client: httpx.AsyncClient) -> None:
    user = {"X-API-Key": USER_KEY}
    assert_error(await client.get("/api/v1/nothing-here"), 404, "not_found")
    wrong_method = await client.patch("/api/v1/urls")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["allow"]
    assert_error(await client.get("/api/v1/notifications/dlq", headers=user), 403, "forbidden")
    assert_error(await client.post("/api/v1/rate-limit/check", json={}, headers=user), 403, "forbidden")
    assert_error(await client.post("/api/v1/notifications", json={}), 403, "forbidden")
    assert_error(await client.get("/api/v1/users/bob/preferences", headers=user), 403, "forbidden")
    assert_error(await client.get("/api/v1/urls/nope"), 404, "not_found")
    alias = {"long_url": "https://example.com/", "custom_alias": "taken-one"}
    assert (await client.post("/api/v1/urls", json=alias)).status_code == 201
    assert_error(await client.post("/api/v1/urls", json=alias), 409, "alias_taken", "custom_alias")
    missing = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["log"], "data": {}}
    template = await client.post("/api/v1/notifications", json=missing, headers={"X-API-Key": ADMIN_KEY})
    assert_error(template, 400, "template_error")
    assert template.json()["variables"] == ["name"] and template.json()["template_id"] == "welcome"


def test_an_idempotent_twin_still_running_gets_409_with_retry_after() -> None:
    with pytest.raises(Conflict) as caught:
        answer("in_progress", None)
    rendered = ErrorResponse(caught.value, "r1")
    assert rendered.status_code == 409 and rendered.headers["retry-after"] == "1"
    assert json.loads(bytes(rendered.body))["error"] == "idempotency_key_in_progress"
