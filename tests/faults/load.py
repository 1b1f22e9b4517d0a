"""Steady load for the fault tests: a few keep-alive clients sending requests back to back, every answer kept
with its time, status, latency and whether it carried rate-limit headers (a decision was made)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Sample:
    at: float
    path: str
    status: int
    latency: float
    #: The answer carried RateLimit headers: the engine decided (not failed open or closed).
    decided: bool


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def between(self, start: float, end: float, path: str | None = None) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end and (path is None or s.path == path)]


@contextlib.asynccontextmanager
async def steady_load(base: str, paths: Sequence[str], *, clients: int = 4) -> AsyncIterator[Load]:
    """`clients` loops per path, each one request at a time, until the block ends."""
    load = Load()
    stop = asyncio.Event()

    async def loop(path: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    load.errors.append(f"{path}: {type(exc).__name__}")
                    await asyncio.sleep(0.01)
                    continue
                load.samples.append(
                    Sample(
                        started, path, response.status_code, time.monotonic() - started, "ratelimit" in response.headers
                    )
                )

    tasks = [asyncio.ensure_future(loop(path)) for path in paths for _ in range(clients)]
    try:
        yield load
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
