"""The HTTP/1.1 server the pipeline runs in: uvicorn's httptools protocol, with the limits of an edge proxy.

What a client may make the process hold is capped before it is buffered, as nginx and Envoy cap it:

- the request line (`max_request_line`, 414) and each header line (`max_header_line`, 431);
- the whole head (`max_header_bytes`, 431): the parser is never fed more of one head than this;
- the number of header fields (`max_headers`, 431);
- the time to send a complete head (`header_timeout`, 408), from the connection's first byte or the start of
  the next request on a kept-alive one, so a client dribbling headers (slowloris) cannot hold a connection;
- connections per client address (`max_connections_per_ip`, 429; peers in `server.trusted_proxies`, such as a
  load balancer, are exempt).

Every refusal is the gateway's JSON error body, closes the connection, is counted in
`gateway_http_refused_total{reason}` and gets an access log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import metrics
from gateway.config.models import EdgeLimits, ServerSettings
from gateway.observe import log_access
from gateway.proxy.headers import request_id_from
from gateway.responses import error_body

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

logger = logging.getLogger("gateway")
#: How long a refused connection is read from (and its bytes dropped) before it is closed; nginx lingers 5 s.
LINGER_S = 2.0
_REASONS = {
    400: ("bad_request", "Bad Request"),
    408: ("request_timeout", "Request Timeout"),
    414: ("uri_too_long", "URI Too Long"),
    429: ("too_many_connections", "Too Many Requests"),
    431: ("request_header_fields_too_large", "Request Header Fields Too Large"),
}


class _HeadSweeper:
    """One timer per server, not one per request: every interval it times out the connections whose head is late.
    A request then pays for one clock read; the deadline is kept to within a quarter of header_timeout."""

    def __init__(self, server_state: ServerState, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.server_state = server_state
        self.loop = loop
        self.interval = interval
        self.handle: asyncio.TimerHandle | None = loop.call_later(interval, self.sweep)

    @classmethod
    def ensure(cls, server_state: ServerState, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        # Kept on uvicorn's per-server state, which every connection of the server shares.
        sweeper: _HeadSweeper | None = getattr(server_state, "gateway_head_sweeper", None)
        if sweeper is None or sweeper.handle is None:
            interval = max(0.05, min(1.0, timeout / 4))
            server_state.gateway_head_sweeper = cls(server_state, loop, interval)  # type: ignore[attr-defined]

    def sweep(self) -> None:
        now = self.loop.time()
        waiting = False
        for connection in list(self.server_state.connections):
            deadline = getattr(connection, "_head_deadline", None)
            if deadline is not None:
                waiting = True
                if deadline <= now:
                    connection._head_timed_out()  # type: ignore[union-attr]
        self.handle = self.loop.call_later(self.interval, self.sweep) if waiting else None


class _Refused(Exception):
    """Raised inside a parser callback; the refusal itself is on the protocol."""


class PeerConnections:
    """Open connections per client address, in this process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def add(self, address: str, limit: int) -> bool:
        if self._open[address] >= limit:
            return False
        self._open[address] += 1
        return True

    def remove(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open[address]


@runtime_checkable
class EdgeOwner(Protocol):
    """What the protocol asks of the app it serves (the Gateway): the current limits and the shared counts."""

    peer_connections: PeerConnections

    @property
    def edge_limits(self) -> EdgeLimits: ...

    @property
    def access_log(self) -> bool: ...

    def trusts(self, address: str) -> bool: ...

    def begin_drain(self) -> None: ...


_DEFAULT_LIMITS = EdgeLimits()


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        owner = self.app if isinstance(self.app, EdgeOwner) else None
        self._owner = owner
        self._limits = owner.edge_limits if owner is not None else _DEFAULT_LIMITS
        #: Waiting for (or inside) a request head: what is fed to the parser counts against max_header_bytes.
        self._in_head = True
        self._head_bytes = 0
        #: Loop time by which the head being received must be complete; None when no head is being waited for.
        self._head_deadline: float | None = None
        self._refusal: tuple[int, str] | None = None
        self._lingering = False
        self._counted_peer: str | None = None

    # -- connection --
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self._limits.max_connections_per_ip
        address = self.client[0] if self.client else None
        if limit and address and self._owner is not None and not self._owner.trusts(address):
            if not self._owner.peer_connections.add(address, limit):
                self._refuse(429, f"more than {limit} open connections from this address")
                return
            self._counted_peer = address
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # The server calls this on every connection once it has stopped listening: the drain has begun.
        if self._owner is not None:
            self._owner.begin_drain()
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over; this one never hears of the connection again.
        self._release()
        super().handle_websocket_upgrade()

    def _release(self) -> None:
        self._head_deadline = None
        if self._counted_peer is not None and self._owner is not None:
            self._owner.peer_connections.remove(self._counted_peer)
            self._counted_peer = None

    # -- bytes in --
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._in_head:
            room = self._limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed no more of this head than the cap: if it has not ended by then, it is too large.
                self._head_bytes += room
                super().data_received(data[:room])
                if self.transport.is_closing():
                    return
                if self._in_head:
                    if len(self.url) > self._limits.max_request_line:
                        self._refuse(414, f"the request line is over {self._limits.max_request_line} bytes")
                    else:
                        self._refuse(431, f"the request head is over {self._limits.max_header_bytes} bytes")
                    return
                data = data[room:]
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        # The parser refused the bytes (or a callback of ours did): answer in the gateway's own error format.
        if self._refusal is not None:
            status, detail = self._refusal
        else:
            status, detail = 400, "the request is not valid HTTP/1.1"
        self._refuse(status, detail)

    # -- parser callbacks --
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        # Checked once the head is whole: max_header_bytes already bounded what the parser could buffer.
        limits = self._limits
        if len(self.url) > limits.max_request_line:
            self._refusal = (414, f"the request line is over {limits.max_request_line} bytes")
            raise _Refused()
        if len(self.headers) > limits.max_headers:
            self._refusal = (431, f"more than {limits.max_headers} header fields")
            raise _Refused()
        if self._head_bytes > limits.max_header_line and any(
            len(name) + len(value) + 2 > limits.max_header_line for name, value in self.headers
        ):
            self._refusal = (431, f"a header line is over {limits.max_header_line} bytes")
            raise _Refused()
        self._in_head = False
        self._head_bytes = 0
        self._head_deadline = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    # -- the head deadline --
    def _arm_head_deadline(self) -> None:
        timeout = self._limits.header_timeout
        if timeout and self._head_deadline is None:
            self._head_deadline = self.loop.time() + timeout
            _HeadSweeper.ensure(self.server_state, self.loop, timeout)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            # Nothing sent at all: close quietly, as nginx does (a browser's speculative connection, retried).
            metrics.HTTP_REFUSED.labels("idle_timeout").inc()
            self.transport.close()
            self._release()
            return
        self._refuse(408, f"the request head did not arrive within {self._limits.header_timeout:g}s")

    # -- refusing --
    def _refuse(self, status: int, detail: str) -> None:
        if self.transport.is_closing() or self._lingering:
            return
        error, phrase = _REASONS[status]
        request_id = request_id_from(())
        body = error_body(error, detail, request_id)
        extra = b"retry-after: 1\r\n" if status == 429 else b""
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"connection: close\r\n%s\r\n%s" % (status, phrase.encode(), len(body), request_id.encode(), extra, body)
        )
        self._linger()
        metrics.HTTP_REFUSED.labels(error).inc()
        if self._owner is not None and self._owner.access_log:
            log_access(
                request_id=request_id,
                client=self.client[0] if self.client else "",
                method=self._method(),
                path=None,
                route="_refused",
                status=status,
                duration_ms=0.0,
                upstream=None,
            )

    def _linger(self) -> None:
        """Close after the refusal, reading (and dropping) what the client still sends for LINGER_S: closing at
        once with unread bytes makes the kernel reset the connection, and the client may never read the answer."""
        self._head_deadline = None
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    def _method(self) -> str | None:
        try:
            parser = self.parser
            return parser.get_method().decode("ascii") if parser is not None and self.url else None
        except (httptools.HttpParserError, UnicodeDecodeError):  # pragma: no cover - no method parsed yet
            return None


def server_options(server: ServerSettings) -> dict[str, Any]:
    """The uvicorn options `gateway run` serves with (the tests serve with the same ones)."""
    return {
        "http": GatewayHttpProtocol,
        "lifespan": "on",
        "access_log": False,  # the gateway writes its own JSON access log
        "proxy_headers": False,  # trusted proxies are the gateway's own setting
        "server_header": False,  # upstream responses carry their own Server and Date
        "date_header": False,
        "timeout_graceful_shutdown": int(server.drain_timeout) or None,
        "log_config": None,
    }
