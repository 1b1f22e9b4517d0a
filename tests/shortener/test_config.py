from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.config.shortener import DEFAULT_CODE_SECRET
from gateway.exceptions import ConfigError
from gateway.settings import parse_settings

UPSTREAM = 'upstreams: {up: {targets: ["http://127.0.0.1:9"]}}\n'


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="gw.yaml", environ=environ or {})
    return caught.value.errors


def test_defaults() -> None:
    shortener = parse_settings("{}").shortener
    assert shortener.enabled == "auto"
    assert shortener.redirect_status == 301
    assert shortener.cache_max_age == 300
    assert shortener.require_api_key is False
    assert shortener.code_secret == DEFAULT_CODE_SECRET
    assert (shortener.key_pool.min, shortener.key_pool.batch) == (1000, 1000)
    assert (shortener.local_cache.size, shortener.local_cache.ttl) == (10_000, 60)
    assert (shortener.shared_cache_ttl, shortener.negative_ttl) == (86_400, 30)


def test_only_the_four_redirect_statuses_are_accepted() -> None:
    assert parse_settings("shortener: {redirect_status: 308}").shortener.redirect_status == 308
    [message] = errors_of("shortener:\n  redirect_status: 303\n")
    assert message.startswith("gw.yaml:2: shortener.redirect_status:")


def test_the_secret_can_come_from_the_environment() -> None:
    text = "shortener:\n  code_secret: ${SHORTENER_SECRET:-fallback-secret}\n"
    assert parse_settings(text, environ={"SHORTENER_SECRET": "from-the-env"}).shortener.code_secret == "from-the-env"
    assert parse_settings(text, environ={}).shortener.code_secret == "fallback-secret"


@pytest.mark.parametrize(
    "match",
    [
        pytest.param("{path_prefix: /}", id="prefix /"),
        pytest.param("{methods: [GET]}", id="no path"),
        pytest.param('{path: "/*"}', id="any one segment"),
    ],
)
def test_an_enabled_shortener_refuses_a_route_that_catches_every_path(match: str) -> None:
    text = f"shortener: {{enabled: true}}\n{UPSTREAM}routes:\n  - {{name: everything, match: {match}, upstream: up}}\n"
    assert errors_of(text) == [
        "gw.yaml:4: routes[0].match: route 'everything' catches every path, so no short link could be reached; "
        "narrow its match or set shortener.enabled to false"
    ]


@pytest.mark.parametrize(
    "match",
    [
        pytest.param("{path_prefix: /app}", id="a prefix"),
        pytest.param("{host: app.example.com, path_prefix: /}", id="one host only"),
        pytest.param("{path_prefix: /, methods: [POST]}", id="no GET"),
    ],
)
def test_routes_that_leave_short_codes_reachable_are_fine(match: str) -> None:
    text = f"shortener: {{enabled: true}}\n{UPSTREAM}routes:\n  - {{name: some, match: {match}, upstream: up}}\n"
    assert parse_settings(text).shortener.enabled is True


def test_auto_turns_the_shortener_off_behind_a_catch_all_route(tmp_path: Path) -> None:
    database = f'engine: {{database: {{url: "sqlite:///{tmp_path}/g.db"}}}}\n'
    behind = parse_settings(
        f"{database}{UPSTREAM}routes:\n  - {{name: all, match: {{path_prefix: /}}, upstream: up}}\n"
    )
    off = create_app(behind).runtime
    assert off.shortener.enabled is False
    assert off.shortener.redirect is None
    assert "/api/v1/urls" not in {getattr(route, "path", None) for route in off.own.routes}
    on = create_app(parse_settings(database)).runtime
    assert on.shortener.enabled is True
    assert on.shortener.redirect is not None
    disabled = create_app(parse_settings(database + "shortener: {enabled: false}\n")).runtime
    assert disabled.shortener.enabled is False


def test_short_links_need_a_usable_public_url() -> None:
    assert errors_of("server: {public_url: sho.rt}\n") == [
        "gw.yaml:1: server.public_url: short links need an http(s) URL with a host, not 'sho.rt'"
    ]
    assert parse_settings("server: {public_url: sho.rt}\nshortener: {enabled: false}\n").shortener.enabled is False
