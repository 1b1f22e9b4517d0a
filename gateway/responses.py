"""JSON bodies for the gateway's own answers: every error is {"error", "detail", "request_id"}."""

from __future__ import annotations

import json
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
