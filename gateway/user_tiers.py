"""Tiers set per user through the admin API (`/api/v1/users/{user_id}/tier`), so that a tier needs no API key.

A stored tier overrides the one a user's credential carries (a YAML or managed API key, a JWT's tier claim, the
trusted user header); a client address keeps the anonymous tier. Each replica holds the whole table in memory (a
request never waits for the database) and reloads it with the managed API keys, every `identities.key_refresh`:
a change takes effect at once on the replica that made it and within `key_refresh` on every other. Counters are
per user and rule, so a rule that both tiers share keeps what the user spent under it.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.access import require_admin
from gateway.apikeys import tier_field, user_id_field
from gateway.engines.database import Database, Migration
from gateway.exceptions import NotFound
from gateway.request_body import read_fields
from gateway.timestamps import format_time

MIGRATIONS = [
    Migration(
        "user_tiers",
        1,
        "CREATE TABLE user_tiers (user_id TEXT PRIMARY KEY, tier TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    )
]


class TierStore:
    """The user_tiers table, and this replica's copy of it (user id → tier)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.tiers: dict[str, str] = {}

    async def start(self) -> None:
        """Make the table if need be, and load it (each reload does both, as the key ring's does)."""
        await self.database.migrate(MIGRATIONS)
        rows = await self.database.fetch("SELECT user_id, tier FROM user_tiers")
        self.tiers = {row["user_id"]: row["tier"] for row in rows}

    async def set(self, user_id: str, tier: str) -> float:
        """Store `tier` for `user_id`; returns when, epoch seconds."""
        now = time.time()
        await self.database.execute(
            "INSERT INTO user_tiers (user_id, tier, updated_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id) DO UPDATE SET tier = excluded.tier, updated_at = excluded.updated_at",
            user_id,
            tier,
            now,
        )
        self.tiers = {**self.tiers, user_id: tier}
        return now

    async def stored(self, user_id: str) -> tuple[str, float] | None:
        row = await self.database.fetchrow("SELECT tier, updated_at FROM user_tiers WHERE user_id = $1", user_id)
        return None if row is None else (row["tier"], row["updated_at"])

    async def clear(self, user_id: str) -> bool:
        count = await self.database.execute("DELETE FROM user_tiers WHERE user_id = $1", user_id)
        self.tiers = {user: tier for user, tier in self.tiers.items() if user != user_id}
        return count == 1


def store_of(request: Request) -> TierStore:
    store: TierStore = request.app.state.user_tiers
    return store


def _described(user_id: str, tier: str, updated_at: float) -> dict[str, str]:
    return {"user_id": user_id, "tier": tier, "updated_at": format_time(updated_at)}


async def set_tier(request: Request) -> Response:
    """`PUT /api/v1/users/{user_id}/tier` {"tier"} (admin)."""
    require_admin(request, "setting a user's tier")
    body = await read_fields(request, ("tier",))
    tier = tier_field(request, body.get("tier"))
    user_id = user_id_field(request.path_params["user_id"])
    updated_at = await store_of(request).set(user_id, tier)
    return JSONResponse(_described(user_id, tier, updated_at))


async def read_tier(request: Request) -> Response:
    require_admin(request, "reading a user's stored tier")
    user_id = request.path_params["user_id"]
    stored = await store_of(request).stored(user_id)
    if stored is None:
        raise NotFound("no tier is stored for this user (their credential's tier applies)")
    return JSONResponse(_described(user_id, *stored))


async def clear_tier(request: Request) -> Response:
    require_admin(request, "setting a user's tier")
    if not await store_of(request).clear(request.path_params["user_id"]):
        raise NotFound("no tier is stored for this user")
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/users/{user_id}/tier", set_tier, methods=["PUT"]),
    Route("/api/v1/users/{user_id}/tier", read_tier, methods=["GET"]),
    Route("/api/v1/users/{user_id}/tier", clear_tier, methods=["DELETE"]),
]
