"""A Redis outage under load, as a timeline: latency and decisions per request, the breaker's state over time.

    .venv/bin/python -m bench.outage --json bench/results/outage.json

A gateway on Redis with a fail-open rule on a proxied route; 8 clients send requests back to back. At 5 s Redis
is stopped (SIGSTOP) for 5 s, then resumed; the run ends at 15 s. Every answer is kept with its time, latency
and whether the engine decided it (the RateLimit headers are there) or the rule failed open; the breaker's
state is read from /metrics every 100 ms. Printed: the time the breaker took to open after the fault and to
close after the recovery, and p99 latency before, during and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.soak import metric, start
from tests import services

FAULT_AT_S, FAULT_FOR_S, END_S = 5.0, 5.0, 15.0


@dataclass
class Outage:
    #: (seconds since start, latency ms, decided by the engine)
    requests: list[tuple[float, float, bool]] = field(default_factory=list)
    #: (seconds since start, breaker state: 0 closed, 1 half-open, 2 open)
    breaker: list[tuple[float, float]] = field(default_factory=list)
    opened_after_s: float | None = None
    closed_after_s: float | None = None
    p99_ms: dict[str, float] = field(default_factory=dict)
    non_2xx: int = 0


def gateway_yaml(port: int, upstream: int, redis_url: str) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, access_log: false, watch_config: false}}
engine: {{kind: redis, redis: {{url: "{redis_url}"}}, database: {{url: "sqlite:///:memory:"}}}}
upstreams: {{app: {{targets: ["http://127.0.0.1:{upstream}"]}}}}
routes: [{{name: app, match: {{path_prefix: /app}}, upstream: app, strip_prefix: true}}]
ratelimit: {{rules: [{{name: app, match: "/app/**", windows: ["100000000/1m"], on_failure: open}}]}}
"""


async def run() -> Outage:
    outage = Outage()
    tmp = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    upstream, port = services.free_port(), services.free_port()
    with services.redis_server() as redis_server:
        config = tmp / "gateway.yaml"
        config.write_text(gateway_yaml(port, upstream, redis_server.url))
        processes = [
            start([sys.executable, "-m", "examples.upstream", "--port", str(upstream)], tmp / "upstream.log"),
            start([sys.executable, "-m", "gateway", "run", "--config", str(config)], tmp / "gateway.log"),
        ]
        try:
            services.wait_for_port(upstream, timeout=30)
            services.wait_for_port(port, timeout=30)
            await _drive(outage, f"http://127.0.0.1:{port}", redis_server)
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    return outage


async def _drive(outage: Outage, base: str, redis_server: services.RedisServer) -> None:
    started = time.monotonic()
    end = started + END_S

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            while time.monotonic() < end:
                at = time.monotonic()
                response = await http.get("/app/hello")
                if response.status_code != 200:
                    outage.non_2xx += 1
                outage.requests.append((at - started, (time.monotonic() - at) * 1000, "ratelimit" in response.headers))

    async def watch_breaker() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            while time.monotonic() < end:
                text = (await http.get("/metrics")).text
                outage.breaker.append((time.monotonic() - started, metric(text, "gateway_breaker_state")))
                await asyncio.sleep(0.1)

    async def fault() -> None:
        assert redis_server.process is not None
        await asyncio.sleep(FAULT_AT_S)
        redis_server.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(FAULT_FOR_S)
        redis_server.process.send_signal(signal.SIGCONT)

    await asyncio.gather(fault(), watch_breaker(), *(client() for _ in range(8)))
    back = FAULT_AT_S + FAULT_FOR_S
    opened = next((t for t, state in outage.breaker if t >= FAULT_AT_S and state == 2), None)
    closed = next((t for t, state in outage.breaker if t >= back and state == 0), None)
    outage.opened_after_s = None if opened is None else round(opened - FAULT_AT_S, 2)
    outage.closed_after_s = None if closed is None else round(closed - back, 2)
    for name, (low, high) in {
        "before": (1, FAULT_AT_S),
        "during": (FAULT_AT_S + 1, back),
        "after": (back + 2, END_S),
    }.items():
        latencies = [ms for t, ms, _ in outage.requests if low <= t < high]
        outage.p99_ms[name] = round(statistics.quantiles(latencies, n=100)[98], 2) if len(latencies) > 100 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the timeline to this file")
    args = parser.parse_args()
    outage = asyncio.run(run())
    print(
        f"breaker opened {outage.opened_after_s}s after the fault, closed {outage.closed_after_s}s after the recovery; "
        f"p99 ms before/during/after: {outage.p99_ms}; non-2xx answers: {outage.non_2xx}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(outage)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
