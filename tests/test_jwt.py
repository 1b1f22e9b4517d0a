"""Identity from a JWT, with real tokens signed by real keys: HS256 with a secret, RS256 from a JWKS file, ES256
from a JWKS URL served over HTTP. A token that does not verify is a 401, never an anonymous caller."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.exceptions import ConfigError
from gateway.settings import parse_settings
from tests.notify.peers import serve_asgi

SECRET = "a-shared-secret-of-32-bytes-long!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**entry, "kid": kid, "alg": alg, "use": "sig"}


def token(key: Any, alg: str = "HS256", kid: str | None = None, **claims: Any) -> str:
    body = {"sub": "alice", "tier": "premium", "exp": time.time() + 300, **claims}
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid} if kid else None
    )


def config(jwt_yaml: str) -> str:
    return f"""
server: {{access_log: false}}
engine: {{kind: embedded, database: {{url: "sqlite:///:memory:"}}}}
identities:
  api_keys: [{{key: admin-key-0001, user_id: root, tier: premium, admin: true}}]
  jwt: {jwt_yaml}
ratelimit:
  tiers: [anonymous, free, premium]
"""


async def who(app_config: str, authorization: str | None, **headers: str) -> httpx.Response:
    app = create_app(parse_settings(app_config, environ={}))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            sent = {**headers, **({"Authorization": authorization} if authorization else {})}
            return await client.get("/api/v1/rate-limit/status", headers=sent)
    finally:
        await app.shutdown()


HS = config(f'{{secret: "{SECRET}", audience: gw, issuer: https://issuer.test}}')


async def test_a_valid_hs256_token_names_the_user_and_tier() -> None:
    answer = await who(HS, f"Bearer {token(SECRET, aud='gw', iss='https://issuer.test')}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == "alice" and answer.json()["tier"] == "premium"
    unknown_tier = await who(HS, f"Bearer {token(SECRET, aud='gw', iss='https://issuer.test', tier='gold')}")
    assert unknown_tier.json()["tier"] == "free"  # the default tier, never an undeclared one


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # Made when the test runs, not when it is collected: a long session would expire them first.
        (lambda: token(SECRET, aud="gw", iss="https://issuer.test", exp=time.time() - 120), "expired"),
        (lambda: token(SECRET, aud="gw", iss="https://issuer.test", nbf=time.time() + 600), "nbf"),
        (lambda: token(SECRET, aud="other", iss="https://issuer.test"), "audience"),
        (lambda: token(SECRET, aud="gw", iss="https://evil.test"), "issuer"),
        (lambda: token("another-secret-of-32-bytes-long!!", aud="gw", iss="https://issuer.test"), "signature"),
        (lambda: token(SECRET, aud="gw", iss="https://issuer.test", exp=None), "'exp'"),
        (lambda: token(SECRET, aud="gw", iss="https://issuer.test", sub=None), "'sub'"),
        (lambda: jwt.encode({"sub": "alice", "exp": time.time() + 60}, "", algorithm="none"), "algorithm"),
        (lambda: "not-a-jwt", "not a JWT"),
    ],
    ids=["expired", "nbf", "audience", "issuer", "signature", "no-exp", "no-sub", "alg-none", "not-a-jwt"],
)
async def test_a_token_that_does_not_verify_is_refused_never_anonymous(make: Callable[[], str], reason: str) -> None:
    answer = await who(HS, f"Bearer {make()}")
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_token" and reason in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_no_token_is_anonymous_and_an_api_key_comes_first() -> None:
    assert (await who(HS, None)).json()["tier"] == "anonymous"
    both = await who(HS, "Bearer garbage", **{"X-API-Key": "admin-key-0001"})
    assert both.status_code == 200 and both.json()["user_id"] == "root"
    assert (await who(HS, "Basic YWxpY2U6cHc=")).json()["tier"] == "anonymous"  # not a bearer: not ours


async def test_rs256_from_a_jwks_file_and_no_algorithm_confusion(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "k1", "RS256")]}))
    rs = config(f'{{algorithms: [RS256], jwks_file: "{jwks}"}}')
    good = await who(rs, f"Bearer {token(RSA_KEY, 'RS256', kid='k1')}")
    assert good.status_code == 200 and good.json()["user_id"] == "alice"
    assert (await who(rs, f"Bearer {token(RSA_KEY, 'RS256', kid='k9')}")).status_code == 401
    # An HS256 token for a JWKS-keyed setup (the algorithm-confusion shape): refused for its algorithm alone.
    hs_forged = jwt.encode({"sub": "root", "exp": time.time() + 60}, "x" * 32, algorithm="HS256", headers={"kid": "k1"})
    refused = await who(rs, f"Bearer {hs_forged}")
    assert refused.status_code == 401 and "'HS256' is not accepted" in refused.json()["detail"]


@pytest.fixture
async def jwks_server() -> AsyncIterator[str]:
    async def keys(request: Any) -> JSONResponse:
        return JSONResponse({"keys": [jwk(EC_KEY, "ec1", "ES256")]})

    async with serve_asgi(Starlette(routes=[Route("/jwks.json", keys)])) as url:
        yield f"{url}/jwks.json"


async def test_es256_from_a_jwks_url_fetched_in_the_background(jwks_server: str) -> None:
    es = config(f'{{algorithms: [ES256], jwks_url: "{jwks_server}"}}')
    app = create_app(parse_settings(es, environ={}))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            bearer = {"Authorization": f"Bearer {token(EC_KEY, 'ES256', kid='ec1', tier='free')}"}
            for _ in range(50):  # the first fetch runs beside the first requests
                answer = await client.get("/api/v1/rate-limit/status", headers=bearer)
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert answer.status_code == 200 and answer.json() == {"user_id": "alice", "tier": "free", "limits": []}
    finally:
        await app.shutdown()


@pytest.mark.parametrize(
    ("jwt_yaml", "message"),
    [
        ("{algorithms: [HS256]}", "need a secret"),
        ("{algorithms: [RS256]}", "need jwks_file or jwks_url"),
        ('{algorithms: [RS256], jwks_file: "/nonexistent/jwks.json"}', "not a readable JWKS document"),
        ('{secret: "' + SECRET + '", default_tier: gold}', "unknown tier 'gold'"),
    ],
)
def test_a_jwt_section_that_cannot_work_is_a_config_error(jwt_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(config(jwt_yaml), environ={})
    assert message in "\n".join(caught.value.errors)
