"""Durations ("500ms", "30s", "5m", "1h", "1d") and sizes ("10MB", "512KiB") as config field types."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 5m, 1h, 1d)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as 10MB (decimal) or 10MiB (binary)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 512KiB, 10MB)")
        unit = (match.group(2) or "").lower().removesuffix("b")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
