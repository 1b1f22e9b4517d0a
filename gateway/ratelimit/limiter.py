"""The sliding-window limiter: one script call decides a request against every window of a rule."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from gateway.config.windows import Window
from gateway.engines.base import ScriptEngine
from gateway.engines.scripts import Script, load_script, pack_evalsha


class WindowState(NamedTuple):
    """One window's figures after a decision."""

    #: The window the figures are for.
    window: Window
    #: Requests allowed per window.
    limit: int
    #: Requests still allowed now (after this request's debit if it was allowed), never negative.
    remaining: int
    #: When the current window ends, epoch seconds.
    reset_at: float
    #: Seconds until this window lets a refused request through; 0 if it allows, `math.inf` if it never will.
    retry_after: float


class Decision:
    """The verdict on one request, with the figures the response headers need."""

    __slots__ = ("allowed", "windows", "retry_after", "tightest")

    def __init__(
        self,
        allowed: bool,
        windows: tuple[WindowState, ...],
        retry_after: float,
        tightest: WindowState | None = None,
    ) -> None:
        #: True if every window allowed the request (and all were debited); False if none was debited.
        self.allowed = allowed
        #: One state per window, in the rule's order.
        self.windows = windows
        #: Seconds until the request could pass, 0 when allowed (the slowest refusing window decides).
        self.retry_after = retry_after
        #: The window with the least remaining; on a tie the one that blocks longest, then the one resetting first.
        #: Found once here: the headers, the metrics and the events all ask for it.
        self.tightest: WindowState = tightest if tightest is not None else min(windows, key=_tightness)

    def __repr__(self) -> str:
        return f"Decision(allowed={self.allowed}, windows={self.windows!r}, retry_after={self.retry_after})"


def _tightness(state: WindowState) -> tuple[int, float, float]:
    return (state.remaining, -state.retry_after, state.reset_at)


@lru_cache(maxsize=65536)
def identity_tag(identity: str) -> str:
    """16 hex digits of a hash of the identity: the Redis Cluster hash tag, and no personal data in key names."""
    return hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()


def window_keys(identity: str, rule_id: str, windows: Sequence[Window]) -> list[str]:
    """`rl:{<tag>}:<rule_id>:<seconds>`: every key of a decision shares the hash tag, so one Cluster slot."""
    prefix = f"rl:{{{identity_tag(identity)}}}:{rule_id}:"
    return [prefix + window.key_part for window in windows]


#: What the Lua script reads as "take the time from the server's clock" (ARGV[1]).
_SERVER_CLOCK = b"0"
#: Costs as the script reads them, encoded once.
_COSTS = tuple(b"%d" % cost for cost in range(16))
#: Prepared calls kept per limiter; past this many (identity, rule) pairs the cache starts afresh.
PREPARED_MAX = 65_536


class SlidingWindowLimiter:
    """Sliding-window counters in any `ScriptEngine`; `rule_id` must change whenever a rule's windows change."""

    def __init__(self, engine: ScriptEngine) -> None:
        self.engine = engine
        self._script = load_script("sliding_window")
        # An in-process engine answers inline, given bytes: calling it directly saves a coroutine and the
        # per-argument encoding of every decision.
        self._run: Callable[[Script, Sequence[bytes], Sequence[bytes]], Any] | None = getattr(
            engine, "run_encoded", None
        )
        # A remote engine that takes a pre-packed command (Redis): the whole EVALSHA of a busy identity is built
        # once per (identity, rule, cost), since with the server's clock its every byte is the same each time.
        self._eval_packed: Callable[[Script, Sequence[bytes], Sequence[bytes], bytes], Awaitable[Any]] | None = getattr(
            engine, "eval_packed", None
        )
        # Busy identities decide many times a second: their keys and the rule's ARGV are encoded once, not per
        # request. Keyed by (identity, rule_id), which is why rule_id must follow the rule's windows.
        self._prepared: dict[tuple[str, str], tuple[list[bytes], list[bytes]]] = {}
        self._packed: dict[tuple[str, str, int], tuple[list[bytes], list[bytes], bytes]] = {}

    def _prepare(self, identity: str, rule_id: str, windows: Sequence[Window]) -> tuple[list[bytes], list[bytes]]:
        if len(self._prepared) >= PREPARED_MAX:
            self._prepared.clear()
        keys = [key.encode() for key in window_keys(identity, rule_id, windows)]
        tail = [b"%d" % number for window in windows for number in (window.limit, window.ms)]
        prepared = self._prepared[(identity, rule_id)] = (keys, tail)
        return prepared

    def _pack(
        self, identity: str, rule_id: str, windows: Sequence[Window], cost: int
    ) -> tuple[list[bytes], list[bytes], bytes]:
        if len(self._packed) >= PREPARED_MAX:
            self._packed.clear()
        keys, tail = self._prepared.get((identity, rule_id)) or self._prepare(identity, rule_id, windows)
        args = [_SERVER_CLOCK, b"%d" % cost, *tail]
        packed = self._packed[(identity, rule_id, cost)] = (keys, args, pack_evalsha(self._script, keys, args))
        return packed

    async def hit(
        self, identity: str, rule_id: str, windows: Sequence[Window], cost: int = 1, now: float | None = None
    ) -> Decision:
        """Spend `cost` in every window, or in none if any would overflow; `now` (epoch seconds) is for tests."""
        if not windows:
            raise ValueError("a rate-limit decision needs at least one window")
        if cost < 0:
            raise ValueError(f"cost must be >= 0, not {cost}")
        if now is None and self._eval_packed is not None:
            packed = self._packed.get((identity, rule_id, cost)) or self._pack(identity, rule_id, windows, cost)
            reply = await self._eval_packed(self._script, *packed)
            return _decision(reply, windows, time.time())
        prepared = self._prepared.get((identity, rule_id)) or self._prepare(identity, rule_id, windows)
        keys, tail = prepared
        clock = _SERVER_CLOCK if now is None else b"%d" % round(now * 1000)
        args = [clock, _COSTS[cost] if cost < len(_COSTS) else b"%d" % cost, *tail]
        run = self._run
        reply = run(self._script, keys, args) if run is not None else await self.engine.eval(self._script, keys, args)
        return _decision(reply, windows, time.time() if now is None else now)

    async def peek(self, identity: str, rule_id: str, windows: Sequence[Window], now: float | None = None) -> Decision:
        """The state without spending anything; `allowed` says whether a request of cost 1 would pass."""
        return await self.hit(identity, rule_id, windows, cost=0, now=now)


def _decision(reply: Sequence[int], windows: Sequence[Window], now: float) -> Decision:
    states = []
    retry_after = 0.0
    tightest: WindowState | None = None
    at = 1
    for window in windows:
        retry_ms = reply[at + 3]
        retry = math.inf if retry_ms < 0 else retry_ms / 1000
        if retry > retry_after:
            retry_after = retry
        state = WindowState(window, reply[at], reply[at + 1], now + reply[at + 2] / 1000, retry)
        states.append(state)
        if tightest is None or _tightness(state) < _tightness(tightest):
            tightest = state
        at += 4
    allowed = reply[0] == 1
    return Decision(allowed, tuple(states), 0.0 if allowed else retry_after, tightest)
