"""An example upstream for demos, tests and benchmarks: put the gateway in front of it.

    python -m examples.upstream --port 9000 [--host 127.0.0.1]
    python -m uvicorn examples.upstream:app --port 9000       # the same app, with any uvicorn option

GET /, /hello          a short text body
ANY /echo              JSON of the method, path, raw query string, headers and body length
GET /bytes/{n}         n bytes, streamed in 64 KiB chunks
GET /sse?n=5           n server-sent events, one every 100 ms
ANY /status/{code}     an empty response with that status
GET /redirect?to=/x    302 to the given location
GET /slow?s=1.5        answers after s seconds
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK = b"x" * 65536
MAX_BYTES = 1 << 30
MAX_SLEEP = 60.0
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!\n")


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body_length": len(body),
        }
    )


async def stream_bytes(request: Request) -> Response:
    n: int = request.path_params["n"]
    if n > MAX_BYTES:
        return PlainTextResponse(f"at most {MAX_BYTES} bytes\n", status_code=400)

    async def chunks() -> AsyncIterator[bytes]:
        left = n
        while left > 0:
            size = min(left, len(CHUNK))
            yield CHUNK if size == len(CHUNK) else CHUNK[:size]
            left -= size

    # A known length lets clients and proxies check that nothing was cut, while the body still streams.
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"content-length": str(n)})


async def sse(request: Request) -> Response:
    try:
        count = min(int(request.query_params.get("n", "5")), 1000)
    except ValueError:
        return PlainTextResponse("n must be a whole number\n", status_code=400)

    async def events() -> AsyncIterator[str]:
        for i in range(count):
            if i:
                await asyncio.sleep(0.1)
            yield f'id: {i}\nevent: tick\ndata: {{"n": {i}}}\n\n'

    # no-cache and X-Accel-Buffering keep caches and buffering proxies from holding events back.
    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


async def status(request: Request) -> Response:
    code: int = request.path_params["code"]
    if not 200 <= code <= 599:
        return PlainTextResponse("status must be 200-599\n", status_code=400)
    return Response(status_code=code)


async def redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params.get("to", "/hello"), status_code=302)


async def slow(request: Request) -> Response:
    try:
        seconds = min(max(float(request.query_params.get("s", "1")), 0.0), MAX_SLEEP)
    except ValueError:
        return PlainTextResponse("s must be a number of seconds\n", status_code=400)
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {seconds}s\n")


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/hello", hello),
        Route("/echo", echo, methods=ALL_METHODS),
        Route("/bytes/{n:int}", stream_bytes),
        Route("/sse", sse),
        Route("/status/{code:int}", status, methods=ALL_METHODS),
        Route("/redirect", redirect),
        Route("/slow", slow),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description="Example upstream for the gateway.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
