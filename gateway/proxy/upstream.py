"""An upstream: its targets, round-robin with passive health, and one pooled keep-alive client."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from gateway.config.models import UpstreamSettings
from gateway.config.routes import Timeouts
from gateway.proxy.http1 import ConnectionPool


@dataclass
class Target:
    url: str
    netloc: str
    #: Path prefix of the target URL ("" for http://host:port).
    base_path: str
    pool: ConnectionPool
    down_until: float = field(default=0.0)


class Upstream:
    """HTTP goes through one keep-alive pool per target (gateway.proxy.http1, chosen by measurement: see
    bench/README.md); WebSocket upgrades go through an aiohttp session, created on the first upgrade.
    """

    def __init__(self, name: str, settings: UpstreamSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.settings = settings
        self.targets = [
            Target(
                url=url,
                netloc=urlsplit(url).netloc,
                base_path=urlsplit(url).path.rstrip("/"),
                pool=ConnectionPool(
                    url, max_connections=settings.max_connections, connect_timeout=settings.timeouts.connect or None
                ),
            )
            for url in settings.targets
        ]
        self._clock = clock
        self._next = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """For WebSocket upgrades; created on first use so that it binds to the worker's event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections, limit_per_host=0, ttl_dns_cache=60, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=client_timeout(self.settings.timeouts),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    def pick(self) -> Target:
        """The next healthy target in round-robin order; if none is healthy, the next one anyway."""
        count = len(self.targets)
        now = self._clock()
        for offset in range(count):
            target = self.targets[(self._next + offset) % count]
            if target.down_until <= now:
                self._next = (self._next + offset + 1) % count
                return target
        target = self.targets[self._next % count]
        self._next = (self._next + 1) % count
        return target

    def mark_failed(self, target: Target) -> None:
        target.down_until = self._clock() + self.settings.fail_timeout

    async def aclose(self) -> None:
        for target in self.targets:
            target.pool.close_idle()
        if self._session is not None:
            await self._session.close()
            self._session = None


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect or None, sock_read=timeouts.read or None)
