"""GET /{code}: the redirect hot path, in pure ASGI.

It is the Dispatcher's fallback, reached only when no own path and no proxy route matched, and it declines
(returns False, having sent nothing) any path that is not one segment of the code alphabet, so the
Dispatcher answers those with its own 404. A found code costs a cache lookup, the response, and one append
to the click buffer; errors answer JSON, or a small HTML page when the client prefers text/html.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.config.shortener import RedirectStatus
from gateway.exceptions import CircuitOpen, StorageError
from gateway.responses import send_error
from gateway.shortener.cache import Target
from gateway.shortener.clicks import ClickRecorder

CODE_PATH = re.compile(r"/([A-Za-z0-9_-]{3,64})")
HANDLER_LABEL = "_shortener"
_CACHEABLE = frozenset({301, 308})
_EMPTY = {"type": "http.response.body", "body": b""}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body><h1>{title}</h1><p>{detail}</p></body></html>
"""


class RedirectHandler:
    def __init__(
        self,
        *,
        resolve: Callable[[str], Awaitable[Target | None]],
        grant_visit: Callable[..., Awaitable[bool]],
        recorder: ClickRecorder,
        status: RedirectStatus,
        cache_max_age: float,
    ) -> None:
        self.resolve = resolve
        self.grant_visit = grant_visit
        self.recorder = recorder
        self.status = status
        self.cache_max_age = int(cache_max_age)
        self._cacheable = status in _CACHEABLE
        self._cache_header = (b"cache-control", b"private, max-age=%d" % self.cache_max_age)
        self._counter = metrics.SHORTENER_REDIRECT_STATUSES[status]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer GET/HEAD /{code}; False (nothing sent) for anything else."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return False
        match = CODE_PATH.fullmatch(scope["path"])
        if match is None:
            return False
        code = match.group(1)
        try:
            target = await self.resolve(code)
            if target is None:
                # Left labelled "unmatched": an unknown code is a 404 like any other unrouted path.
                await _refuse(scope, send, 404, "not_found", "Not found", f"no short link or route for /{code}")
                return True
            scope["gateway.handler"] = HANDLER_LABEL
            now = time.time()
            if target.expires_at is not None and target.expires_at <= now:
                await _refuse(scope, send, 410, "expired", "Link expired", f"the short link /{code} has expired")
                return True
            visit = scope["method"] == "GET"  # a HEAD looks without visiting: no click, no visit spent
            if target.max_visits is not None and not await self.grant_visit(code, spend=visit):
                detail = f"the short link /{code} has been used its {target.max_visits} allowed times"
                await _refuse(scope, send, 410, "visit_limit_reached", "Link used up", detail)
                return True
        except StorageError as exc:
            retry_after = max(1, math.ceil(exc.retry_after)) if isinstance(exc, CircuitOpen) else 5
            detail = "short links are unavailable for a moment; try again shortly"
            await _refuse(scope, send, 503, "storage_unavailable", "Try again shortly", detail, retry_after)
            return True
        headers = [(b"location", target.long_url.encode("latin-1")), (b"content-length", b"0")]
        if self._cacheable:
            # A browser must come back to spend a visit of a limited link, and must not keep one past its expiry.
            if target.max_visits is not None:
                headers.append((b"cache-control", b"private, max-age=0"))
            elif target.expires_at is not None:
                left = max(0, int(min(self.cache_max_age, target.expires_at - now)))
                headers.append((b"cache-control", b"private, max-age=%d" % left))
            else:
                headers.append(self._cache_header)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send(_EMPTY)
        self._counter.inc()
        if not visit:
            return True
        referer = user_agent = None
        for name, value in scope["headers"]:
            if name == b"referer":
                referer = value
            elif name == b"user-agent":
                user_agent = value
        self.recorder.record(code, now, referer, user_agent)
        return True


async def _refuse(
    scope: Scope, send: Send, status: int, error: str, title: str, detail: str, retry_after: int | None = None
) -> None:
    metrics.SHORTENER_REDIRECT_STATUSES[status].inc()
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    if not prefers_html(scope):
        await send_error(send, status, error, detail, scope.get("gateway.request_id"), headers)
        return
    body = _PAGE.format(title=html.escape(title), detail=html.escape(detail)).encode()
    headers += [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def prefers_html(scope: Scope) -> bool:
    """Whether the Accept header ranks text/html above application/json (a tie, or no header, is JSON)."""
    accept = next((value for name, value in scope["headers"] if name == b"accept"), None)
    if not accept:
        return False
    html_q = json_q = 0.0
    for item in accept.decode("latin-1").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "text/*", "*/*"):
            html_q = max(html_q, q if media == "text/html" else q - 0.001)
        if media in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q if media == "application/json" else q - 0.001)
    return html_q > json_q
