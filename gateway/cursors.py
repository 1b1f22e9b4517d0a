"""Cursor paging for the own API's lists: a cursor is opaque to clients, and names where the next page starts
(the last item's creation time and id, for keyset paging: stable while items are added)."""

from __future__ import annotations

import base64
import binascii
import json

from gateway.exceptions import InvalidField


def encode_cursor(created_at: float, item_id: str) -> str:
    raw = json.dumps([created_at, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, id); InvalidField("cursor") for anything this API did not give out."""
    try:
        created_at, item_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(created_at, (int, float)) or isinstance(created_at, bool) or not isinstance(item_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise InvalidField("cursor", "cursor is not one this API gave out (use next_cursor as it is)") from None
    return float(created_at), item_id


def page_size(value: str | None, *, default: int = 50, maximum: int = 100) -> int:
    """The `limit` query parameter: an integer from 1 to `maximum`."""
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise InvalidField("limit", f"limit must be an integer from 1 to {maximum}")
    return limit
