"""What a creation request may contain. Each rule names the field it refuses; nothing is stored on a refusal."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from gateway.exceptions import InvalidField
from gateway.timestamps import parse_time

MAX_URL_LENGTH = 2048
ALIAS = re.compile(r"[A-Za-z0-9_-]{3,64}")
#: Words no alias may take (case-insensitively), besides the first path segment of every route and own path:
#: the gateway's own paths, and names a future own path or a phishing page would like to have.
RESERVED_WORDS = frozenset(
    {
        "api", "admin", "static", "assets", "healthz", "readyz", "metrics", "health", "ready", "status",
        "docs", "login", "logout", "signin", "signup", "auth", "oauth", "account", "settings", "dashboard",
        "public", "internal", "favicon", "robots", "sitemap", "well-known", "www",
    }
)  # fmt: skip
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_FIELDS = frozenset({"long_url", "custom_alias", "expires_at", "max_visits", "tags"})
#: A tag: lower-case letters, digits and dashes (no LIKE wildcard), at most MAX_TAGS a link.
TAG = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_TAGS = 10
_SAFE = "!#$%&'()*+,-./:;=?@[]~_"
_MAX_VISITS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class CreateRequest:
    long_url: str
    custom_alias: str | None
    expires_at: float | None
    max_visits: int | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UrlRules:
    """What long URLs and aliases are checked against, built once per configuration."""

    own_host: str
    own_port: int
    blocked_domains: tuple[str, ...]
    reserved: frozenset[str]


def reserved_segments(paths: Iterable[str], extra: Iterable[str] = ()) -> frozenset[str]:
    """RESERVED_WORDS, `extra`, and the first segment of each path or prefix, lower-cased."""
    segments = {path.strip("/").split("/", 1)[0].lower() for path in paths}
    return frozenset(RESERVED_WORDS | {word.lower() for word in extra} | {s for s in segments if s and s != "*"})


def parse_create(body: object, rules: UrlRules, now: float) -> CreateRequest:
    if not isinstance(body, Mapping):
        raise InvalidField("body", "the body must be a JSON object")
    for name in body:
        if name not in _FIELDS:
            raise InvalidField(str(name), f"unknown field (expected {', '.join(sorted(_FIELDS))})")
    if "long_url" not in body:
        raise InvalidField("long_url", "long_url is required")
    long_url = check_long_url(body["long_url"], rules)
    alias = body.get("custom_alias")
    if alias is not None:
        alias = check_alias(alias, rules.reserved)
    expires_at = body.get("expires_at")
    if expires_at is not None:
        expires_at = parse_expiry(expires_at, now)
    max_visits = body.get("max_visits")
    if max_visits is not None and (
        not isinstance(max_visits, int) or isinstance(max_visits, bool) or not 1 <= max_visits <= _MAX_VISITS
    ):
        raise InvalidField("max_visits", "max_visits must be a positive integer")
    return CreateRequest(long_url, alias, expires_at, max_visits, check_tags(body.get("tags", [])))


def check_tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidField("tags", f"tags must be a list of at most {MAX_TAGS} tags")
    for tag in value:
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise InvalidField("tags", "a tag is 1 to 32 lower-case letters, digits and dashes, starting with one")
    return tuple(dict.fromkeys(value))


def check_long_url(value: object, rules: UrlRules) -> str:
    """The URL, normalised (IDNA host, non-ASCII percent-encoded) so that it is a valid Location header."""
    if not isinstance(value, str) or not value:
        raise InvalidField("long_url", "long_url must be a non-empty string")
    if len(value) > MAX_URL_LENGTH:
        raise InvalidField("long_url", f"long_url is longer than {MAX_URL_LENGTH} characters")
    if any(char < " " or char == "\x7f" for char in value):
        raise InvalidField("long_url", "long_url must not contain control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidField("long_url", f"long_url is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidField("long_url", "long_url must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidField("long_url", "long_url must not carry credentials (user:password@)")
    host = _valid_host(parts.hostname)
    if _is_own(host, port or _DEFAULT_PORTS[scheme], rules):
        raise InvalidField("long_url", "long_url points at this shortener, which would redirect to itself")
    for domain in rules.blocked_domains:
        if host == domain or host.endswith("." + domain):
            raise InvalidField("long_url", f"links to {domain} are not accepted here")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path, query, fragment = (quote(part, safe=_SAFE) for part in (parts.path, parts.query, parts.fragment))
    normalised = urlunsplit((scheme, netloc, path, query, fragment))
    if len(normalised) > MAX_URL_LENGTH:
        raise InvalidField("long_url", f"long_url is longer than {MAX_URL_LENGTH} characters once encoded")
    return normalised


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _valid_host(hostname: str | None) -> str:
    if not hostname:
        raise InvalidField("long_url", "long_url has no host")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        host = hostname.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidField("long_url", f"long_url has an invalid host: {hostname!r}") from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise InvalidField("long_url", f"long_url has an invalid host: {hostname!r}")
    return host


def _is_own(host: str, port: int, rules: UrlRules) -> bool:
    # http and https on their default ports are one site: one usually redirects to the other.
    if host != rules.own_host:
        return False
    return port == rules.own_port or (port in (80, 443) and rules.own_port in (80, 443))


def check_alias(value: object, reserved: frozenset[str]) -> str:
    if not isinstance(value, str) or not ALIAS.fullmatch(value):
        raise InvalidField("custom_alias", "custom_alias must be 3 to 64 characters of A-Z, a-z, 0-9, _ and -")
    if value.lower() in reserved:
        raise InvalidField("custom_alias", f"'{value}' is reserved")
    return value


def parse_expiry(value: object, now: float) -> float:
    expires_at = parse_time("expires_at", value)
    if expires_at <= now:
        raise InvalidField("expires_at", "expires_at must be in the future")
    return expires_at
