"""Notifications: accepted/s through the API and delivered/s to a local webhook, on both engines.

    .venv/bin/python -m bench.notifications                        # 2000 notifications, 32 API callers
    .venv/bin/python -m bench.notifications --count 5000 --callers 64 --concurrency 32 --only embedded

Each engine row runs the real processes: `gateway run` (workers off, so accepting is measured alone) takes
`--count` POST /api/v1/notifications (one user, one webhook channel, high priority) from `--callers` concurrent
httpx clients; then `gateway worker` drains the queue into the receiver, `--concurrency` sends in flight.
accepted/s = count / time of the POST phase; delivered/s = count / time from the first delivery to the last.
The receiver is a separate uvicorn process answering 200 to every POST (and counting them).

The baselines beside them: a bare httpx POST loop to the same receiver with `--concurrency` callers (the most
a Python sender can deliver there: the delivered/s ceiling), and the same loop with `--callers` callers against
the receiver (a trivial ASGI endpoint: the ceiling for accepted/s with this client). The embedded engine is the
SQLite file and queue; "redis" is Redis Streams + PostgreSQL, both started locally (tests/services.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.proxy import LOAD_CPUS, PROXY_CPUS, parse_wrk
from tests.services import free_port, postgres_server, redis_server, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-0001"
SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-32byte").decode()
_count = 0


async def receiver_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST: count and answer 200. GET /count: how many so far."""
    global _count
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    if scope["method"] == "POST":
        _count += 1
    body = str(_count).encode() if scope["path"] == "/count" else b"{}"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def process(*args: str, port: int | None = None, env: dict[str, str] | None = None, cpus: str | None = None) -> Any:
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen(
        [*pin, *args], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if port is not None:
            wait_for_port(port, timeout=30)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def receiver(cpus: str | None = None) -> Any:
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "bench.notifications:receiver_app", "--port", str(port)]
    with process(*uvicorn, "--log-level", "warning", "--no-access-log", port=port, cpus=cpus):
        yield f"http://127.0.0.1:{port}"


async def received(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(f"{url}/count")).text)


