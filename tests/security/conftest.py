"""Pieces of the security tests: an upstream that records the exact bytes it receives, and raw-socket clients.

The recording upstream parses what arrives with h11 (a parser that is not the gateway's), so a request that
the gateway turned into two, or framed twice, shows up as two requests or as a protocol error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import h11

from gateway.config import Settings
from gateway.settings import parse_settings
from tests.proxy_fixtures import gateway_yaml, serve_gateway, settings_for

PREFIX_ROUTES = """
- name: app
  match: {path_prefix: /app}
  upstream: up
  strip_prefix: true
- name: pub
  match: {path_prefix: /pub}
  upstream: up
  rewrite_prefix: /v2
- name: all
  match: {path_prefix: /}
  upstream: up
"""


@dataclass
class Received:
    request: h11.Request
    body: bytes

    @property
    def target(self) -> bytes:
        return self.request.target

    def headers(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.request.headers if key == name.lower()]

    @property
    def names(self) -> list[bytes]:
        return [key for key, _ in self.request.headers]


@dataclass
class RecordingUpstream:
    url: str = ""
    #: Every byte received, per connection, in order.
    raw: list[bytearray] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    #: What h11 could not parse: a framing the gateway got wrong.
    errors: list[str] = field(default_factory=list)

    @property
    def bytes_received(self) -> bytes:
        return b"".join(bytes(chunk) for chunk in self.raw)

    def clear(self) -> None:
        self.raw.clear()
        self.requests.clear()
        self.errors.clear()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = bytearray()
        self.raw.append(raw)
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                raw += data
                connection.receive_data(data)
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                        break
                    if isinstance(event, h11.Request):
                        request, body = event, bytearray()
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        assert request is not None
                        self.requests.append(Received(request, bytes(body)))
                        answer = b"ok"
                        writer.write(
                            connection.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                            + connection.send(h11.Data(data=answer))
                            + connection.send(h11.EndOfMessage())
                        )
                        await writer.drain()
                        connection.start_next_cycle()
                if not data:
                    break
        except h11.RemoteProtocolError as exc:
            self.errors.append(str(exc))
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def gateway_before(
    routes: str = PREFIX_ROUTES, *, server: str = "", extra: str = ""
) -> AsyncIterator[tuple[str, RecordingUpstream]]:
    """A recording upstream, and the gateway (real uvicorn, real protocol) in front of it; `extra` is YAML for
    more top-level sections."""
    async with recording_upstream() as upstream:
        text = gateway_yaml(upstream.url, routes, server=server) + textwrap.dedent(extra)
        async with serve_gateway(parse_settings(text, environ={})) as base:
            yield base, upstream


async def send_raw(base: str, data: bytes, *, idle: float = 0.5, timeout: float = 5.0) -> bytes:
    """Write `data` on a new connection; read one whole response (parsed with h11), or until the server closes
    the connection or sends nothing for `idle` seconds."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    received = bytearray()
    client = h11.Connection(h11.CLIENT)
    parser: h11.Connection | None = client
    # h11 reads a response only for a request it sent: tell it the method, so a HEAD response has no body.
    method = data.split(b" ", 1)[0].decode("latin-1") or "GET"
    try:
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    except h11.LocalProtocolError:  # pragma: no cover - not a method h11 knows
        parser = None
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), idle if received else timeout)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
                if parser is not None and _complete(parser, chunk):
                    break
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


def _complete(parser: h11.Connection, chunk: bytes) -> bool:
    """Whether the response is complete, as far as h11 can tell (a broken one: wait for the close instead)."""
    try:
        parser.receive_data(chunk)
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.EndOfMessage):
                return True
            if isinstance(event, h11.ConnectionClosed):
                return True
    except h11.RemoteProtocolError:
        return False


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def json_of(response: bytes) -> object:
    import json

    return json.loads(response.partition(b"\r\n\r\n")[2])


@dataclass
class ThreadedGateway:
    """The gateway and a recording upstream on an event loop of their own, for synchronous (hypothesis) tests."""

    base: str
    upstream: RecordingUpstream
    port: int

    def exchange(self, data: bytes, timeout: float = 5.0) -> bytes:
        """One request on a new connection with `Connection: close` semantics: read until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


@contextlib.contextmanager
def threaded_gateway(settings_yaml_routes: str = PREFIX_ROUTES, server: str = "") -> Iterator[ThreadedGateway]:
    loop = asyncio.new_event_loop()
    ready: dict[str, object] = {}
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        async with recording_upstream() as upstream:
            settings: Settings = settings_for(upstream.url, settings_yaml_routes, server=server)
            async with serve_gateway(settings) as base:
                ready.update(base=base, upstream=upstream)
                started.set()
                await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(20):
        raise RuntimeError("the threaded gateway did not start")
    base = str(ready["base"])
    upstream = ready["upstream"]
    assert isinstance(upstream, RecordingUpstream)
    try:
        yield ThreadedGateway(base, upstream, int(base.rsplit(":", 1)[1]))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
