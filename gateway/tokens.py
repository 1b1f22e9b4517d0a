"""Identity from a JWT (`identities.jwt`): the signature, exp (required), nbf, aud and iss verified with PyJWT,
then the user and tier read from the configured claims.

Keys: the shared secret of HS* tokens, and for RS*/ES*/PS* a JWKS document, from a file or from a URL fetched at
start and refreshed in the background (a failed refresh keeps the keys last fetched). A token names its algorithm;
only the configured ones are accepted, and an HS* token is never checked against a public key (no algorithm
confusion). Verified tokens are remembered until they expire, so a busy caller's token is verified once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx
import jwt

from gateway.config.ratelimit import JwtSettings

logger = logging.getLogger("gateway.identity")
#: Verified tokens remembered (each until its exp).
CACHE_SIZE = 10_000
#: How long a JWKS fetch may take.
FETCH_TIMEOUT_S = 5.0


class InvalidToken(Exception):
    """The bearer token does not verify; the message says why (it goes to the client: no key material)."""


class TokenVerifier:
    def __init__(self, settings: JwtSettings, tiers: frozenset[str]) -> None:
        self.settings = settings
        self.tiers = tiers
        self._algorithms = frozenset(settings.algorithms)
        self._keys: dict[str, Any] = {}
        self._cache: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        if settings.jwks_file is not None:
            self._keys = parse_jwks(Path(settings.jwks_file).read_text())

    @property
    def fetches_keys(self) -> bool:
        return self.settings.jwks_url is not None

    def verify(self, token: bytes) -> tuple[str, str]:
        """(user id, tier) of a valid token; InvalidToken otherwise."""
        now = time.time()
        known = self._cache.get(token)
        if known is not None and known[2] + self.settings.leeway > now:
            self._cache.move_to_end(token)
            return known[0], known[1]
        claims = self._decode(token.decode("latin-1"))
        user = claims.get(self.settings.user_claim)
        if not isinstance(user, str) or not user or len(user) > 200 or not user.isprintable():
            raise InvalidToken(f"the token's {self.settings.user_claim!r} claim is not a user id")
        tier = claims.get(self.settings.tier_claim)
        tier = tier if isinstance(tier, str) and tier in self.tiers else self.settings.default_tier
        self._cache[token] = (user, tier, float(claims["exp"]))
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return user, tier

    def _decode(self, token: str) -> dict[str, Any]:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise InvalidToken(f"the token's algorithm {algorithm!r} is not accepted")
        if str(algorithm).startswith("HS"):
            key: Any = settings.secret
        else:
            kid = header.get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None and kid is None and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
            if key is None:
                raise InvalidToken("the token's key (kid) is not among the configured keys")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp"], "verify_aud": settings.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token's signature does not verify") from None
        return claims

    async def refresh_forever(self) -> None:
        """Fetch the JWKS URL now and every `jwks_refresh`; a failure keeps the keys fetched before."""
        assert self.settings.jwks_url is not None
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as client:
            while True:
                try:
                    response = await client.get(self.settings.jwks_url)
                    response.raise_for_status()
                    self._keys = parse_jwks(response.text)
                except (httpx.HTTPError, ValueError) as exc:
                    logger.warning("JWKS from %s not refreshed: %s", self.settings.jwks_url, exc)
                await asyncio.sleep(self.settings.jwks_refresh)


def parse_jwks(text: str) -> dict[str, Any]:
    """kid → public key of a JWKS document; ValueError when it is not one."""
    try:
        document = json.loads(text)
        keys = document["keys"]
        parsed = {}
        for index, entry in enumerate(keys):
            key = jwt.PyJWK.from_dict(entry)
            parsed[str(entry.get("kid", index))] = key.key
    except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ValueError(f"not a JWKS document: {exc}") from None
    return parsed
