"""Shortener throughput on loopback: redirects of one hot code, and creates, through the gateway and the baselines.

    .venv/bin/python -m bench.shortener                               # wrk -t1 -c50 -d10s --latency per row
    .venv/bin/python -m bench.shortener --only redirects --repeat 3   # the median of 3 runs per row
    .venv/bin/python -m bench.shortener --engines embedded            # no PostgreSQL / Redis rows

Redirects: GET /hot-link (a custom alias, so both sides serve the same path) through `gateway run`, against a
bare Starlette app (`redirect_app` below) that answers the same 301 and Cache-Control from a dict. The gateway
does everything it does in production: the whole pipeline (observe, identity, rate limit, dispatch), the LRU,
and one click recorded per redirect, flushed to the local queue (embedded) or the Redis Stream and aggregated
in the background. The target is gateway ≥ 0.8× the bare app's req/s.

Creates: POST /api/v1/urls {"long_url"} through the gateway, against `create_app` below: the create a user would
write by hand (JSON in, a random 7-character code, one INSERT with retry on a duplicate, JSON out) on the same
database. Both engines: embedded (SQLite file) and distributed (PostgreSQL + Redis, started here from
tests/services.py). Every server is uvicorn with 1 worker, uvloop, httptools, no access log, no Server or Date
header (as `gateway run` serves).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bench.proxy import UVICORN, Servers, Unavailable, WrkResult, free_port, parse_wrk, servers
from gateway.engines.database import Database, UniqueViolation

TARGET_RATIO = 0.8
HOT_CODE = "hot-link"
TARGET_URL = "https://example.com/a/fairly/typical/landing-page?utm_source=bench"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PROTOCOL = ["--no-server-header", "--no-date-header"]
CREATE_LUA = """\
wrk.method = "POST"
wrk.body = '{"long_url": "https://example.com/bench/created"}'
wrk.headers["Content-Type"] = "application/json"
"""
GATEWAY_YAML = """\
server:
  host: 127.0.0.1
  port: {port}
  access_log: false
  public_url: http://sho.rt
