"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import metrics

ReadinessCheck = Callable[[], Awaitable[None]]
READINESS_TIMEOUT_S = 1.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readyz(
    checks: Mapping[str, ReadinessCheck], draining: Callable[[], bool] = lambda: False
) -> Callable[[Request], Awaitable[Response]]:
    """Ready when every configured engine answers within a second; the body names the ones that do not. Never
    ready once a shutdown has begun, so a load balancer still asking on a kept-alive connection stops routing."""

    async def endpoint(request: Request) -> Response:
        if draining():
            return JSONResponse({"status": "draining", "engines": {}}, 503)
        results = await asyncio.gather(*(_run(check) for check in checks.values()))
        engines = dict(zip(checks, results, strict=True))
        ready = all(result == "ok" for result in results)
        return JSONResponse({"status": "ready" if ready else "unavailable", "engines": engines}, 200 if ready else 503)

    return endpoint


async def _run(check: ReadinessCheck) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await check()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return "ok"


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
