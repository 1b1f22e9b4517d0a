"""Idempotency-Key for POST /api/v1/notifications: a retried request gets the first answer, and nothing twice.

Two layers. A fast claim (lua/idempotency_claim.lua, SET NX PX through the engine's scripts) catches a retry
that races the first request, and a different body under the same key, without touching the database. The
durable record is a row written in the same transaction as the notification, under a unique key: it decides
when the claim is unavailable (Redis down) or has expired, and it holds the response that replays answer with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from gateway.engines.base import ScriptEngine
from gateway.engines.scripts import load_script
from gateway.exceptions import StorageError
from gateway.notify.store import NotificationStore

logger = logging.getLogger("gateway.notify")
#: How long a claim holds while its request runs; the database row takes over once it is written.
CLAIM_TTL_MS = 60_000
MAX_KEY_LENGTH = 255
Verdict = Literal["new", "replay", "mismatch", "in_progress"]


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    #: The stored response (for a replay).
    response: str | None = None


def fingerprint(body: Any) -> str:
    """The body's identity, independent of key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Idempotency:
    def __init__(self, scripts: ScriptEngine, store: NotificationStore) -> None:
        self.scripts = scripts
        self.store = store
        self._claim = load_script("idempotency_claim")
        self._release = load_script("idempotency_release")

    @staticmethod
    def scoped(caller: str, key: str) -> str:
        """Keys are per caller: two API keys may use the same Idempotency-Key independently."""
        return hashlib.sha256(json.dumps([caller, key]).encode()).hexdigest()

    async def recorded(self, key: str, print_: str) -> Outcome | None:
        """The durable record's verdict, or None if the key was never used (or has expired)."""
        row = await self.store.idempotency(key)
        if row is None:
            return None
        if row["fingerprint"] != print_:
            return Outcome("mismatch")
        return Outcome("replay", row["response"])

    async def claim(self, key: str, print_: str) -> Outcome:
        recorded = await self.recorded(key, print_)
        if recorded is not None:
            return recorded
        try:
            claimed, stored = await self.scripts.eval(self._claim, [self._redis_key(key)], [print_, CLAIM_TTL_MS])
        except StorageError as exc:
            logger.warning("idempotency claim unavailable, relying on the database record: %s", exc)
            return Outcome("new")
        if int(claimed) == 1:
            return Outcome("new")
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        if stored != print_:
            return Outcome("mismatch")
        # The first request may have finished between our two looks.
        return await self.recorded(key, print_) or Outcome("in_progress")

    async def release(self, key: str, print_: str) -> None:
        try:
            await self.scripts.eval(self._release, [self._redis_key(key)], [print_])
        except StorageError:
            pass  # it expires on its own

    @staticmethod
    def _redis_key(key: str) -> str:
        return "notify:idem:" + key
