"""One path grammar for routes and rate-limit rules (gateway/patterns.py)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, strategies as st

from gateway.config import parse_settings
from gateway.config.ratelimit import RuleSettings
from gateway.config.routes import RouteMatch, RouteSettings
from gateway.exceptions import ConfigError
from gateway.patterns import EXACT, PREFIX, WILDCARD, PathPattern, rule_pattern
from gateway.ratelimit.rules import RuleSet
from gateway.routing import Router


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/api", "/api", True),
        ("/api", "/api/x", False),
        ("/api/**", "/api", True),
        ("/api/**", "/api/", True),
        ("/api/**", "/api/v1/x", True),
        ("/api/**", "/apix", False),
        ("/**", "/anything/at/all", True),
        ("/users/*/orders", "/users/42/orders", True),
        ("/users/*/orders", "/users/42/43/orders", False),
        ("/users/*/orders", "/users//orders", False),
        ("/users/*", "/users/42", True),
        ("/users/*", "/users/42/x", False),
        ("/users/*", "/users", False),
        ("/users/*/**", "/users/42", True),
        ("/users/*/**", "/users/42/a/b", True),
        ("/users/*/**", "/users", False),
        ("/a*b", "/a*b", True),
        ("/a*b", "/axb", False),
    ],
)
def test_the_grammar(pattern: str, path: str, expected: bool) -> None:
    assert PathPattern.parse(pattern).matches(path) is expected


def test_specificity_orders_exact_then_wildcards_then_prefixes() -> None:
    kinds = [PathPattern.parse(text).kind for text in ("/a/b", "/a/*", "/a/**")]
    assert kinds == [EXACT, WILDCARD, PREFIX]
    assert PathPattern.parse("/api/v1/**").specificity > PathPattern.parse("/api/**").specificity


@pytest.mark.parametrize("bad", ["/a/**/b", "api/x"])
def test_what_the_grammar_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        PathPattern.parse(bad)


def route(path: str) -> Router:
    return Router([RouteSettings(name="r", match=RouteMatch(path=path), upstream="u")])


def rule(match: str) -> RuleSet:
    return RuleSet([RuleSettings(name="r", match=match, windows=("1/1m",))])


segment = st.sampled_from(["a", "b", "users", "42", "x-y"])
paths = st.lists(segment, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
patterns = st.lists(st.sampled_from(["a", "b", "users", "*"]), min_size=1, max_size=3).flatmap(
    lambda parts: st.sampled_from(["/" + "/".join(parts), "/" + "/".join([*parts, "**"])])
)


@given(pattern=patterns, path=paths)
def test_one_string_means_one_thing_in_a_route_and_in_a_rule(pattern: str, path: str) -> None:
    """Before, `/x/*` was one segment in a route and everything below in a rule."""
    if pattern.endswith("/*"):
        return  # the legacy rule spelling, below
    in_route = route(pattern).match("h", path, "GET") is not None
    in_rule = rule(pattern).match("free", path, "GET") is not None
    assert in_route == in_rule == PathPattern.parse(pattern).matches(path)


def test_a_legacy_rule_suffix_keeps_its_meaning_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        legacy = rule("/api/v1/*")
    assert legacy.match("free", "/api/v1/urls/abc", "GET") is not None  # still everything below: no limit shrinks
    assert legacy.match("free", "/api/v1", "GET") is not None
    assert "'/api/v1/**'" in caplog.text
    assert rule_pattern("/api/v1/**")[1] is None
    assert route("/api/v1/*").match("h", "/api/v1/urls/abc", "GET") is None  # in a route, one segment


def test_a_misplaced_double_star_is_a_config_error_at_its_line() -> None:
    text = 'ratelimit:\n  rules:\n    - {match: "/a/**/b", windows: ["1/1m"]}\n'
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="gw.yaml", environ={})
    assert caught.value.errors[0].startswith("gw.yaml:3: ratelimit.rules[0].match")
