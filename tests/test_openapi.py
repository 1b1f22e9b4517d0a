"""The API's description holds: schemathesis generates requests from /openapi.json against a real `gateway run`
on the embedded engine, with an admin key and a user's key, and every answer must be in the document (status,
content type, body schema) and never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.notify.harness import ADMIN_KEY
from tests.own_api import USER_KEY, own_api_config
from tests.proxy_fixtures import GatewayProcess, gateway_process

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("openapi")
    with gateway_process(own_api_config(directory), directory) as process:
        yield process


def test_the_document_is_served_and_describes_every_own_route(gateway: GatewayProcess) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    paths = set(document["paths"])
    assert {"/healthz", "/api/v1/urls", "/api/v1/urls/{code}", "/api/v1/notifications"} <= paths
    assert "/api/v1/users/{user_id}/preferences" in paths and "/api/v1/rate-limit/check" in paths
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/v1/notifications/{notification_id}/status" in page.text and "<script" not in page.text


def test_each_success_answer_matches_the_document(gateway: GatewayProcess) -> None:
    """Generated input rarely passes validation (a random string is seldom a URL), so the success answers are
    also asked for directly, and validated against the same document."""
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    admin = {"X-API-Key": ADMIN_KEY}

    def call(method: str, path: str, expected: int, **parts: Any) -> Any:
        case = schema[path][method].Case(**parts)
        response = case.call_and_validate(base_url=gateway.url, headers=admin, checks=CHECKS, timeout=10)
        assert response.status_code == expected, response.text
        return response.json() if response.content else None

    link = call("POST", "/api/v1/urls", 201, body={"long_url": "https://example.com/x", "max_visits": 3})
    code = {"code": link["short_code"]}
    bulk = call(
        "POST", "/api/v1/urls/bulk", 200, body={"links": [{"long_url": "https://example.com/b"}, {"long_url": "x"}]}
    )
    assert [result["status"] for result in bulk["results"]] == [201, 400]
    listed = call("GET", "/api/v1/urls", 200, query={"owner": "me", "limit": 1})
    assert [item["short_code"] for item in listed["links"]] == [bulk["results"][0]["link"]["short_code"]]
    assert call("GET", "/api/v1/urls/{code}", 200, path_parameters=code)["state"] == "active"
    qr = schema["/api/v1/urls/{code}/qr"]["GET"].Case(path_parameters=code, query={"format": "png"})
    image = qr.call_and_validate(base_url=gateway.url, headers=admin, checks=CHECKS, timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    call("DELETE", "/api/v1/urls/{code}", 204, path_parameters=code)
    welcome = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["log"], "data": {"name": "A"}}
    sent = call("POST", "/api/v1/notifications", 202, body=welcome, headers={"Idempotency-Key": "k1"})
    status = {"notification_id": sent["notification_id"]}
    assert call("GET", "/api/v1/notifications/{notification_id}/status", 200, path_parameters=status)["summary"]
    alice = {"user_id": "alice"}
    call("PUT", "/api/v1/users/{user_id}/preferences", 200, path_parameters=alice, body={"channels": ["log"]})
    assert call("GET", "/api/v1/users/{user_id}/preferences", 200, path_parameters=alice)["stored"] is True
    mine = call("GET", "/api/v1/users/{user_id}/notifications", 200, path_parameters=alice, query={"limit": 10})
    assert [entry["notification_id"] for entry in mine["notifications"]] == [sent["notification_id"]]
    assert call("GET", "/api/v1/notifications/dlq", 200, query={"limit": 5}) == {"entries": []}
    check = {"user_id": "alice", "endpoint": "/api/v1/urls", "tier": "free"}
    assert call("POST", "/api/v1/rate-limit/check", 200, body=check)["rule"] == "api"
    assert call("GET", "/api/v1/rate-limit/status", 200)["tier"] == "premium"
    made = call("POST", "/api/v1/keys", 201, body={"user_id": "bot", "tier": "free", "scopes": ["read"]})
    assert [entry["id"] for entry in call("GET", "/api/v1/keys", 200)["keys"]] == [made["id"]]
    call("DELETE", "/api/v1/keys/{key_id}", 204, path_parameters={"key_id": made["id"]})
    catalog = call("GET", "/api/v1/notifications/event-types", 200)["event_types"]
    exceeded = next(entry for entry in catalog if entry["type"] == "ratelimit.exceeded")
    assert {"name": "tier", "type": "string"} in exceeded["fields"]
    assert {entry["type"] for entry in catalog} >= {"url.created", "url.clicked", "circuit.opened", "upstream.error"}
    receipt = {"provider_id": "nope", "status": "delivered"}
    assert call("POST", "/api/v1/notifications/receipts/{channel}", 200, path_parameters={"channel": "log"},
                body=receipt) == {"updated": 0}  # fmt: skip


@pytest.mark.parametrize("key", [ADMIN_KEY, USER_KEY, None], ids=["admin", "user", "anonymous"])
def test_every_answer_matches_the_document(gateway: GatewayProcess, key: str | None) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    headers = {"X-API-Key": key} if key else {}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document itself is valid
        operations.append(result.ok())
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=gateway.url, headers=headers, checks=CHECKS, timeout=10)

        run()
