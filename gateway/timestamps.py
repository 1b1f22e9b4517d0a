"""The one timestamp format of the gateway's answers, and the one parser of timestamps in requests.

Days (click statistics) are UTC calendar days, `2030-01-31`, in and out.

Out: RFC 3339 in UTC with milliseconds, `2030-01-31T09:00:00.000Z`, whatever the field. In: RFC 3339 with a date,
a time and an offset (`Z` or `+02:00`); a timestamp without an offset is refused, since the server's zone and the
client's need not agree.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime

from gateway.exceptions import InvalidField

EXAMPLE = "2030-01-31T09:00:00Z"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def format_time(epoch: float) -> str:
    """Epoch seconds → `2030-01-31T09:00:00.000Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_reset(epoch: float) -> str:
    """A reset moment, rounded up to the second: it never reads earlier than it is."""
    return format_time(math.ceil(epoch))


def parse_time(field: str, value: object) -> float:
    """RFC 3339 text → epoch seconds; InvalidField naming `field` otherwise."""
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be an RFC 3339 date-time string such as {EXAMPLE}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField(field, f"{field} is not an RFC 3339 date-time such as {EXAMPLE}: {value!r}") from None
    if moment.tzinfo is None or "T" not in value.upper():
        raise InvalidField(field, f"{field} needs a date, a time and an offset, such as {EXAMPLE}")
    return moment.timestamp()


def format_optional(epoch: float | None) -> str | None:
    return None if epoch is None else format_time(epoch)


def format_day(epoch: float) -> str:
    """Epoch seconds → the UTC day, `2030-01-31`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def parse_day(field: str, value: str) -> date:
    """`2030-01-31` → that date; InvalidField naming `field` otherwise."""
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidField(field, f"{field} must be a day such as 2030-01-31: {value!r}") from None
