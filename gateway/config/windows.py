"""Rate-limit windows such as "100/1m": part of the configuration grammar, read by the limiter."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_UNITS: dict[str, tuple[str, int]] = {}
for _letter, _seconds, _spellings in (
    ("s", 1, ("s", "sec", "secs", "second", "seconds")),
    ("m", 60, ("m", "min", "mins", "minute", "minutes")),
    ("h", 3600, ("h", "hr", "hrs", "hour", "hours")),
    ("d", 86400, ("d", "day", "days")),
):
    for _spelling in _spellings:
        _UNITS[_spelling] = (_letter, _seconds)

_WINDOW = re.compile(r"^\s*(\d+)\s*(?:/|per\s)\s*(\d*)\s*([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Window:
    """`limit` requests per `seconds`; `name` ("1m") names the policy in headers and metrics."""

    limit: int
    seconds: float
    name: str
    #: The duration in whole milliseconds, as the Lua script counts it.
    ms: int = field(init=False, repr=False, compare=False)
    #: The duration in seconds as it appears in Redis keys ("60", "0.5").
    key_part: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"window {self.name!r}: the limit must be >= 0, not {self.limit}")
        if self.seconds < 0.001:
            raise ValueError(f"window {self.name!r}: the duration must be at least 1ms, not {self.seconds}s")
        # Derived once here: the limiter reads them on every decision.
        object.__setattr__(self, "ms", round(self.seconds * 1000))
        key_part = str(int(self.seconds)) if self.seconds == int(self.seconds) else repr(self.seconds)
        object.__setattr__(self, "key_part", key_part)


def parse_window(text: str) -> Window:
    """Parse "100/1m", "100/30s", "100/minute" or "100 per hour" (units s, m, h, d); ValueError names the string."""
    match = _WINDOW.match(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"invalid rate-limit window {text!r}: expected '<limit>/<count><unit>' such as '100/1m'")
    amount = int(match.group(2) or 1)
    if amount == 0:
        raise ValueError(f"invalid rate-limit window {text!r}: the duration must not be zero")
    letter, seconds = unit
    return Window(limit=int(match.group(1)), seconds=float(amount * seconds), name=f"{amount}{letter}")


def parse_windows(texts: str | Iterable[str]) -> tuple[Window, ...]:
    """Several windows, from a list or a string separated by ";" or ","; two windows may not share a duration."""
    if isinstance(texts, str):
        texts = [part for part in re.split(r"[;,]", texts) if part.strip()]
    windows = tuple(parse_window(text) for text in texts)
    if not windows:
        raise ValueError("a rate-limit rule needs at least one window")
    durations = [window.seconds for window in windows]
    if len(set(durations)) != len(durations):
        raise ValueError(f"rate-limit windows {[w.name for w in windows]} repeat a duration")
    return windows


def _one_or_many(value: object) -> object:
    return (value,) if isinstance(value, str) else value


def _checked(texts: tuple[str, ...]) -> tuple[str, ...]:
    parse_windows(texts)
    return texts


#: Windows as a setting holds them: one string or a list ("100/1m" or ["100/1m", "1000/1d"]), checked as
#: parse_windows reads them (a rate-limit rule's `windows`, a channel's `rate_limit`).
WindowTexts = Annotated[tuple[str, ...], BeforeValidator(_one_or_many), AfterValidator(_checked)]
