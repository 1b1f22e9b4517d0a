"""A lean HTTP/1.1 client for the proxy's hot path: keep-alive pools over asyncio Protocols, parsed by llhttp.

Chosen by measurement (bench/README.md): a general-purpose client (aiohttp, httpx) spends most of a proxied
request building objects the proxy throws away. This one passes raw header bytes and raw body bytes (no
decompression) and keeps memory bounded in both directions with transport flow control.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]

#: Pause reading from the upstream while this many body bytes wait for a slow client.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: An upstream response head (status line and headers, 1xx heads included) larger than this is a 502.
MAX_RESPONSE_HEAD = 64 * 1024


class ConnectError(OSError):
    """The connection could not be opened (refused, unreachable, timed out): safe to retry elsewhere."""


class ProtocolError(Exception):
    """The upstream broke the exchange (closed early, sent invalid HTTP)."""


class RequestRefused(ValueError):
    """The request cannot be written as one unambiguous HTTP/1.1 message; nothing was sent."""


class StaleConnection(ProtocolError):
    """A kept-alive connection broke before any byte of the response, and the request had no body.

    It may just have been closed by the upstream while idle, or the upstream may have received the request and
    died on it: only an idempotent request may be sent again (RFC 9110 §9.2.2), and the caller decides.
    """


class _Connection(asyncio.Protocol):
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self._response: Response | None = None
        self._write_ready: asyncio.Event | None = None
        self._headers: Headers = []

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is not None and response.status == 0:
            # The upstream is trusted with bodies, not with unbounded heads: the parser is fed no more of a head
            # than MAX_RESPONSE_HEAD (1xx heads included), as gateway/server.py does for requests.
            room = MAX_RESPONSE_HEAD - response.head_bytes
            if len(data) > room:
                response.head_bytes += room
                self._feed(data[:room])
                if response.status == 0 and not response.complete:
                    self._fail(ProtocolError(f"the upstream's response head is over {MAX_RESPONSE_HEAD} bytes"))
                    return
                data = data[room:]
            else:
                response.head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - upgrades go through the WebSocket path
            self._fail(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        response = self._response
        if response is not None and not response.complete:
            if exc is None and response.until_close:
                response._finish(reusable=False)  # RFC 9112 §6.3: the close is the end of this body
            else:
                response._fail(ProtocolError("the upstream closed the connection"))
        if self._write_ready is not None:
            self._write_ready.set()

    def pause_writing(self) -> None:
        self._write_ready = asyncio.Event()

    def resume_writing(self) -> None:
        if self._write_ready is not None:
            self._write_ready.set()
            self._write_ready = None

    # -- llhttp callbacks --
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        response = self._response
        if response is None or 100 <= status < 200:
            return  # 1xx interim responses are not forwarded; the final response follows on this connection
        framing = _framing(self._headers)
        if framing is None:
            self._fail(ProtocolError("ambiguous response framing: a Transfer-Encoding other than chunked"))
            return
        response._start(status, self._headers)
        if status not in (204, 304) and not framing:
            response.until_close = True
        if response.head_only:
            # llhttp cannot be told that a HEAD response has no body, so finish here and drop the connection.
            response._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self._response is not None and not self._response.complete:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or response.status == 0 or response.complete:
            return  # end of a 1xx, or a HEAD response already finished
        response._finish(reusable=self.parser.should_keep_alive())

    # -- used by Response --
    def _fail(self, exc: Exception) -> None:
        if self._response is not None:
            self._response._fail(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def drain(self) -> None:
        if self._write_ready is not None:
            await self._write_ready.wait()
        if self.closed:
            raise ProtocolError("the upstream closed the connection while the request body was sent")


class Response:
    """An upstream response: status and raw headers at once, then the body chunk by chunk."""

    def __init__(self, connection: _Connection, head_only: bool) -> None:
        self._connection = connection
        self._closed = False
        self.writer: asyncio.Task[None] | None = None
        self.head_only = head_only
        self.status = 0
        self.headers: Headers = []
        self.complete = False
        self.received_any = False
        self.head_bytes = 0
        #: Neither Content-Length nor chunked: the body ends when the upstream closes the connection.
        self.until_close = False
        self._reusable = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _start(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self.received_any = True
        self._wake()

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and not self._paused and self._connection.transport is not None:
            self._paused = True
            self._connection.transport.pause_reading()
        self._wake()

    def _finish(self, reusable: bool) -> None:
        self.complete = True
        self._reusable = reusable
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self._error is None and not self.complete:
            self._error = exc
        self._wake()

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        # A body that cannot be sent (client gone, over the size cap) ends the exchange with its error.
        if not writer.cancelled() and writer.exception() is not None:
            error = writer.exception()
            assert isinstance(error, Exception)
            self._fail(error)
            self._connection.abort()

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A timer handle rather than asyncio.timeout(): this runs for every chunk on the hot path.
        timer = loop.call_later(timeout, _expire, waiter) if timeout else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def wait_head(self, timeout: float | None) -> None:
        while self.status == 0:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)

    async def read(self, timeout: float | None) -> bytes:
        """The next body bytes; b"" once the body is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._drain_chunks())
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER:
            self._paused = False
            if self._connection.transport is not None:
                self._connection.transport.resume_reading()
        return chunk

    def _drain_chunks(self) -> list[bytes]:
        chunks = list(self._chunks)
        self._chunks.clear()
        return chunks

    @property
    def at_eof(self) -> bool:
        return self.complete and not self._chunks

    def close(self) -> None:
        """Give the connection back if the exchange finished cleanly, else drop it. Never awaits."""
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        connection._response = None
        writer_busy = self.writer is not None and not self.writer.done()
        if self.complete and self._reusable and not self._chunks and not connection.closed and not writer_busy:
            connection.pool._idle.append(connection)
            connection.reused = True
        else:
            connection.abort()
            if writer_busy:
                assert self.writer is not None
                self.writer.cancel()
        connection.pool._slots.release()


