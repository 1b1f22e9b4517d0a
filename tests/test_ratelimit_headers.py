from __future__ import annotations

import math

import pytest

from gateway.config.windows import Window, parse_window, parse_windows
from gateway.engines.embedded import EmbeddedEngine
from gateway.ratelimit.headers import policy_value, rate_limit_headers, retry_after_headers
from gateway.ratelimit.limiter import Decision, SlidingWindowLimiter, WindowState

NOW = 1_700_000_000.0
MINUTE = parse_window("100/1m")
DAY = parse_window("10000/1d")


def state(window: Window, remaining: int, reset_in: float, retry_after: float = 0.0) -> WindowState:
    return WindowState(window, window.limit, remaining, NOW + reset_in, retry_after)


def test_allowed_request_headers() -> None:
    decision = Decision(True, (state(MINUTE, 42, 16.2), state(DAY, 9000, 3600)), 0.0)
    assert rate_limit_headers(decision, now=NOW) == [
        (b"ratelimit-policy", b'"1m";q=100;w=60, "1d";q=10000;w=86400'),
        (b"ratelimit", b'"1m";r=42;t=17'),
        (b"x-ratelimit-limit", b"100"),
        (b"x-ratelimit-remaining", b"42"),
        (b"x-ratelimit-reset", b"17"),
    ]


def test_the_tightest_window_speaks() -> None:
    decision = Decision(True, (state(MINUTE, 80, 10), state(DAY, 3, 50_000)), 0.0)
    headers = dict(rate_limit_headers(decision, now=NOW))
    assert headers[b"ratelimit"] == b'"1d";r=3;t=50000'
    assert headers[b"x-ratelimit-limit"] == b"10000"


def test_refusal_carries_retry_after_rounded_up() -> None:
    refused = Decision(False, (state(MINUTE, 0, 10.0, 51.2), state(DAY, 500, 3600)), 51.2)
    headers = dict(rate_limit_headers(refused, now=NOW))
    assert headers[b"retry-after"] == b"52"
    # t never sends a client back before the window would let it through.
    assert headers[b"ratelimit"] == b'"1m";r=0;t=52'
    assert headers[b"x-ratelimit-reset"] == b"52"


def test_retry_after_only_when_it_means_something() -> None:
    allowed = Decision(True, (state(MINUTE, 0, 10.0),), 0.0)
    assert retry_after_headers(allowed) == []
    never = Decision(False, (state(MINUTE, 0, 10.0, math.inf),), math.inf)
    assert retry_after_headers(never) == []
    assert dict(rate_limit_headers(never, now=NOW))[b"ratelimit"] == b'"1m";r=0;t=10'
    tiny = Decision(False, (state(MINUTE, 0, 10.0, 0.001),), 0.001)
    assert retry_after_headers(tiny) == [(b"retry-after", b"1")]


def test_styles() -> None:
    decision = Decision(True, (state(MINUTE, 1, 1),), 0.0)
    assert [name for name, _ in rate_limit_headers(decision, ["legacy"], now=NOW)] == [
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    ]
    assert [name for name, _ in rate_limit_headers(decision, ["ietf"], now=NOW)] == [b"ratelimit-policy", b"ratelimit"]
    with pytest.raises(ValueError, match="'draft-6'"):
        rate_limit_headers(decision, ["draft-6"], now=NOW)  # type: ignore[list-item]


def test_policy_names_are_structured_field_strings() -> None:
    odd = Window(limit=5, seconds=0.5, name='half"\\')
    assert policy_value([odd]) == b'"half\\"\\\\";q=5;w=1'


async def test_headers_from_a_real_decision() -> None:
    limiter = SlidingWindowLimiter(EmbeddedEngine())
    windows = parse_windows("2/1m; 100/1d")
    start = 1_700_006_400.0 + 20
    for _ in range(2):
        await limiter.hit("zoe", "r1", windows, now=start)
    refused = await limiter.hit("zoe", "r1", windows, now=start)
    headers = dict(rate_limit_headers(refused, now=start))
    # Two hits at 20s: the next window must shed half a request (30s in), so 40s + 30s.
    assert headers[b"retry-after"] == b"70"
    assert headers[b"ratelimit"] == b'"1m";r=0;t=70'
    assert headers[b"ratelimit-policy"] == b'"1m";q=2;w=60, "1d";q=100;w=86400'


def test_a_refusal_let_through_gets_no_retry_after() -> None:
    refused = Decision(False, (state(MINUTE, 0, 10.0, 51.2),), 51.2)
    assert b"retry-after" not in dict(rate_limit_headers(refused, now=NOW, refused=False))
    assert dict(rate_limit_headers(refused, now=NOW, refused=True))[b"retry-after"] == b"52"
