"""Real peers for the notification tests, each on loopback: webhook receivers, a provider speaking Twilio's and
FCM's HTTP shapes, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from aiosmtpd.controller import Controller
from starlette.types import Receive, Scope, Send

from tests.services import free_port


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """`app` under a real uvicorn on a free loopback port, in the test's own event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: Any = None, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body if body is not None else {}).encode()
    start = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": payload})


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers each POST with `status(n)` for the n-th request (1-based). A receiver applies an event once:
    `applied` is keyed by webhook-id, so a redelivered duplicate is received but not applied again."""

    status: Callable[[int], int] = lambda n: 200
    #: The Retry-After header of the n-th answer, if any.
    retry_after: Callable[[int], str | None] = lambda n: None
    #: When set, the receiver applies the request, then waits for `release` before answering.
    hold: bool = False
    requests: list[Delivery] = field(default_factory=list)
    applied: dict[str, Any] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await _body(receive)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.requests.append(Delivery(headers, body, time.monotonic()))
        status = self.status(len(self.requests))
        if 200 <= status < 300:
            self.applied.setdefault(headers.get("webhook-id", ""), json.loads(body))
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        asked = self.retry_after(len(self.requests))
        await _respond(send, status, headers=[(b"retry-after", asked.encode())] if asked is not None else ())

    def ids(self) -> list[str]:
        return [request.headers["webhook-id"] for request in self.requests]


@contextlib.asynccontextmanager
async def webhook_receiver(
    status: Callable[[int], int] = lambda n: 200,
    *,
    hold: bool = False,
    retry_after: Callable[[int], str | None] = lambda n: None,
) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(status=status, hold=hold, retry_after=retry_after)
    async with serve_asgi(receiver) as url:
        receiver.url = f"{url}/hook"
        yield receiver


@dataclass
class ProviderServer:
    """Twilio's Messages API (form POST, basic auth → 201 {"sid"}) and FCM v1's messages:send (bearer, JSON →
    {"name"}); a device token "unregistered" gets FCM's 404 UNREGISTERED, a number "+15005550001" Twilio's 400."""

    account_sid: str = "AC123"
    auth_token: str = "twilio-token"
    bearer: str = "fcm-token"
    sms: list[dict[str, str]] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        path = scope["path"]
        if path == f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            import base64

            expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
            if headers.get("authorization") != expected:
                await _respond(send, 401, {"code": 20003, "message": "Authenticate"})
                return
            form = dict(parse_qsl(body.decode()))
            if form.get("To") == "+15005550001":
                await _respond(send, 400, {"code": 21211, "message": "The 'To' number is not a valid phone number."})
                return
            self.sms.append(form)
            await _respond(send, 201, {"sid": f"SM{len(self.sms):032d}", "status": "queued"})
            return
        if path.startswith("/v1/projects/") and path.endswith("/messages:send"):
            if headers.get("authorization") != f"Bearer {self.bearer}":
                await _respond(send, 401, {"error": {"status": "UNAUTHENTICATED"}})
                return
            message = json.loads(body)["message"]
            if message["token"] == "unregistered":
                await _respond(send, 404, {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                    {"errorCode": "UNREGISTERED"}]}})  # fmt: skip
                return
            self.pushes.append(message)
            project = path.split("/")[3]
            await _respond(send, 200, {"name": f"projects/{project}/messages/{len(self.pushes)}"})
            return
        await _respond(send, 404)


@contextlib.asynccontextmanager
async def provider_server() -> AsyncIterator[ProviderServer]:
    provider = ProviderServer()
    async with serve_asgi(provider) as url:
        provider.url = url
        yield provider


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mailbox: _Mailbox


@contextlib.contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, mailbox)
    finally:
        controller.stop()
