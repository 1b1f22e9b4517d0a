"""Config section for short links, and the checks that keep them from colliding with routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.config.base import Model
from gateway.config.units import Duration

if TYPE_CHECKING:
    from gateway.config.routes import RouteSettings

RedirectStatus = Literal[301, 302, 307, 308]
#: The Feistel key when none is configured. Codes stay unique with it, but anyone who knows it can predict
#: the sequence: production sets `code_secret` (e.g. from ${SHORTENER_SECRET}).
DEFAULT_CODE_SECRET = "gateway-shortener-default-secret"
DEFAULT_CACHE_MAX_AGE_S = 300.0
DEFAULT_SHARED_CACHE_TTL_S = 86_400.0
DEFAULT_NEGATIVE_TTL_S = 30.0


class KeyPoolSettings(Model):
    #: The filler tops the pool up whenever it holds fewer codes than this; 0 turns the pool off.
    min: int = Field(1000, ge=0)
    #: Sequence values reserved from the database per refill round trip.
    batch: int = Field(1000, ge=1, le=100_000)


class LocalCacheSettings(Model):
    #: Links held in this process's LRU.
    size: int = Field(10_000, ge=0)
    #: How long a link stays in the LRU; bounds staleness when another replica's invalidation is missed.
    ttl: Duration = 60.0


class ShortenerSettings(Model):
    #: true, false, or "auto": on unless a route without a host catches every path (the short links could
    #: never be reached); with `true`, such a route is a configuration error instead.
    enabled: bool | Literal["auto"] = "auto"
    redirect_status: RedirectStatus = 301
    #: max-age of the `Cache-Control: private` header on 301/308 redirects (302/307 carry none).
    cache_max_age: Duration = DEFAULT_CACHE_MAX_AGE_S
    #: Key of the permutation that turns the counter into codes; changing it changes future codes only.
    code_secret: str = Field(DEFAULT_CODE_SECRET, min_length=8)
    #: Creating, reading the metadata of and deleting links needs an API key (identity kind api_key).
    require_api_key: bool = False
    #: Long URLs on these domains (and their subdomains) are refused.
    blocked_domains: tuple[str, ...] = ()
    #: Aliases refused on top of the built-in reserved words and every route's first path segment.
    reserved_aliases: tuple[str, ...] = ()
    key_pool: KeyPoolSettings = KeyPoolSettings()
    local_cache: LocalCacheSettings = LocalCacheSettings()
    #: TTL of a link in the shared Redis cache (redis engine only).
    shared_cache_ttl: Duration = DEFAULT_SHARED_CACHE_TTL_S
    #: How long an unknown code is remembered as unknown.
    negative_ttl: Duration = DEFAULT_NEGATIVE_TTL_S
    #: Deadline of each database call made while answering a request.
    database_deadline: Duration = 1.0
    #: An open database breaker lets the next probe through after this long.
    database_cooldown: Duration = 5.0
    #: Links expired longer ago than this are archived (deleted: listed and described no more, their code never
    #: handed out again); null keeps them.
    expired_retention: Duration | None = 30 * 86_400.0
    #: How often each replica looks for links to archive.
    archive_interval: Duration = 3600.0

    @field_validator("blocked_domains", "reserved_aliases")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(item.strip().strip(".").lower() for item in value if item.strip().strip("."))


def catches_every_path(route: RouteSettings) -> bool:
    """A route that would answer any GET /{code} on every host, shadowing all short links."""
    match = route.match
    if match.host is not None or (match.methods is not None and "GET" not in match.methods):
        return False
    if match.path_prefix is not None:
        return match.path_prefix.rstrip("/") == ""
    return match.path is None or match.path == "/*"


def shortener_active(settings: ShortenerSettings, routes: Sequence[RouteSettings]) -> bool:
    if settings.enabled == "auto":
        return not any(catches_every_path(route) for route in routes)
    return settings.enabled


def shortener_errors(
    settings: ShortenerSettings, routes: Sequence[RouteSettings], public_url: str
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-section problems: an explicitly enabled shortener behind a catch-all route, an unusable public_url."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    if settings.enabled is True:
        for index, route in enumerate(routes):
            if catches_every_path(route):
                errors.append(
                    (
                        ("routes", index, "match"),
                        f"route '{route.name}' catches every path, so no short link could be reached; "
                        "narrow its match or set shortener.enabled to false",
                    )
                )
    if shortener_active(settings, routes):
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(
                (("server", "public_url"), f"short links need an http(s) URL with a host, not {public_url!r}")
            )
    return errors
