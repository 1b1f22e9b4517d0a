"""Config sections for who a request is (identities) and how much it may do (tiers and rules)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Model, upper_methods
from gateway.config.units import Duration
from gateway.config.windows import WindowTexts
from gateway.patterns import rule_pattern

FailurePolicy = Literal["open", "closed", "local"]
HeaderStyle = Literal["ietf", "legacy"]
ANONYMOUS_TIER = "anonymous"
_PATTERN = re.compile(r"^(/[^\s]*)$")
logger = logging.getLogger("gateway.config")


class ApiKey(Model):
    key: str = Field(min_length=8)
    user_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    tier: str
    #: May call the admin API (the rate-limit check endpoint, the DLQ, ...).
    admin: bool = False


class UserHeader(Model):
    """Identity set by a trusted auth layer in front of the gateway; believed only from server.trusted_proxies."""

    name: str = "X-User-ID"
    tier_header: str = "X-User-Tier"
    #: The tier of a user whose tier header is missing or names no declared tier.
    default_tier: str = "free"


JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class JwtSettings(Model):
    """Identity from a signed JWT in `Authorization: Bearer <token>`. A token that is present but does not verify
    (signature, exp, nbf, aud, iss) is a 401, never an anonymous caller."""

    #: The algorithms accepted; a token naming another is refused (no "none", no algorithm confusion).
    algorithms: tuple[JwtAlgorithm, ...] = ("HS256",)
    #: The shared secret of HS* tokens.
    secret: str | None = Field(None, min_length=16)
    #: A JWKS document (RS*/ES*/PS* public keys, chosen by the token's `kid`): a file, or a URL fetched at start
    #: and every `jwks_refresh` in the background (the keys last fetched keep working while it is unreachable).
    jwks_file: str | None = None
    jwks_url: str | None = None
    jwks_refresh: Duration = 3600.0
    audience: str | None = None
    issuer: str | None = None
    #: Clock skew allowed on exp and nbf.
    leeway: Duration = 30.0
    #: The claims that name the user and the tier; a tier the config does not declare is `default_tier`.
    user_claim: str = "sub"
    tier_claim: str = "tier"
    default_tier: str = "free"

    @model_validator(mode="after")
    def _keys(self) -> JwtSettings:
        symmetric = any(name.startswith("HS") for name in self.algorithms)
        asymmetric = any(not name.startswith("HS") for name in self.algorithms)
        if symmetric and self.secret is None:
            raise ValueError("HS* algorithms need a secret")
        if asymmetric and self.jwks_file is None and self.jwks_url is None:
            raise ValueError("RS*/ES*/PS* algorithms need jwks_file or jwks_url")
        if self.jwks_file is not None and self.jwks_url is not None:
            raise ValueError("give either jwks_file or jwks_url, not both")
        if self.jwks_file is not None:
            try:
                keys = json.loads(Path(self.jwks_file).read_text())["keys"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"jwks_file {self.jwks_file!r} is not a readable JWKS document: {exc}") from None
            if not isinstance(keys, list) or not keys:
                raise ValueError(f"jwks_file {self.jwks_file!r} holds no keys")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return self


class UpstreamIdentityHeaders(Model):
    """Headers the gateway sets on proxied requests to say who it established the caller is. A client's own
    copies of them are always dropped, so an upstream can trust them."""

    user_id: str = "X-Gateway-User-ID"
    tier: str = "X-Gateway-Tier"
    #: api_key, user_header or ip.
    kind: str = "X-Gateway-Identity"


class IdentitySettings(Model):
    api_key_header: str = "X-API-Key"
    api_keys: tuple[ApiKey, ...] = ()
    user_header: UserHeader | None = UserHeader()
    #: How often each replica reloads the keys managed through /api/v1/keys (a revocation's reach).
    key_refresh: Duration = 5.0
    #: Identity from a JWT (after API keys, before the user header); null: none.
    jwt: JwtSettings | None = None
    #: Tier of requests identified by client address only.
    anonymous_tier: str = ANONYMOUS_TIER
    #: null: set none (the client's copies are still dropped).
    upstream_headers: UpstreamIdentityHeaders | None = UpstreamIdentityHeaders()


class RuleSettings(Model):
    #: Name in metrics and status; defaults to "<tier>:<match>".
    name: str | None = None
    #: The tier(s) the rule applies to; omitted = every tier.
    tier: str | tuple[str, ...] | None = None
    #: A path pattern (gateway/patterns.py): "/api/v1/**" (the path and everything below), an exact path, or "*"
    #: for one segment ("/users/*/orders"). A legacy trailing "/*" is read as "/**", with a warning.
    match: str
    methods: tuple[str, ...] | None = None
    windows: WindowTexts = Field(min_length=1)
    cost: int = Field(1, ge=1)
    on_failure: FailurePolicy = "open"
    #: Count and report, never refuse.
    shadow: bool = False

    @field_validator("match")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not _PATTERN.match(value):
            raise ValueError(f"must be a path starting with '/', got {value!r}")
        _pattern, warning = rule_pattern(value)
        if warning is not None:
            logger.warning("ratelimit.rules: %s", warning)
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return upper_methods(value)

    @property
    def tiers(self) -> tuple[str, ...] | None:
        return (self.tier,) if isinstance(self.tier, str) else self.tier


class RateLimitSettings(Model):
    #: Declared tiers; identities and rules may only name these.
    tiers: tuple[str, ...] = (ANONYMOUS_TIER, "free", "premium", "enterprise")
    rules: tuple[RuleSettings, ...] = ()
    headers: tuple[HeaderStyle, ...] = ("ietf", "legacy")
    #: Gateway replicas sharing the engine: the `local` failure policy divides each limit by this.
    replicas: int = Field(1, ge=1)
    #: A failed-open decision is logged at most once per this interval.
    log_interval: Duration = 60.0
    #: Paths never limited (the gateway's health and metrics paths are always exempt).
    exempt_paths: tuple[str, ...] = ()
    #: How often each replica reloads the rules managed through /api/v1/rate-limit/rules (an edit's reach).
    rule_refresh: Duration = 2.0

    @model_validator(mode="after")
    def _unique_names(self) -> RateLimitSettings:
        names = [rule.name for rule in self.rules if rule.name]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self
