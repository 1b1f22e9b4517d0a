"""Soak: mixed load at half capacity for minutes, sampling the gateway every 10 s; a healthy run is flat.

    .venv/bin/python -m bench.soak                       # 5 minutes on Redis + PostgreSQL
    .venv/bin/python -m bench.soak --minutes 1 --json bench/results/soak.json

The mix, per request: 40% proxied GET through a route, 20% redirects of 100 codes, 20% link metadata reads
(limited by a rule on /api/v1/*), 10% link creates, 10% notifications to a local webhook receiver. First 10 s
at full speed measure the capacity of this mix; then the load runs at half of it. Every 10 s: the gateway's
RSS and open file descriptors (from /proc), its event-loop lag (gateway_event_loop_lag_seconds), and the
window's throughput, p99 and errors as the client saw them. A run is flat when RSS and fds at the end are
within 10% (and 16 fds) of their level after the first minute, and no answer was a 5xx or a transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import services

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "soak-admin-key-0001"
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
SAMPLE_S = 10.0
CALIBRATE_S = 10.0


@dataclass
class Window:
    at: float
    rss_mib: float
    fds: int
    loop_lag_ms: float
    requests_per_s: float
    p99_ms: float
    errors: int


@dataclass
class Soak:
    capacity_per_s: float = 0.0
    rate_per_s: float = 0.0
    windows: list[Window] = field(default_factory=list)
    flat: bool = False
    verdict: str = ""


def gateway_yaml(port: int, upstream: int, receiver: int, redis_url: str, postgres_url: str) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, access_log: false, watch_config: false, public_url: "http://gw.test",
          limits: {{max_connections_per_ip: 0}}}}
engine:
  kind: redis
  redis: {{url: "{redis_url}"}}
  database: {{url: "{postgres_url}"}}
upstreams:
  app: {{targets: ["http://127.0.0.1:{upstream}"]}}
routes:
  - {{name: app, match: {{path_prefix: /app}}, upstream: app, strip_prefix: true}}
identities:
  api_keys:
    - {{key: {ADMIN_KEY}, user_id: soak, tier: premium, admin: true}}
ratelimit:
  rules:
    - {{name: api, match: "/api/v1/**", windows: ["100000000/1m"]}}
shortener: {{redirect_status: 302, key_pool: {{min: 1000, batch: 1000}}}}
notifications:
  channels:
    webhook: {{plugin: webhook, url: "http://127.0.0.1:{receiver}/hook", secret: "{SECRET}"}}
  templates:
    soak: {{default: {{subject: "soak {{{{ n }}}}", body: "soak notification {{{{ n }}}}"}}}}
"""


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def proc_status(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


class Mix:
    """One request of the mix at a time; latencies and errors are kept for the current window."""

    def __init__(self, client: httpx.AsyncClient, codes: list[str]) -> None:
        self.client = client
        self.codes = codes
        self.latencies: list[float] = []
        self.errors = 0
        self.count = 0

    async def one(self) -> None:
        roll = random.random()
        started = time.perf_counter()
        try:
            if roll < 0.4:
                response = await self.client.get("/app/hello")
            elif roll < 0.6:
                response = await self.client.get(f"/{random.choice(self.codes)}")
            elif roll < 0.8:
                response = await self.client.get(f"/api/v1/urls/{random.choice(self.codes)}")
            elif roll < 0.9:
                response = await self.client.post("/api/v1/urls", json={"long_url": f"https://example.com/{roll}"})
            else:
                body = {"user_ids": ["soak"], "template_id": "soak", "channels": ["webhook"], "data": {"n": roll}}
                response = await self.client.post("/api/v1/notifications", json=body)
            if response.status_code >= 500:
                self.errors += 1
        except httpx.HTTPError:
            self.errors += 1
        self.latencies.append(time.perf_counter() - started)
        self.count += 1

    def take(self) -> tuple[int, list[float], int]:
        taken = (self.count, self.latencies, self.errors)
        self.count, self.latencies, self.errors = 0, [], 0
        return taken


async def run(minutes: float, workers: int) -> Soak:
    soak = Soak()
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    upstream, receiver, port = services.free_port(), services.free_port(), services.free_port()
    with services.redis_server() as redis_server, services.postgres_server() as postgres:
        config = tmp / "gateway.yaml"
        config.write_text(gateway_yaml(port, upstream, receiver, redis_server.url, postgres.url))
        processes = [
            start([sys.executable, "-m", "examples.upstream", "--port", str(upstream)], tmp / "upstream.log"),
            start(
                [sys.executable, "-m", "examples.receiver", "--port", str(receiver), "--secret", SECRET],
                tmp / "receiver.log",
            ),  # fmt: skip
        ]
        gateway = start([sys.executable, "-m", "gateway", "run", "--config", str(config)], tmp / "gateway.log")
        processes.append(gateway)
        try:
            for wait_port in (upstream, receiver, port):
                services.wait_for_port(wait_port, timeout=30)
            limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
            base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": ADMIN_KEY}
            async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
                codes = []
                for index in range(100):
                    created = await client.post("/api/v1/urls", json={"long_url": f"https://example.com/s{index}"})
                    codes.append(created.json()["short_code"])
                mix = Mix(client, codes)
                soak.capacity_per_s = await _calibrate(mix, workers)
                soak.rate_per_s = soak.capacity_per_s / 2
                print(f"capacity of the mix: {soak.capacity_per_s:.0f} req/s; soaking at {soak.rate_per_s:.0f} req/s")
                await _soak(mix, client, gateway.pid, soak, minutes * 60, workers)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    _judge(soak)
    return soak


async def _calibrate(mix: Mix, workers: int) -> float:
    stop = time.monotonic() + CALIBRATE_S

    async def loop() -> None:
        while time.monotonic() < stop:
            await mix.one()

    await asyncio.gather(*(loop() for _ in range(workers)))
    count, _, _ = mix.take()
    return count / CALIBRATE_S


async def _soak(mix: Mix, client: httpx.AsyncClient, pid: int, soak: Soak, seconds: float, workers: int) -> None:
    started = time.monotonic()
    stop = started + seconds
    interval = workers / soak.rate_per_s  # each worker keeps its share of the rate

    async def loop() -> None:
        next_at = time.monotonic() + random.random() * interval
        while next_at < stop:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await mix.one()
            next_at += interval

    async def sample() -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(SAMPLE_S)
            count, latencies, errors = mix.take()
            rss, fds = proc_status(pid)
            lag = metric((await client.get("/metrics")).text, "gateway_event_loop_lag_seconds")
            p99 = statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) >= 100 else 0.0
            window = Window(round(time.monotonic() - started), rss, fds, lag * 1000, count / SAMPLE_S, p99, errors)
            soak.windows.append(window)
            print(
                f"{window.at:5.0f}s  rss {rss:7.1f} MiB  fds {fds:4d}  loop lag {window.loop_lag_ms:6.1f} ms  "
                f"{window.requests_per_s:7.0f} req/s  p99 {p99:7.1f} ms  errors {errors}"
            )

    await asyncio.gather(sample(), *(loop() for _ in range(workers)))


def _judge(soak: Soak) -> None:
    windows = soak.windows
    if len(windows) < 3:
        soak.verdict = "too short to judge"
        return
    settled = windows[min(len(windows) - 1, max(1, int(60 / SAMPLE_S) - 1))]
    last = windows[-1]
    errors = sum(w.errors for w in windows)
    rss_ok = last.rss_mib <= settled.rss_mib * 1.10
    fds_ok = last.fds <= max(settled.fds * 1.10, settled.fds + 16)
    soak.flat = rss_ok and fds_ok and errors == 0
    soak.verdict = (
        f"RSS {settled.rss_mib:.0f} -> {last.rss_mib:.0f} MiB, fds {settled.fds} -> {last.fds}, "
        f"{errors} errors: {'flat' if soak.flat else 'NOT flat'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16, help="concurrent client loops")
    parser.add_argument("--json", type=Path, help="also write the windows to this file")
    args = parser.parse_args()
    soak = asyncio.run(run(args.minutes, args.workers))
    print(soak.verdict)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(soak), indent=2))
    return 0 if soak.flat else 1


if __name__ == "__main__":
    sys.exit(main())
