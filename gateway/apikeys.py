"""API keys managed through the admin API (`/api/v1/keys`), beside the ones in the YAML file.

A key is `gwk_<id>_<secret>`, shown once when it is created; the database keeps its id and the SHA-256 of the
whole key, never the key. Each replica holds the active keys in memory (a request never waits for the
database) and reloads them every `identities.key_refresh`, so a revocation reaches every replica within that
interval (at once on the replica that revoked it).

Scopes: `admin` (everything, as an admin key in the YAML), `links` (the shortener's API), `notifications` (the
notification API and preferences), `read` (GET on those two, nothing else). A YAML key has every scope.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.access import require_admin
from gateway.engines.database import Database, Migration, Row
from gateway.exceptions import InvalidField, NotFound
from gateway.request_body import read_fields
from gateway.timestamps import format_optional, format_time

logger = logging.getLogger("gateway.identity")
SCOPES = ("admin", "links", "notifications", "read")
PREFIX = "gwk_"
MIGRATIONS = [
    Migration(
        "apikeys",
        1,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, tier TEXT NOT NULL,
            scopes TEXT NOT NULL, name TEXT, created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)
        """,
    )
]


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    user_id: str
    tier: str
    scopes: frozenset[str]
    name: str | None
    created_at: float
    revoked_at: float | None = None

    @classmethod
    def from_row(cls, row: Row) -> StoredKey:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            tier=row["tier"],
            scopes=frozenset(json.loads(row["scopes"])),
            name=row["name"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )


class KeyRing:
    """The managed keys: their table, and this replica's copy of the active ones (digest → key)."""

    def __init__(self, database: Database, *, refresh_s: float) -> None:
        self.database = database
        self.refresh_s = refresh_s
        self.active: dict[bytes, StoredKey] = {}

    async def start(self) -> None:
        """Make the table if need be, and load the active keys (each reload does both: cheap, and a database that
        was down at start gets its table when it answers)."""
        await self.database.migrate(MIGRATIONS)
        rows = await self.database.fetch("SELECT * FROM api_keys WHERE revoked_at IS NULL")
        self.active = {bytes.fromhex(row["digest"]): StoredKey.from_row(row) for row in rows}

    async def create(self, user_id: str, tier: str, scopes: Sequence[str], name: str | None) -> tuple[str, StoredKey]:
        """A new key (its text, shown only now) and its record."""
        key_id = secrets.token_hex(6)
        text = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        stored = StoredKey(key_id, user_id, tier, frozenset(scopes), name, time.time())
        await self.database.execute(
            "INSERT INTO api_keys (id, digest, user_id, tier, scopes, name, created_at) VALUES ($1, $2, $3, $4, $5, "
            "$6, $7)",
            key_id,
            digest(text.encode()).hex(),
            user_id,
            tier,
            json.dumps(sorted(stored.scopes)),
            name,
            stored.created_at,
        )
        self.active[digest(text.encode())] = stored
        return text, stored

    async def listed(self) -> list[StoredKey]:
        rows = await self.database.fetch("SELECT * FROM api_keys ORDER BY created_at DESC")
        return [StoredKey.from_row(row) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        count = await self.database.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", time.time(), key_id
        )
        self.active = {d: key for d, key in self.active.items() if key.id != key_id}
        return count == 1


def describe(key: StoredKey) -> dict[str, object]:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "tier": key.tier,
        "scopes": sorted(key.scopes),
        "name": key.name,
        "created_at": format_time(key.created_at),
        "revoked_at": format_optional(key.revoked_at),
    }


def user_id_field(value: object) -> str:
    """A user id from a request (an API key's owner, a stored tier's user), or a 400 naming `user_id`."""
    if not isinstance(value, str) or not 0 < len(value) <= 200 or not value.isprintable():
        raise InvalidField("user_id", "user_id must be a printable string of 1 to 200 characters")
    return value


def tier_field(request: Request, value: object) -> str:
    """A declared tier from a request, or a 400 naming `tier`."""
    tiers = request.app.state.identities.tiers
    if not isinstance(value, str) or value not in tiers:
        raise InvalidField("tier", f"tier must be one of {sorted(tiers)}")
    return value


def keyring_of(request: Request) -> KeyRing:
    keyring: KeyRing = request.app.state.keyring
    return keyring


async def create_key(request: Request) -> Response:
    """`POST /api/v1/keys` {user_id, tier, scopes, name?} (admin): the key, shown this once."""
    require_admin(request, "managing API keys")
    body = await read_fields(request, ("user_id", "tier", "scopes", "name"))
    scopes, name = body.get("scopes"), body.get("name")
    user_id = user_id_field(body.get("user_id"))
    tier = tier_field(request, body.get("tier"))
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
        raise InvalidField("scopes", f"scopes must be a non-empty list of {list(SCOPES)}")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InvalidField("name", "name must be a string of at most 200 characters")
    text, stored = await keyring_of(request).create(user_id, tier, scopes, name)
    return JSONResponse({**describe(stored), "key": text}, status_code=201)


async def list_keys(request: Request) -> Response:
    require_admin(request, "managing API keys")
    return JSONResponse({"keys": [describe(key) for key in await keyring_of(request).listed()]})


async def revoke_key(request: Request) -> Response:
    require_admin(request, "managing API keys")
    if not await keyring_of(request).revoke(request.path_params["key_id"]):
        raise NotFound("no active key with this id")
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/keys", create_key, methods=["POST"]),
    Route("/api/v1/keys", list_keys, methods=["GET"]),
    Route("/api/v1/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
