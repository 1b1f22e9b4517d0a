"""JSON bodies for the gateway's own answers: every error is {"error", "detail", "request_id"}."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from starlette.types import Send

JSON = b"application/json"


async def send_json(send: Send, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(
    send: Send,
    status: int,
    error: str,
    detail: str,
    request_id: str | None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    await send_json(send, status, {"error": error, "detail": detail, "request_id": request_id, **extra}, headers)


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC, rounded up to the second (a reset never reads earlier than it is)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(epoch)))
