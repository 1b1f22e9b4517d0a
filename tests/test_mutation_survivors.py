"""Tests for mutants that survived the mutation-testing run (CONTRIBUTING.md, "Mutation testing")."""

from __future__ import annotations

import pytest

from gateway.config.windows import Window, parse_window
from gateway.paths import InvalidPath, normalize_path
from gateway.ratelimit.headers import rate_limit_headers
from gateway.ratelimit.limiter import Decision, WindowState

NOW = 1_700_000_000.0
MINUTE = parse_window("100/1m")


def state(window: Window, remaining: int, reset_in: float) -> WindowState:
    return WindowState(window, window.limit, remaining, NOW + reset_in, 0.0)


@pytest.mark.parametrize("raw", [b"/a%2Fb", b"/a%2fb", b"/a%5Cb", b"/a\\b"])
def test_encoded_slashes_are_refused_unless_allowed(raw: bytes) -> None:
    # The default is the safe one: a caller that does not say otherwise never gets an escaped slash through.
    with pytest.raises(InvalidPath):
        normalize_path(raw)
    assert normalize_path(raw, allow_encoded_slashes=True).decoded.startswith("/a")


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"/a//b/", b"/a/b/"),  # a trailing slash is kept
        (b"/a//b", b"/a/b"),  # and none is added
        (b"/a/b/.", b"/a/b/"),
        (b"/a/b/c/..", b"/a/b/"),
        (b"/a/%62/", b"/a/b/"),
        (b"/..", b"/"),
        (b"/a/..", b"/"),
    ],
)
def test_dot_segment_removal_keeps_the_trailing_slash(raw: bytes, encoded: bytes) -> None:
    assert normalize_path(raw).encoded == encoded


def test_header_styles_in_any_order_and_a_prebuilt_policy() -> None:
    decision = Decision(True, (state(MINUTE, 42, 16.2),), 0.0)
    headers = rate_limit_headers(decision, ("legacy", "ietf"), now=NOW, policy=b'"prebuilt";q=1;w=1')
    assert headers == [
        (b"x-ratelimit-limit", b"100"),
        (b"x-ratelimit-remaining", b"42"),
        (b"x-ratelimit-reset", b"17"),
        (b"ratelimit-policy", b'"prebuilt";q=1;w=1'),
        (b"ratelimit", b'"1m";r=42;t=17'),
    ]
    # A window already reset: 0 seconds, not 1.
    assert dict(rate_limit_headers(Decision(True, (state(MINUTE, 100, -3.0),), 0.0), now=NOW))[b"ratelimit"] == (
        b'"1m";r=100;t=0'
    )
