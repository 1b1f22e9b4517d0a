"""Response headers from a Decision: IETF draft-ietf-httpapi-ratelimit-headers (-10/-11), legacy X-RateLimit-*.

Pure functions returning ASGI-ready `(name, value)` byte pairs, names lowercased as ASGI expects:

    RateLimit-Policy: "1m";q=100;w=60, "1d";q=10000;w=86400
    RateLimit: "1m";r=42;t=17
    X-RateLimit-Limit: 100 / X-RateLimit-Remaining: 42 / X-RateLimit-Reset: 17
    Retry-After: 51                                   (refusals only)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

from gateway.config.windows import Window
from gateway.ratelimit.limiter import Decision, WindowState
from gateway.responses import Headers

HeaderStyle = Literal["ietf", "legacy"]


def _sf_string(value: str) -> str:
    """A Structured Field String (RFC 9651 §3.3.3)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_value(windows: Sequence[Window]) -> bytes:
    """The RateLimit-Policy value, one item per window; it depends on the rule only, so it is built once."""
    return _policy_value(tuple(windows))


@lru_cache(maxsize=1024)
def _policy_value(windows: tuple[Window, ...]) -> bytes:
    items = (f"{_sf_string(w.name)};q={w.limit};w={max(1, round(w.seconds))}" for w in windows)
    return ", ".join(items).encode()


def seconds_to_reset(state: WindowState, now: float) -> int:
    """Whole seconds until the window frees quota, rounded up; for a refusal never before it would pass."""
    seconds = state.reset_at - now
    if state.remaining == 0 and not math.isinf(state.retry_after):
        seconds = max(seconds, state.retry_after)
    return max(0, math.ceil(seconds))


def _ietf(decision: Decision, tightest: WindowState, reset: int, policy: bytes | None = None) -> Headers:
    return [
        (b"ratelimit-policy", policy if policy is not None else policy_value([s.window for s in decision.windows])),
        (b"ratelimit", b"%s;r=%d;t=%d" % (_sf_name(tightest.window.name), tightest.remaining, reset)),
    ]


@lru_cache(maxsize=1024)
def _sf_name(name: str) -> bytes:
    return _sf_string(name).encode()


def _legacy(tightest: WindowState, reset: int) -> Headers:
    return [
        (b"x-ratelimit-limit", b"%d" % tightest.limit),
        (b"x-ratelimit-remaining", b"%d" % tightest.remaining),
        (b"x-ratelimit-reset", b"%d" % reset),
    ]


def retry_after_headers(decision: Decision) -> Headers:
    """Retry-After in whole seconds, rounded up; none when allowed, or when the request can never pass."""
    if decision.allowed or math.isinf(decision.retry_after):
        return []
    return [(b"retry-after", b"%d" % max(1, math.ceil(decision.retry_after)))]


def rate_limit_headers(
    decision: Decision,
    styles: Iterable[HeaderStyle] = ("ietf", "legacy"),
    now: float | None = None,
    *,
    refused: bool | None = None,
    policy: bytes | None = None,
) -> Headers:
    """Every header for a response: the chosen styles, plus Retry-After if the response refuses the request.

    `refused` defaults to `not decision.allowed`; pass False for a refusal that is let through (shadow mode).
    `policy` is the rule's RateLimit-Policy value when the caller has it built already (Rule.policy).
    """
    # The tightest window and its reset once, for every style: this runs on every limited response.
    tightest = decision.tightest
    reset = seconds_to_reset(tightest, time.time() if now is None else now)
    headers: Headers = []
    for style in styles:
        if style == "ietf":
            headers += _ietf(decision, tightest, reset, policy)
        elif style == "legacy":
            headers += _legacy(tightest, reset)
        else:
            raise ValueError(f"unknown rate-limit header style {style!r}: expected 'ietf' or 'legacy'")
    if refused is None or refused:
        headers += retry_after_headers(decision)
    return headers
