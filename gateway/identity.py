"""Who a request is: an API key from config, a verified JWT, a user header from a trusted auth layer, or the
client address.

An API key that is present but unknown gets 401: a typo must not silently fall back to anonymous limits.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal, NamedTuple, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.client_ip import TrustedProxies
from gateway.config.ratelimit import ApiKey, IdentitySettings
from gateway.responses import send_error
from gateway.tokens import InvalidToken, TokenVerifier

IdentityKind = Literal["api_key", "jwt", "user_header", "ip"]


class Identity(NamedTuple):
    """Who a request is (a NamedTuple: one is built per request)."""

    user_id: str
    tier: str
    kind: IdentityKind
    admin: bool = False
    #: A managed API key's scopes (gateway/apikeys.py); None: every scope (a key from the YAML, any other caller).
    scopes: frozenset[str] | None = None

    @property
    def key(self) -> str:
        """The rate-limit key: users share counters however they were identified; addresses have their own."""
        return f"ip:{self.user_id}" if self.kind == "ip" else f"user:{self.user_id}"


class InvalidApiKey(Exception):
    pass


class ManagedKey(Protocol):
    @property
    def user_id(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def scopes(self) -> frozenset[str]: ...


class ManagedKeys(Protocol):
    """The keys managed through the admin API (gateway/apikeys.py KeyRing): digest → key, reloaded in place."""

    @property
    def active(self) -> Mapping[bytes, ManagedKey]: ...


class StoredTiers(Protocol):
    """Tiers set per user through the admin API (gateway/user_tiers.py TierStore): user id → tier, reloaded."""

    @property
    def tiers(self) -> Mapping[str, str]: ...


BEARER = b"bearer "


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class IdentityResolver:
    def __init__(self, settings: IdentitySettings, tiers: tuple[str, ...], trusted: TrustedProxies) -> None:
        self.settings = settings
        self.tiers = frozenset(tiers)
        self.trusted = trusted
        self._api_key_header = settings.api_key_header.lower().encode()
        # Looked up by digest, so the comparison does not leak key prefixes through timing.
        self._keys: dict[bytes, ApiKey] = {_digest(entry.key): entry for entry in settings.api_keys}
        user = settings.user_header
        self._user_header = user.name.lower().encode() if user else None
        self._tier_header = user.tier_header.lower().encode() if user else None
        #: The headers a client identifies itself with; they stop at the gateway unless a route forwards them.
        self.client_headers = frozenset(
            name for name in (self._api_key_header, self._user_header, self._tier_header) if name is not None
        )
        #: The keys managed through /api/v1/keys (set by the runtime when there is a database).
        self.keyring: ManagedKeys | None = None
        #: Tiers stored per user (/api/v1/users/{id}/tier): they override a credential's tier.
        self.user_tiers: StoredTiers | None = None
        #: Verifies `Authorization: Bearer` JWTs, when identities.jwt is configured.
        self.tokens = TokenVerifier(settings.jwt, self.tiers) if settings.jwt is not None else None
        own = settings.upstream_headers
        self._own = (
            (own.user_id.lower().encode(), own.tier.lower().encode(), own.kind.lower().encode()) if own else None
        )
        #: The headers the gateway sets upstream itself; a client's copies of them are always dropped.
        self.upstream_header_names = frozenset(self._own or ())

    def upstream_headers(self, identity: Identity) -> list[tuple[bytes, bytes]]:
        """Who the gateway established the caller is, for the upstream."""
        if self._own is None:
            return []
        user_id, tier, kind = self._own
        return [(user_id, identity.user_id.encode()), (tier, identity.tier.encode()), (kind, identity.kind.encode())]

    def resolve(self, scope: Scope) -> Identity:
        identity = self._resolve(scope)
        # Most deployments store no tier: their requests skip the lookup.
        if identity.kind != "ip" and self.user_tiers is not None and self.user_tiers.tiers:
            tier = self._stored_tier(identity.user_id)
            if tier is not None and tier != identity.tier:
                return identity._replace(tier=tier)
        return identity

    def _stored_tier(self, user_id: str) -> str | None:
        """The tier stored for the user (gateway/user_tiers.py), if it is a declared one."""
        stored = self.user_tiers.tiers.get(user_id) if self.user_tiers is not None else None
        return stored if stored in self.tiers else None

    def _resolve(self, scope: Scope) -> Identity:
        api_key = user_id = tier = bearer = None
        for name, value in scope["headers"]:
            if name == self._api_key_header:
                api_key = value
            elif name == b"authorization" and self.tokens is not None and value[:7].lower() == BEARER:
                bearer = value[7:].strip()
            elif name == self._user_header:
                user_id = value.decode("latin-1").strip()
            elif name == self._tier_header:
                tier = value.decode("latin-1").strip()
        if api_key is not None:
            key_digest = hashlib.sha256(api_key).digest()
            entry = self._keys.get(key_digest)
            if entry is not None and hmac.compare_digest(entry.key.encode(), api_key):
                return Identity(entry.user_id, entry.tier, "api_key", entry.admin)
            stored = self.keyring.active.get(key_digest) if self.keyring is not None else None
            if stored is None:
                raise InvalidApiKey()
            return Identity(stored.user_id, stored.tier, "api_key", "admin" in stored.scopes, stored.scopes)
        if bearer is not None and self.tokens is not None:
            token_user, token_tier = self.tokens.verify(bearer)
            return Identity(token_user, token_tier, "jwt")
        client_ip: str = scope.get("gateway.client_ip") or (scope["client"][0] if scope.get("client") else "")
        peer = scope["client"][0] if scope.get("client") else ""
        user = self.settings.user_header
        if user_id and user is not None and self.trusted.is_trusted(peer):
            return Identity(user_id, tier if tier in self.tiers else user.default_tier, "user_header")
        return Identity(client_ip, self.settings.anonymous_tier, "ip")

    def tier_of(self, user_id: str) -> str | None:
        """The user's stored tier, else the tier of their first key in the YAML; None if neither knows them."""
        stored = self._stored_tier(user_id)
        if stored is not None:
            return stored
        for entry in self.settings.api_keys:
            if entry.user_id == user_id:
                return entry.tier
        return None


class IdentityMiddleware:
    def __init__(self, app: ASGIApp, *, resolver: IdentityResolver) -> None:
        self.app = app
        self.resolver = resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # pragma: no cover
            await self.app(scope, receive, send)
            return
        try:
            scope["gateway.identity"] = self.resolver.resolve(scope)
        except InvalidToken as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "invalid token"})
                return
            challenge = [(b"www-authenticate", b'Bearer error="invalid_token"')]
            await send_error(send, 401, "invalid_token", str(exc), scope.get("gateway.request_id"), challenge)
            return
        except InvalidApiKey:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "invalid API key"})
                return
            header = self.resolver.settings.api_key_header
            await send_error(
                send, 401, "invalid_api_key", f"the {header} header names no known key", scope.get("gateway.request_id")
            )
            return
        await self.app(scope, receive, send)
