"""Redis Streams consumer groups, as the click log and the notification queues use them.

A Redis restarted without persistence (or flushed) comes back without the streams and their groups; the
readers then get NOGROUP until the group is made again. `ensure_group` makes it (from the start of the stream,
so that entries added before the group existed are read too), and `missing_group` recognises the error.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError


async def ensure_group(client: Any, stream: str, group: str) -> None:
    """Create `group` on `stream` (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def missing_group(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the stream or its group is gone."""
    while exc is not None:
        if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False