def _framing(headers: Headers) -> bool | None:
    """Whether a response head delimits its body (Content-Length or chunked) or leaves it to the close; None when
    it is ambiguous. llhttp refuses Content-Length twice or beside Transfer-Encoding; a coding other than exactly
    `chunked` would make the body's length the close and its bytes something the client was never told of."""
    framed = False
    for name, value in headers:
        if name == b"transfer-encoding":
            if value.strip().lower() != b"chunked" or framed:
                return None
            framed = True
        elif name == b"content-length":
            framed = True
    return framed


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class ConnectionPool:
    """Keep-alive connections to one target (scheme://host:port)."""

    def __init__(self, url: str, *, max_connections: int, connect_timeout: float | None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)

    def close_idle(self) -> None:
        while self._idle:
            self._idle.popleft().abort()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        return connection

    def _forget(self, connection: _Connection) -> None:
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
        read_timeout: float | None = None,
        fresh: bool = False,
    ) -> Response:
        """Send the request head (and stream `body`); return once the response head has arrived.

        Sent once, on one connection: a kept-alive one unless `fresh`. Nothing is resent here (StaleConnection
        tells the caller when resending an idempotent request would be safe).
        """
        head = b"".join([method, b" ", target, b" HTTP/1.1\r\n", *(n + b": " + v + b"\r\n" for n, v in headers)])
        # One CR and one LF per line and nowhere else: no byte of a name, value or target can start a new line.
        lines = len(headers) + 1
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in target or b"\x00" in head:
            raise RequestRefused("a header or the target of the upstream request holds CR, LF, NUL or a space")
        head += b"transfer-encoding: chunked\r\n\r\n" if chunked else b"\r\n"
        # A slot is held from here until Response.close(): at most max_connections exchanges at once.
        await self._slots.acquire()
        try:
            connection = None
            while self._idle and not fresh:
                candidate = self._idle.popleft()
                if not candidate.closed:
                    connection = candidate
                    break
            if connection is None:
                connection = await self._connect()
            return await self._exchange(connection, method, head, body, chunked, read_timeout)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self,
        connection: _Connection,
        method: bytes,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        read_timeout: float | None,
    ) -> Response:
        response = Response(connection, head_only=method == b"HEAD")
        connection._response = response
        assert connection.transport is not None
        connection.transport.write(head)
        if body is not None:
            response.writer = asyncio.get_running_loop().create_task(_write_body(connection, body, chunked))
            response.writer.add_done_callback(response._writer_done)
        try:
            await response.wait_head(read_timeout)
        except BaseException as exc:
            if response.writer is not None:
                response.writer.cancel()
            connection._response = None
            connection.abort()
            if isinstance(exc, ProtocolError) and connection.reused and body is None and not response.received_any:
                raise StaleConnection(f"a kept-alive connection broke before the response: {exc}") from exc
            raise
        return response


async def _write_body(connection: _Connection, body: AsyncIterator[bytes], chunked: bool) -> None:
    transport = connection.transport
    assert transport is not None
    async for chunk in body:
        if connection.closed:
            raise ProtocolError("the upstream closed the connection while the request body was sent")
        transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        await connection.drain()
    if chunked:
        transport.write(b"0\r\n\r\n")