engine:
{engine}
"""

# The baselines, served by uvicorn from this module.

LINKS = {HOT_CODE: TARGET_URL}


async def _redirect(request: Request) -> Response:
    target = LINKS.get(request.path_params["code"])
    if target is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    return RedirectResponse(target, status_code=301, headers={"Cache-Control": "private, max-age=300"})


redirect_app = Starlette(routes=[Route("/{code}", _redirect)])


@asynccontextmanager
async def _database(app: Starlette) -> AsyncIterator[None]:
    database = Database(os.environ["BENCH_DATABASE_URL"])
    await database.connect()
    await database.execute(
        "CREATE TABLE IF NOT EXISTS naive_urls "
        "(short_code TEXT PRIMARY KEY, long_url TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)"
    )
    app.state.database = database
    yield
    await database.aclose()


async def _create(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "invalid_json"}, status_code=400)
    long_url = body.get("long_url") if isinstance(body, dict) else None
    if not isinstance(long_url, str) or urlsplit(long_url).scheme not in ("http", "https"):
        return JSONResponse({"error": "invalid_field", "field": "long_url"}, status_code=400)
    for _ in range(5):
        code = "".join(secrets.choice(ALPHABET) for _ in range(7))
        try:
            await request.app.state.database.execute(
                "INSERT INTO naive_urls (short_code, long_url, created_at) VALUES ($1, $2, $3)",
                code,
                long_url,
                time.time(),
            )
        except UniqueViolation:
            continue
        return JSONResponse({"short_code": code, "short_url": f"http://sho.rt/{code}", "long_url": long_url}, 201)
    return JSONResponse({"error": "no_code"}, status_code=503)


create_app = Starlette(routes=[Route("/api/v1/urls", _create, methods=["POST"])], lifespan=_database)


@dataclass
class Stack:
    name: str
    database_url: str
    redis_url: str | None = None

    def engine_yaml(self) -> str:
        lines = [f"  kind: {'redis' if self.redis_url else 'embedded'}"]
        if self.redis_url:
            lines.append(f'  redis: {{url: "{self.redis_url}"}}')
        lines.append(f'  database: {{url: "{self.database_url}"}}')
        return "\n".join(lines)


@dataclass
class Row:
    section: str
    name: str
    baseline: bool
    result: WrkResult | None = None
    note: str = ""


def request(port: int, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        response = conn.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        conn.close()


def run_wrk(args: argparse.Namespace, url: str, script: Path | None = None) -> WrkResult:
    base = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "--latency", *(["-s", str(script)] if script else [])]
    if args.warmup != "0":
        subprocess.run([*base, f"-d{args.warmup}", url], capture_output=True, check=True)
    runs = [
        parse_wrk(subprocess.run([*base, f"-d{args.duration}", url], capture_output=True, text=True, check=True).stdout)
        for _ in range(args.repeat)
    ]
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]


def start_gateway(group: Servers, tmp: Path, stack: Stack, key: str) -> int:
    port = free_port()
    config = tmp / f"{key}.yaml"
    config.write_text(GATEWAY_YAML.format(port=port, engine=stack.engine_yaml()))
    binary = Path(sys.executable).parent / "gateway"
    group.start(key, [str(binary), "run", "--config", str(config), "--port", str(port)], port)
    return port


def start_baseline(group: Servers, key: str, app: str, env: dict[str, str] | None = None) -> int:
    port = free_port()
    group.start(key, [sys.executable, *UVICORN, *PROTOCOL, "--port", str(port), f"bench.shortener:{app}"], port, env)
    return port


def measure_redirects(args: argparse.Namespace, group: Servers, tmp: Path, stacks: list[Stack]) -> list[Row]:
    rows = [Row("redirects", "bare starlette (dict)", True)]
    port = start_baseline(group, "redirect-baseline", "redirect_app")
    rows[0].result = _checked_redirect(args, port)
    group.stop("redirect-baseline")
    print(f"  {rows[0].name}: {_summary(rows[0])}")
    for stack in stacks:
        row = Row("redirects", f"gateway ({stack.name})", False)
        key = f"gateway-redirect-{stack.name}"
        try:
            port = start_gateway(group, tmp, stack, key)
            status, _ = request(port, "POST", "/api/v1/urls", {"long_url": TARGET_URL, "custom_alias": HOT_CODE})
            if status not in (201, 409):
                raise Unavailable(f"creating the hot link answered {status}")
            row.result = _checked_redirect(args, port)
        except (Unavailable, ValueError, OSError, subprocess.CalledProcessError) as exc:
            row.note = f"failed: {exc}"
        finally:
            group.stop(key)
        rows.append(row)
        print(f"  {row.name}: {_summary(row)}")
    return rows


def _checked_redirect(args: argparse.Namespace, port: int) -> WrkResult:
    status, headers = request(port, "GET", f"/{HOT_CODE}")
    if (status, headers.get("location")) != (301, TARGET_URL):
        raise ValueError(f"GET /{HOT_CODE} answered {status} {headers.get('location')!r}, not a 301 to the target")
    return run_wrk(args, f"http://127.0.0.1:{port}/{HOT_CODE}")


def measure_creates(args: argparse.Namespace, group: Servers, tmp: Path, stacks: list[Stack]) -> list[Row]:
    script = tmp / "create.lua"
    script.write_text(CREATE_LUA)
    rows = []
    for stack in stacks:
        dialect = "sqlite" if stack.database_url.startswith("sqlite") else "postgresql"
        for name, baseline in ((f"naive starlette+{dialect}", True), (f"gateway ({stack.name})", False)):
            row = Row(f"creates ({stack.name})", name, baseline)
            key = f"create-{stack.name}-{'baseline' if baseline else 'gateway'}"
            try:
                if baseline:
                    port = start_baseline(group, key, "create_app", {"BENCH_DATABASE_URL": stack.database_url})
                else:
                    port = start_gateway(group, tmp, stack, key)
                status, _ = request(port, "POST", "/api/v1/urls", {"long_url": "https://example.com/check"})
                if status != 201:
                    raise ValueError(f"POST /api/v1/urls answered {status}")
                row.result = run_wrk(args, f"http://127.0.0.1:{port}/api/v1/urls", script)
            except (Unavailable, ValueError, OSError, subprocess.CalledProcessError) as exc:
                row.note = f"failed: {exc}"
            finally:
                group.stop(key)
            rows.append(row)
            print(f"  {row.name}: {_summary(row)}")
    return rows


def _summary(row: Row) -> str:
    r = row.result
    if r is None:
        return row.note
    return f"{r.requests_per_s:.0f} req/s, p99 {r.latency_ms.get('p99', 0):.2f} ms, errors {r.errors}"


def report(rows: list[Row], args: argparse.Namespace) -> bool | None:
    met: bool | None = None
    for section in dict.fromkeys(row.section for row in rows):
        members = [row for row in rows if row.section == section]
        base = next((row.result for row in members if row.baseline and row.result), None)
        header = f"{'name':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs baseline':>13}"
        print(f"\n{section}: wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency")
        print(header)
        print("-" * len(header))
        for row in members:
            r = row.result
            if r is None:
                print(f"{row.name:<34}{row.note}")
                continue
            versus = "baseline" if row.baseline else (f"{r.requests_per_s / base.requests_per_s:.2f}x" if base else "-")
            print(
                f"{row.name:<34}{r.requests_per_s:>10.0f}{r.latency_ms.get('p50', 0):>9.2f}"
                f"{r.latency_ms.get('p99', 0):>9.2f}{r.errors:>8}{versus:>13}"
            )
        if section == "redirects" and base is not None:
            gateways = [row.result for row in members if not row.baseline and row.result]
            if gateways:
                ratios = [g.requests_per_s / base.requests_per_s for g in gateways]
                met = all(ratio >= TARGET_RATIO for ratio in ratios) and not any(g.errors for g in gateways)
                shown = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
                verdict = "PASS" if met else "FAIL"
                print(f"target: gateway redirects >= {TARGET_RATIO}x bare Starlette: {verdict} ({shown})")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", default="2s", help="wrk warm-up before each measurement, 0 for none")
    parser.add_argument("--repeat", type=int, default=1, help="wrk runs per row; the median one is kept")
    parser.add_argument("--only", choices=["redirects", "creates"], help="measure one section only")
    parser.add_argument("--engines", choices=["both", "embedded"], default="both")
    parser.add_argument("--check", action="store_true", help="exit 1 when the redirect target fails")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run: something else is using the cores")

    from tests import services

    tmp = Path(tempfile.mkdtemp(prefix="bench-shortener-"))
    rows: list[Row] = []
    try:
        with ExitStack() as stack, servers(tmp) as group:
            stacks = [Stack("embedded", f"sqlite:///{tmp}/gateway.db")]
            if args.engines == "both":
                postgres = stack.enter_context(services.postgres_server())
                redis = stack.enter_context(services.redis_server())
                stacks.append(Stack("redis+postgresql", postgres.url, redis.url))
            if args.only in (None, "redirects"):
                rows += measure_redirects(args, group, tmp, stacks)
            if args.only in (None, "creates"):
                # A fresh SQLite file for the create rows; on PostgreSQL the baseline has its own table.
                creates = [Stack("embedded", f"sqlite:///{tmp}/creates.db"), *stacks[1:]]
                rows += measure_creates(args, group, tmp, creates)
    except KeyboardInterrupt:
        print("\ninterrupted: every server was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    met = report(rows, args)
    return 1 if args.check and met is False else 0


if __name__ == "__main__":
    sys.exit(main())
