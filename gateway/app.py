"""The ASGI entry point: serves the current Runtime, and swaps in a new one when the configuration changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.config import Settings
from gateway.config.models import EdgeLimits
from gateway.engines import Engines
from gateway.events import EventBus
from gateway.exceptions import ConfigError
from gateway.runtime import Runtime
from gateway.server import PeerConnections
from gateway.settings import load_settings

CONFIG_ENV = "GATEWAY_CONFIG"

logger = logging.getLogger("gateway")
WATCH_INTERVAL_S = 1.0
LAG_PROBE_S = 0.1
#: gateway_event_loop_lag_seconds is the worst lag seen over this window.
LAG_WINDOW_S = 5.0


class Gateway:
    def __init__(self, settings: Settings, *, config_path: str | Path | None = None) -> None:
        self.config_path = Path(config_path) if config_path is not None else None
        #: Process-level: they outlive a configuration reload (see gateway.engines).
        self.events = EventBus()
        self.engines = Engines(settings.engine, self.events)
        #: A shutdown has begun (the server asked the connections to finish): /readyz answers 503 from now on.
        self.draining = False
        self.runtime = Runtime(settings, self.engines, self.events, draining=self.is_draining)
        self._retired: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        #: Open connections per client address, for server.limits.max_connections_per_ip (gateway/server.py).
        self.peer_connections = PeerConnections()

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    # What gateway.server.GatewayHttpProtocol asks of the app (its EdgeOwner protocol).
    @property
    def edge_limits(self) -> EdgeLimits:
        return self.runtime.settings.server.limits

    @property
    def access_log(self) -> bool:
        return self.runtime.settings.server.access_log

    def trusts(self, address: str) -> bool:
        return self.runtime.trusted.is_trusted(address)

    def is_draining(self) -> bool:
        return self.draining

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            logger.info("shutting down: in-flight requests get %gs to finish", self.settings.server.drain_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.runtime.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            await self.startup()
        except Exception as exc:
            logger.exception("start-up failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> None:
        self._lag = asyncio.get_running_loop().create_task(_measure_loop_lag())
        self.events.start()
        await self.engines.start()
        await self.runtime.startup()
        self._subscribe_hooks(self.runtime)
        if self.config_path is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
            if self.settings.server.watch_config:
                self._watcher = loop.create_task(self._watch(self.config_path))

    async def shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._lag is not None:
            self._lag.cancel()
        # Retired runtimes close now (their drain is cut short), before the engines they use.
        retired = list(self._retired)
        for task in retired:
            task.cancel()
        await asyncio.gather(*retired, return_exceptions=True)
        self.events.unsubscribe(self.runtime.notifications.hooks)
        await self.runtime.aclose()
        await self.events.aclose()
        await self.engines.aclose()

    async def reload(self) -> bool:
        """Load the config file again; a valid one is swapped in whole, an invalid one is logged and refused."""
        assert self.config_path is not None
        engines = runtime = None
        try:
            settings = load_settings(self.config_path)
            if settings.engine != self.engines.settings:
                engines = Engines(settings.engine, self.events)
                await engines.start()
            runtime = Runtime(settings, engines or self.engines, self.events, draining=self.is_draining)
            await runtime.startup()
        except Exception as exc:
            if runtime is not None:  # it may have started background work before it failed
                await runtime.aclose()
            metrics.CONFIG_RELOADS.labels("refused").inc()
            if isinstance(exc, ConfigError):
                logger.error("configuration refused, the previous one keeps serving:\n%s", exc)
            else:
                logger.exception("configuration could not start, the previous one keeps serving")
            if engines is not None:
                await engines.aclose()
            return False
        old, self.runtime = self.runtime, runtime
        self._subscribe_hooks(runtime, replacing=old)
        # Requests that started on the old runtime keep its pools until they finish; then it closes, and only
        # then the engines it used (its last flushes still need them).
        closers: list[Callable[[], Awaitable[None]]] = [old.aclose]
        if engines is not None:
            old_engines, self.engines = self.engines, engines
            closers.append(old_engines.aclose)
        self._retire_later(closers, old.settings.server.drain_timeout)
        metrics.CONFIG_RELOADS.labels("applied").inc()
        logger.info("configuration reloaded from %s", self.config_path)
        return True

    def _subscribe_hooks(self, runtime: Runtime, *, replacing: Runtime | None = None) -> None:
        """One hook pipeline listens at a time: the old configuration's would double every notification while its
        runtime drains."""
        if replacing is not None:
            self.events.unsubscribe(replacing.notifications.hooks)
        if runtime.notifications.hooks:
            self.events.subscribe(runtime.notifications.hooks)

    def _retire_later(self, closers: list[Callable[[], Awaitable[None]]], delay: float) -> None:
        async def retire() -> None:
            try:
                await asyncio.sleep(delay)
            finally:
                for close in closers:
                    await close()

        task = asyncio.get_running_loop().create_task(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _watch(self, path: Path) -> None:
        last = _mtime(path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            current = _mtime(path)
            if current != last:
                last = current
                await self.reload()


async def _measure_loop_lag() -> None:
    """How late a timer fires: the event loop's backlog, the first sign of a gateway at capacity."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    windows = 0
    while True:
        started = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        worst = max(worst, loop.time() - started - LAG_PROBE_S)
        windows += 1
        if windows * LAG_PROBE_S >= LAG_WINDOW_S:
            metrics.EVENT_LOOP_LAG.set(worst)
            worst, windows = 0.0, 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def create_app(settings: Settings | None = None, *, config_path: str | Path | None = None) -> Gateway:
    """The gateway as an ASGI app, from settings or a YAML file."""
    if settings is None:
        settings = load_settings(config_path) if config_path is not None else Settings()
    return Gateway(settings, config_path=config_path)


def app_from_environment() -> Gateway:
    """Factory for uvicorn workers: the config path comes through GATEWAY_CONFIG."""
    path = os.environ.get(CONFIG_ENV)
    return create_app(config_path=path) if path else create_app()
