"""Rate-limit rules managed through the admin API (`/api/v1/rate-limit/rules`), beside the YAML's.

A managed rule is the YAML grammar's rule (`RuleSettings`, validated by the same model and the same tier check),
kept in the database's `rate_limit_rules` table (PostgreSQL, SQLite embedded) as its JSON. Each replica holds
the rules in memory and reloads them every `ratelimit.rule_refresh` (2 s): an edit takes effect at once on the
replica that made it and within `rule_refresh` on every other, and a request never waits for the database (it
keeps the rules it had while the database is down). Polling rather than Redis pub/sub: one small query per
replica every two seconds, the same on both engines, and nothing lost while a subscriber reconnects.

Precedence: YAML and managed rules are matched together, the most specific pattern first; at equal specificity
a managed rule beats a YAML one (gateway/ratelimit/rules.py). A name is unique across both. A rule's counters
are keyed by the hash of its meaning, so an edited rule counts afresh and an unchanged one keeps its counts.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.config.ratelimit import RuleSettings
from gateway.engines.database import Database, Migration, Row, UniqueViolation
from gateway.exceptions import Conflict, InvalidBody, InvalidField
from gateway.ratelimit.rules import rule_name
from gateway.ratelimit.service import RateLimitService
from gateway.timestamps import format_optional

MIGRATIONS = [
    Migration(
        "ratelimit_rules",
        1,
        "CREATE TABLE rate_limit_rules (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, spec TEXT NOT NULL, "
        "created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    )
]
logger = logging.getLogger("gateway.ratelimit")


@dataclass(frozen=True, slots=True)
class ManagedRule:
    id: str
    settings: RuleSettings
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Row) -> ManagedRule:
        return cls(row["id"], RuleSettings.model_validate_json(row["spec"]), row["created_at"], row["updated_at"])


def describe(settings: RuleSettings, managed: ManagedRule | None = None) -> dict[str, Any]:
    spec = settings.model_dump(mode="json")
    return {
        "id": managed.id if managed else None,
        "source": "api" if managed else "config",
        **spec,
        "name": rule_name(settings),
        "created_at": format_optional(managed.created_at if managed else None),
        "updated_at": format_optional(managed.updated_at if managed else None),
    }


def parse_rule(body: object, tiers: Sequence[str]) -> RuleSettings:
    """A request body as a rule, or a 400 naming the first field at fault."""
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    try:
        settings = RuleSettings.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else "body"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        raise InvalidField(field, f"{field}: {message}") from None
    unknown = [tier for tier in settings.tiers or () if tier not in tiers]
    if unknown:
        raise InvalidField("tier", f"unknown tier {unknown[0]!r} (declared: {', '.join(tiers)})")
    return settings


class RuleStore:
    """The rate_limit_rules table, and the service it keeps up to date (this replica's copy of the rules)."""

    def __init__(self, database: Database, service: RateLimitService) -> None:
        self.database = database
        self.service = service
        self.rules: list[ManagedRule] = []
        self._loaded: tuple[tuple[str, float], ...] = ()

    async def start(self) -> None:
        """Make the table if need be and load the rules; the service is rebuilt only when they changed."""
        await self.database.migrate(MIGRATIONS)
        rows = await self.database.fetch("SELECT * FROM rate_limit_rules ORDER BY created_at, id")
        loaded = tuple((row["id"], row["updated_at"]) for row in rows)
        if loaded == self._loaded:
            return
        rules = []
        for row in rows:
            try:
                rules.append(ManagedRule.from_row(row))
            except ValidationError as exc:  # written by a gateway whose grammar differed: the others still apply
                logger.warning("managed rate-limit rule %s is not valid here, left out: %s", row["id"], exc)
        self._use(rules)
        self._loaded = loaded

    def _use(self, rules: list[ManagedRule]) -> None:
        self.rules = rules
        self._loaded = tuple((rule.id, rule.updated_at) for rule in rules)
        self.service.use_managed_rules([rule.settings for rule in rules])

    def _check_name(self, settings: RuleSettings, replacing: str | None = None) -> str:
        name = rule_name(settings)
        if name in {rule_name(rule) for rule in self.service.settings.rules}:
            raise Conflict("rule_exists", f"a rule of the configuration is named {name!r}", field="name")
        if any(rule_name(rule.settings) == name and rule.id != replacing for rule in self.rules):
            raise Conflict("rule_exists", f"a managed rule is named {name!r}", field="name")
        return name

    async def create(self, settings: RuleSettings) -> ManagedRule:
        name = self._check_name(settings)
        now = time.time()
        rule = ManagedRule(f"rl_{secrets.token_hex(6)}", settings, now, now)
        try:
            await self.database.execute(
                "INSERT INTO rate_limit_rules (id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
                rule.id,
                name,
                _spec(settings),
                now,
                now,
            )
        except UniqueViolation:  # another replica took the name since the last reload
            raise Conflict("rule_exists", f"a managed rule is named {name!r}", field="name") from None
        self._use([*self.rules, rule])
        return rule

    async def replace(self, rule_id: str, settings: RuleSettings) -> ManagedRule | None:
        name = self._check_name(settings, replacing=rule_id)
        row = await self.database.fetchrow("SELECT created_at FROM rate_limit_rules WHERE id = $1", rule_id)
        if row is None:
            return None
        rule = ManagedRule(rule_id, settings, row["created_at"], max(time.time(), row["created_at"]))
        try:
            await self.database.execute(
                "UPDATE rate_limit_rules SET name = $2, spec = $3, updated_at = $4 WHERE id = $1",
                rule_id,
                name,
                _spec(settings),
                rule.updated_at,
            )
        except UniqueViolation:
            raise Conflict("rule_exists", f"a managed rule is named {name!r}", field="name") from None
        others = [existing for existing in self.rules if existing.id != rule_id]
        self._use(sorted([*others, rule], key=lambda managed: (managed.created_at, managed.id)))
        return rule

    async def delete(self, rule_id: str) -> bool:
        count = await self.database.execute("DELETE FROM rate_limit_rules WHERE id = $1", rule_id)
        self._use([rule for rule in self.rules if rule.id != rule_id])
        return count == 1


def _spec(settings: RuleSettings) -> str:
    return json.dumps(settings.model_dump(mode="json", exclude_defaults=True), separators=(",", ":"))
