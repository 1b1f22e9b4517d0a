from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.exceptions import InvalidField
from gateway.shortener.validation import UrlRules, parse_create, reserved_segments
from tests.shortener.conftest import Backend, running

RULES = UrlRules(
    own_host="sho.rt",
    own_port=80,
    blocked_domains=("evil.example",),
    reserved=reserved_segments(["/healthz", "/api/", "/shop/", "/users/*/orders"], ["promo"]),
)
NOW = time.time()
GOOD = "https://example.com/a"

INVALID: list[Any] = [
    pytest.param(["not", "an", "object"], "body", id="not an object"),
    pytest.param({}, "long_url", id="missing long_url"),
    pytest.param({"long_url": GOOD, "colour": "blue"}, "colour", id="unknown field"),
    pytest.param({"long_url": 42}, "long_url", id="not a string"),
    pytest.param({"long_url": "ftp://example.com/file"}, "long_url", id="ftp"),
    pytest.param({"long_url": "javascript:alert(1)"}, "long_url", id="javascript"),
    pytest.param({"long_url": "https://"}, "long_url", id="no host"),
    pytest.param({"long_url": "https://exa mple.com/"}, "long_url", id="space in host"),
    pytest.param({"long_url": "https://-bad-.com/"}, "long_url", id="bad label"),
    pytest.param({"long_url": "https://example.com:99999/"}, "long_url", id="bad port"),
    pytest.param({"long_url": "https://example.com/\r\nSet-Cookie: x"}, "long_url", id="header injection"),
    pytest.param({"long_url": "https://user:pw@example.com/"}, "long_url", id="credentials"),
    pytest.param({"long_url": "https://example.com/" + "a" * 2030}, "long_url", id="over 2048"),
    pytest.param({"long_url": "http://sho.rt/abc"}, "long_url", id="own host"),
    pytest.param({"long_url": "https://SHO.RT/abc"}, "long_url", id="own host, https, upper case"),
    pytest.param({"long_url": "https://evil.example/x"}, "long_url", id="blocked domain"),
    pytest.param({"long_url": "https://a.b.evil.example/x"}, "long_url", id="blocked subdomain"),
    pytest.param({"long_url": GOOD, "custom_alias": "ab"}, "custom_alias", id="alias too short"),
    pytest.param({"long_url": GOOD, "custom_alias": "a" * 65}, "custom_alias", id="alias too long"),
    pytest.param({"long_url": GOOD, "custom_alias": "has space"}, "custom_alias", id="alias space"),
    pytest.param({"long_url": GOOD, "custom_alias": "dot.dot"}, "custom_alias", id="alias dot"),
    pytest.param({"long_url": GOOD, "custom_alias": 12345}, "custom_alias", id="alias number"),
    pytest.param({"long_url": GOOD, "custom_alias": "api"}, "custom_alias", id="alias api"),
    pytest.param({"long_url": GOOD, "custom_alias": "Healthz"}, "custom_alias", id="alias own path"),
    pytest.param({"long_url": GOOD, "custom_alias": "admin"}, "custom_alias", id="alias reserved word"),
    pytest.param({"long_url": GOOD, "custom_alias": "shop"}, "custom_alias", id="alias route prefix"),
    pytest.param({"long_url": GOOD, "custom_alias": "users"}, "custom_alias", id="alias route path"),
    pytest.param({"long_url": GOOD, "custom_alias": "promo"}, "custom_alias", id="alias configured"),
    pytest.param({"long_url": GOOD, "expires_at": "2020-01-01T00:00:00Z"}, "expires_at", id="expiry past"),
    pytest.param({"long_url": GOOD, "expires_at": "2099-01-01T00:00:00"}, "expires_at", id="expiry no offset"),
    pytest.param({"long_url": GOOD, "expires_at": "2099-01-01"}, "expires_at", id="expiry date only"),
    pytest.param({"long_url": GOOD, "expires_at": "tomorrow"}, "expires_at", id="expiry words"),
    pytest.param({"long_url": GOOD, "expires_at": 4102444800}, "expires_at", id="expiry number"),
    pytest.param({"long_url": GOOD, "max_visits": 0}, "max_visits", id="max_visits 0"),
    pytest.param({"long_url": GOOD, "max_visits": -3}, "max_visits", id="max_visits negative"),
    pytest.param({"long_url": GOOD, "max_visits": 1.5}, "max_visits", id="max_visits float"),
    pytest.param({"long_url": GOOD, "max_visits": True}, "max_visits", id="max_visits bool"),
    pytest.param({"long_url": GOOD, "max_visits": "3"}, "max_visits", id="max_visits string"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_each_rule_names_its_field(body: object, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_create(body, RULES, NOW)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("https://example.com", "https://example.com", id="bare host"),
        pytest.param("HTTPS://Example.COM/Path?q=A#F", "https://example.com/Path?q=A#F", id="scheme and host case"),
        pytest.param("https://example.com/a b?q=é", "https://example.com/a%20b?q=%C3%A9", id="encoded"),
        pytest.param("https://bücher.example/", "https://xn--bcher-kva.example/", id="idna"),
        pytest.param("http://[::1]:8080/x", "http://[::1]:8080/x", id="ipv6"),
        pytest.param("http://sho.rt:8080/x", "http://sho.rt:8080/x", id="own host, another port"),
        pytest.param("https://notevil.example/", "https://notevil.example/", id="not a subdomain"),
        pytest.param("https://example.com/%41", "https://example.com/%41", id="encoding kept"),
    ],
)
def test_accepted_urls_are_normalised_for_the_location_header(given: str, stored: str) -> None:
    assert parse_create({"long_url": given}, RULES, NOW).long_url == stored


def test_a_valid_request_keeps_every_field() -> None:
    wanted = parse_create(
        {"long_url": GOOD, "custom_alias": "My_Link-1", "expires_at": "2099-01-01T02:00:00+02:00", "max_visits": 3},
        RULES,
        NOW,
    )
    assert (wanted.custom_alias, wanted.expires_at, wanted.max_visits) == ("My_Link-1", 4070908800.0, 3)


@pytest.mark.parametrize(("body", "field"), [INVALID[i] for i in (1, 2, 5, 13, 15, 22, 28, 33)])
async def test_the_api_answers_400_naming_the_field_and_stores_nothing(
    backend: Backend, body: object, field: str
) -> None:
    settings = backend.settings("blocked_domains: [evil.example]")
    async with running(settings) as gateway:
        response = await gateway.client.post("/api/v1/urls", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_field"
        assert response.json()["field"] == field
        assert set(response.json()) == {"error", "detail", "request_id", "field"}
        assert await gateway.count_links() == 0


async def test_malformed_json_is_a_400(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        json_type = {"content-type": "application/json"}
        for content in (b"{not json", b"", b"\xff\xfe", b'{"long_url": NaN}'):
            response = await gateway.client.post("/api/v1/urls", content=content, headers=json_type)
            assert response.status_code == 400
            assert response.json()["error"] in ("invalid_body", "invalid_field")
            assert response.json()["field"] == "body"
        untyped = await gateway.client.post("/api/v1/urls", content=b'{"long_url": "https://example.com/"}')
        assert untyped.status_code == 415
        assert untyped.json()["error"] == "unsupported_media_type"
        assert await gateway.count_links() == 0