async def loop_rate(callers: int, count: int, call: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> float:
    """`count` calls from `callers` concurrent tasks sharing one client; calls per second."""
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        remaining = count

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call(client)

        await call(client)  # warm-up connection
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return count / (time.perf_counter() - started)


BODY = {"user_ids": ["alice"], "template_id": "hello", "channels": ["webhook"], "data": {"name": "Alice"},
        "priority": "high"}  # fmt: skip
WRK_SCRIPT = f"""\
wrk.method = "POST"
wrk.body = '{json.dumps(BODY)}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{API_KEY}"
"""


def wrk_rate(url: str, args: argparse.Namespace, directory: str) -> tuple[float, int, int]:
    """wrk POSTs to `url` from CPU 1 for --duration: (requests/s, requests, non-2xx responses and socket errors)."""
    script = Path(directory) / "post.lua"
    script.write_text(WRK_SCRIPT)
    argv = ["taskset", "-c", LOAD_CPUS, "wrk", "-t1", f"-c{args.callers}", f"-d{args.duration}", "-s", str(script), url]
    result = parse_wrk(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return result.requests_per_s, result.requests, result.non_2xx_3xx + sum(result.socket_errors.values())


def accepted_total(port: int) -> int:
    """gateway_notify_accepted_total from /metrics, every priority summed: what the gateway says it stored."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    lines = (line for line in text.splitlines() if line.startswith("gateway_notify_accepted_total"))
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in lines))


def config_text(engine: str, hook_url: str, port: int, concurrency: int) -> str:
    return f"""\
server: {{port: {port}, access_log: false, drain_timeout: 2s}}
{engine}
identities:
  api_keys: [{{key: {API_KEY}, user_id: bench, tier: premium}}]
notifications:
  channels:
    webhook: {{plugin: webhook, url: "{hook_url}/hook", secret: "{SECRET}", timeout: 10s}}
  templates:
    hello: {{default: {{subject: "Hello {{{{ name }}}}", body: "Hello, {{{{ name }}}}!"}}}}
  workers: {{in_process: false, concurrency: {concurrency}, poll_interval: 200ms, tick_interval: 1s}}
"""


async def engine_row(name: str, engine: str, hook_url: str, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as directory:
        port = free_port()
        config = Path(directory) / "gateway.yaml"
        config.write_text(config_text(engine.replace("{dir}", directory), hook_url, port, args.concurrency))
        async with httpx.AsyncClient() as probe:
            before = await received(probe, hook_url)
            gateway = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
            with process(*gateway, port=port, cpus=PROXY_CPUS if args.load == "wrk" else None):
                url = f"http://127.0.0.1:{port}/api/v1/notifications"

                async def post(client: httpx.AsyncClient) -> None:
                    response = await client.post(url, json=BODY, headers={"X-API-Key": API_KEY})
                    assert response.status_code == 202, response.text

                if args.load == "wrk":
                    await post(probe)  # warm-up
                    before_accepted = accepted_total(port)
                    accepted, sent, failed = wrk_rate(url, args, directory)
                    stored = accepted_total(port) - before_accepted
                    # A figure counts only if each answer was a 202 and the gateway stored as many: the POSTs in
                    # flight when wrk stops are stored too, but not counted by wrk.
                    if failed or not sent <= stored <= sent + args.callers:
                        print(f"  {name:<28} INVALID: {failed} answers not 202, {stored} stored of {sent} sent")
                    total = stored + 1
                else:
                    accepted = await loop_rate(args.callers, args.count, post)
                    total = args.count + 1  # the warm-up POST
            with process(sys.executable, "-m", "gateway", "worker", "--config", str(config)):
                while await received(probe, hook_url) == before:
                    await asyncio.sleep(0.005)
                started = time.perf_counter()
                while (done := await received(probe, hook_url) - before) < total:
                    await asyncio.sleep(0.02)
                delivered = (done - 1) / (time.perf_counter() - started)
    print(f"  {name:<28} {accepted:>12,.0f} {delivered:>13,.0f}", flush=True)
    return accepted, delivered


async def main(args: argparse.Namespace) -> None:
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {args.count} notifications, "
          f"{args.callers} API callers, {args.concurrency} sends in flight")  # fmt: skip
    print(f"  {'row':<28} {'accepted/s':>12} {'delivered/s':>13}")
    with receiver(LOAD_CPUS if args.load == "wrk" else None) as hook_url:
        rows = []
        if "embedded" in args.only:
            engine = "engine: {kind: embedded, database: {url: 'sqlite:///{dir}/gateway.db'}}"
            rows.append(await engine_row("embedded (SQLite queue)", engine, hook_url, args))
        if "redis" in args.only:
            with redis_server() as redis, postgres_server() as postgres:
                engine = f"engine: {{kind: redis, redis: {{url: '{redis.url}'}}, database: {{url: '{postgres.url}'}}}}"
                rows.append(await engine_row("redis (Streams + PostgreSQL)", engine, hook_url, args))

        async def hook(client: httpx.AsyncClient) -> None:
            await client.post(f"{hook_url}/hook", json={"type": "notification"})

        ceiling = await loop_rate(args.concurrency, args.count, hook)
        if args.load == "wrk":
            with tempfile.TemporaryDirectory(prefix="gw-bench-") as directory, receiver(PROXY_CPUS) as pinned:
                api_ceiling = wrk_rate(f"{pinned}/hook", args, directory)[0]
            label = "baseline: bare ASGI / httpx"
        else:
            api_ceiling = await loop_rate(args.callers, args.count, hook)
            label = "baseline: bare httpx POSTs"
    print(f"  {label:<28} {api_ceiling:>12,.0f} {ceiling:>13,.0f}")
    if args.load == "wrk":
        cpu = PROXY_CPUS
        print(f"    (accepted: wrk POSTs to a bare uvicorn ASGI app alone on CPU {cpu}, {args.callers} connections;")
        print(f"     delivered: httpx POSTs to the receiver with {args.concurrency} callers)")
    else:
        print(f"    (to the receiver itself, with {args.callers} and {args.concurrency} callers)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=32, help="concurrent API clients")
    parser.add_argument("--concurrency", type=int, default=16, help="workers.concurrency (and the baseline's)")
    parser.add_argument("--only", action="append", choices=["embedded", "redis"])
    parser.add_argument(
        "--load",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") and shutil.which("taskset") else "httpx",
        help="wrk: the gateway alone on CPU 0, wrk POSTing from CPU 1 for --duration (per-core accepted/s); "
        "httpx: --count POSTs from --callers httpx clients, unpinned",
    )
    parser.add_argument("--duration", default="10s", help="wrk's measurement with --load wrk")
    arguments = parser.parse_args()
    arguments.only = arguments.only or ["embedded", "redis"]
    asyncio.run(main(arguments))
