"""Proxy throughput on loopback: wrk straight at the example upstream, then through each proxy in turn.

    .venv/bin/python -m bench.proxy                          # GET /hello, wrk -t1 -c50 -d10s --latency
    .venv/bin/python -m bench.proxy --path /bytes/1048576    # a 1 MiB download through each
    .venv/bin/python -m bench.proxy --pin --repeat 3         # per core: each proxy on CPU 0, the rest on CPU 1

With --pin, every proxy runs alone on CPU 0 (taskset) while wrk, the upstream and Redis share CPU 1, and the
upstream is nginx answering `return 200` when nginx is installed: the figures are per proxy core, and only
ratios from one run compare (other work on the host moves every row).

Compared: direct, the naive Starlette proxies of bench/naive_proxies.py (aiohttp, httpx, httpx over the
httpx-aiohttp transport), the gateway (`gateway run`) and nginx with a keepalive upstream when installed.
Every Python server is uvicorn with 1 worker, uvloop, httptools and no access log; nginx runs 1 worker.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from tests import services

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "naive starlette+aiohttp"
#: Decision results that mean no decision was made: a limiter figure with any of them measured no limiting.
UNMADE = frozenset({"failed_open", "failed_closed", "overloaded", "overloaded_closed"})
TARGET_RATIO = 1.5
#: What one rate-limit rule may cost the proxy, by engine (throughput share), and at p99.
LIMITER_BUDGET = {"embedded": 0.10, "redis": 0.05}
LIMITER_P99_BUDGET_MS = 2.0
UVICORN = [
    "-m",
    "uvicorn",
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--no-access-log",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--log-level",
    "warning",
]

GATEWAY_YAML = """\
server:
  host: 127.0.0.1
  port: {port}
  access_log: false
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - name: app
    match: {{path_prefix: /}}
    upstream: app
"""

# The limiter variants: one rule every request matches, high enough never to refuse, so each request pays for
# one full decision (both windows) and the proxy work stays the same.
RATELIMIT_YAML = """\
ratelimit:
  rules:
    - {match: "/**", windows: ["100000000/1m", "1000000000/1d"]}
"""
REDIS_ENGINE_YAML = """\
engine:
  kind: redis
  redis: {{url: "{redis_url}"}}
"""

NGINX_UPSTREAM_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{ return 200 "Hello, world!\\n"; }}
    }}
}}
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    # Keeps big responses in memory buffers: the Python proxies never touch the disk either.
    proxy_max_temp_file_size 0;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


# A server's command line, from its own port and the upstream's.
Command = Callable[[int, int], list[str]]


class Unavailable(Exception):
    """A server that could not be started here: its row is skipped, the run goes on."""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    transfer_mb_per_s: float
    latency_ms: dict[str, float]
    non_2xx_3xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


@dataclass
class Target:
    key: str
    name: str
    command: Command | None


@dataclass
class Row:
    name: str
    result: WrkResult | None = None
    note: str = ""
    detail: str = ""
    command: list[str] = field(default_factory=list)
    #: For limiter rows: gateway_ratelimit_decisions_total by result after the run, read from /metrics.
    decisions: dict[str, float] = field(default_factory=dict)
    #: One wrk run per round, in round order: every row's run i was measured in the same round i.
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def invalid(self) -> str | None:
        """Why a limiter row's figure does not count: some decisions were not made (failed open, or shed)."""
        unmade = {k: int(v) for k, v in self.decisions.items() if k in UNMADE and v}
        if self.name.startswith("gateway + limiter") and self.result is not None:
            if not self.decisions:
                return "no decisions counted in /metrics"
            if unmade:
                return ", ".join(f"{count} {result}" for result, count in unmade.items())
        return None


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_UNITS_MB = {"B": 1 / 1_048_576, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0, "TB": 1_048_576.0}


def parse_wrk(text: str) -> WrkResult:
    """Reads wrk's plain report; `--latency` adds the 50/75/90/99% distribution."""
    totals = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if totals is None or rps is None:
        raise ValueError(f"unexpected wrk output:\n{text}")
    latency = {
        f"p{pct}": float(value) * _UNITS_MS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests=int(totals.group(1)),
        seconds=float(totals.group(2)) * _UNITS_MS[totals.group(3)] / 1000,
        requests_per_s=float(rps.group(1)),
        transfer_mb_per_s=float(transfer.group(1)) * _UNITS_MB[transfer.group(2)] if transfer else 0.0,
        latency_ms=latency,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Servers:
    """Starts each server in its own process group so that stopping it also stops its children (nginx workers)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        wait_s: float = 20.0,
    ) -> None:
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]  # children (nginx workers, uvicorn's) inherit it
        with self.log_path(name).open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.procs.pop(name)
                raise Unavailable(f"exited with code {proc.returncode}: {self.log_tail(name)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop(name)
        raise Unavailable(f"nothing listened on port {port} after {wait_s:g} s: {self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while a child of it lives on in the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@contextmanager
def servers(logs: Path) -> Iterator[Servers]:
    group = Servers(logs)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield group
    finally:
        group.stop_all()
        signal.signal(signal.SIGTERM, previous)


#: With --pin: the proxy measured owns CPU 0; wrk, the upstream and Redis share CPU 1.
PROXY_CPUS, LOAD_CPUS = "0", "1"


def wrk_argv(args: argparse.Namespace, url: str, duration: str) -> list[str]:
    pin = ["taskset", "-c", LOAD_CPUS] if args.pin else []
    return [*pin, "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}", "--latency", url]


def run_wrk(args: argparse.Namespace, port: int) -> WrkResult:
    url = f"http://127.0.0.1:{port}{args.path}"
    if args.warmup and args.warmup != "0":
        subprocess.run(wrk_argv(args, url, args.warmup), capture_output=True, check=True)
    return parse_wrk(
        subprocess.run(wrk_argv(args, url, args.duration), capture_output=True, text=True, check=True).stdout
    )


def median_run(runs: list[WrkResult]) -> WrkResult:
    # The median run: a neighbour's burst of CPU on the shared cores spoils one run, not the figure.
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]


def naive_command(app: str) -> Command:
    return lambda port, upstream_port: [sys.executable, *UVICORN, "--port", str(port), f"bench.naive_proxies:{app}"]


def gateway_command(tmp: Path, extra_yaml: str = "", name: str = "gateway") -> Command:
    def command(port: int, upstream_port: int) -> list[str]:
        binary = Path(sys.executable).parent / "gateway"
        if not binary.exists():
            raise Unavailable(f"{binary} does not exist")
        config = tmp / f"{name}.yaml"
        config.write_text(GATEWAY_YAML.format(port=port, upstream_port=upstream_port) + extra_yaml)
        return [str(binary), "run", "--config", str(config), "--port", str(port)]

    return command


def nginx_command(tmp: Path) -> Command:
    def command(port: int, upstream_port: int) -> list[str]:
        binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
        if binary is None:
            raise Unavailable("nginx is not installed (apt-get install -y nginx-light)")
        directory = tmp / "nginx"
        directory.mkdir(exist_ok=True)
        # Workers run as an unprivileged user when started as root; they must reach their temp directories.
        directory.chmod(0o755)
        tmp.chmod(0o755)
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream_port=upstream_port))
        return [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]

    return command


def upstream_command(args: argparse.Namespace, tmp: Path, port: int) -> list[str]:
    """The example upstream; with --pin, nginx's `return 200` (it must not be the bottleneck on one core)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not args.pin or binary is None or args.path != "/hello":
        return [sys.executable, *UVICORN, "--port", str(port), "examples.upstream:app"]
    directory = tmp / "nginx-upstream"
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    tmp.chmod(0o755)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_UPSTREAM_CONF.format(dir=directory, port=port))
    return [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]


def measure(args: argparse.Namespace) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    targets = [
        Target("direct", "direct", None),
        Target("aiohttp", BASELINE, naive_command("aiohttp_app")),
        Target("httpx", "naive starlette+httpx", naive_command("httpx_app")),
        Target("httpx-aiohttp", "naive starlette+httpx-aiohttp", naive_command("httpx_aiohttp_app")),
        Target("gateway", "gateway", gateway_command(tmp)),
        Target("gateway-rl", "gateway + limiter (embedded)", gateway_command(tmp, RATELIMIT_YAML, "rl")),
        Target("gateway-rl-redis", "gateway + limiter (redis)", None),
        Target("nginx", "nginx", nginx_command(tmp)),
    ]
    if importlib.util.find_spec("httpx_aiohttp") is None:
        print("naive starlette+httpx-aiohttp: skipped, httpx-aiohttp is not installed")
        targets = [t for t in targets if t.key != "httpx-aiohttp"]
    if args.only:
        targets = [t for t in targets if t.key in {*args.only, "direct", "aiohttp"}]
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run: something else is using the cores")

    rows: list[Row] = []
    try:
        with servers(tmp) as group, contextlib.ExitStack() as stack:
            if any(t.key == "gateway-rl-redis" for t in targets):
                redis = stack.enter_context(services.redis_server())
                if args.pin and redis.process is not None:
                    os.sched_setaffinity(redis.process.pid, {int(LOAD_CPUS)})
                redis_yaml = REDIS_ENGINE_YAML.format(redis_url=redis.url) + RATELIMIT_YAML
                targets = [
                    Target(t.key, t.name, gateway_command(tmp, redis_yaml, "rl-redis"))
                    if t.key == "gateway-rl-redis"
                    else t
                    for t in targets
                ]
            upstream_port = free_port()
            upstream_argv = upstream_command(args, tmp, upstream_port)
            print("upstream:", " ".join(upstream_argv))
            group.start("upstream", upstream_argv, upstream_port, cpus=LOAD_CPUS if args.pin else None)
            ref_status, reference = fetch(upstream_port, args.path)
            if not 200 <= ref_status < 300:
                raise SystemExit(f"the upstream answers {ref_status} to GET {args.path}: pick a path that answers 2xx")
            print(f"reference: GET {args.path} -> {ref_status}, {len(reference)} bytes")
            print("wrk:", " ".join(wrk_argv(args, "<url>", args.duration)), f"(after a {args.warmup} warm-up)\n")
            # Every server is up at once and each round measures each in turn, so that a slow spell of the host
            # (this machine's speed moves by 2x within minutes) falls on every row of a round, not on one row.
            started = [
                (target, *start_one(args, group, target, upstream_port, (ref_status, reference))) for target in targets
            ]
            for round_number in range(args.repeat):
                if args.repeat > 1:
                    print(f"round {round_number + 1} of {args.repeat}")
                for target, row, port in started:
                    if port is not None and not row.note:
                        try:
                            row.runs.append(run_wrk(args, port))
                        except (OSError, subprocess.CalledProcessError, ValueError) as exc:
                            row.note = f"failed: {exc}"
                        else:
                            print(f"  {target.name}: {_summary_of(row.runs[-1])}")
            for target, row, port in started:
                if row.runs and not row.note:
                    row.result = median_run(row.runs)
                    if target.key.startswith("gateway-rl") and port is not None:
                        row.decisions = decisions_by_result(port)
                if target.command is not None:
                    group.stop(target.key)
                rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def start_one(
    args: argparse.Namespace, group: Servers, target: Target, upstream_port: int, reference: tuple[int, bytes]
) -> tuple[Row, int | None]:
    """The target's server started and checked against the reference answer; its port, or None with a note."""
    row = Row(target.name)
    port = upstream_port
    try:
        if target.command is not None:
            port = free_port()
            row.command = target.command(port, upstream_port)
            print(f"{target.name}: {' '.join(row.command)}")
            env = {"UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}"}
            group.start(target.key, row.command, port, env=env, cpus=PROXY_CPUS if args.pin else None)
        status, body = fetch(port, args.path)
        if (status, body) != reference:
            # A proxy answering wrongly must not get a throughput figure.
            row.note = f"wrong answer: {status}, {len(body)} bytes, sha256 {_sha(body)} (want {_sha(reference[1])})"
    except Unavailable as exc:
        row.note, row.detail = "not available", str(exc)
        return row, None
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        row.note = f"failed: {exc}"
        return row, None
    if row.note:
        print(f"  {target.name}: {row.note}")
    return row, port


def decisions_by_result(port: int) -> dict[str, float]:
    """gateway_ratelimit_decisions_total summed by result, from the gateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = fetch(port, "/metrics")
    totals: dict[str, float] = {}
    if status != 200:
        return totals
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "gateway_ratelimit_decisions_total":
                result = sample.labels["result"]
                totals[result] = totals.get(result, 0.0) + sample.value
    return totals


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _summary_of(r: WrkResult) -> str:
    return f"{r.requests_per_s:.0f} req/s, p50 {r.latency_ms.get('p50', 0):.2f} ms, errors {r.errors}"


def report(rows: list[Row], args: argparse.Namespace) -> bool | None:
    """Prints the table and the target line; returns whether the target is met, None when it cannot be judged."""
    base = next((r.result for r in rows if r.name == BASELINE and r.result and r.result.errors == 0), None)
    header = f"{'name':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'MB/s':>9}{'errors':>8}{'vs aiohttp':>12}"
    print(
        f"\nGET {args.path}, wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency, "
        + (
            "each proxy pinned to CPU 0, wrk/upstream/Redis on CPU 1"
            if args.pin
            else f"{os.cpu_count()} cores shared by wrk, proxy and upstream"
        )
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        r = row.result
        if r is None:
            print(f"{row.name:<32}{row.note}")
            continue
        if row.invalid:
            print(f"{row.name:<32}INVALID, not a limiter figure: {row.invalid} (of {sum(row.decisions.values()):.0f})")
            continue
        versus = f"{r.requests_per_s / base.requests_per_s:.2f}x" if base else "-"
        if r.errors:
            versus += " (errors)"
        print(
            f"{row.name:<32}{r.requests_per_s:>10.0f}{r.latency_ms.get('p50', 0):>9.2f}"
            f"{r.latency_ms.get('p99', 0):>9.2f}{r.transfer_mb_per_s:>9.1f}{r.errors:>8}{versus:>12}"
        )

    gateway = next((r for r in rows if r.name == "gateway"), None)
    target = f"gateway >= {TARGET_RATIO}x naive Starlette+aiohttp:"
    if gateway is None or base is None:
        print(f"\n{target} n/a ({'gateway not measured' if base else 'no clean baseline'})")
        return None
    if gateway.result is None:
        print(f"\n{target} n/a (gateway: {gateway.note})")
        return None
    ratio = gateway.result.requests_per_s / base.requests_per_s
    met = ratio >= TARGET_RATIO and gateway.result.errors == 0
    extra = f", {gateway.result.errors} errors" if gateway.result.errors else ""
    print(f"\n{target} {'PASS' if met else 'FAIL'} ({ratio:.2f}x{extra})")
    for row in rows:
        limited = row.result
        if not row.name.startswith("gateway + limiter") or limited is None:
            continue
        if row.invalid:
            print(f"{row.name}: INVALID ({row.invalid}): FAIL")
            met = False
            continue
        # Paired by round (both measured within seconds of each other), then the median round.
        pairs = list(zip(row.runs, gateway.runs, strict=False)) or [(limited, gateway.result)]
        cost = statistics.median(1 - mine.requests_per_s / theirs.requests_per_s for mine, theirs in pairs)
        added_p99 = statistics.median(
            mine.latency_ms.get("p99", 0) - theirs.latency_ms.get("p99", 0) for mine, theirs in pairs
        )
        budget = LIMITER_BUDGET["redis" if "redis" in row.name else "embedded"]
        ok = cost <= budget and added_p99 <= LIMITER_P99_BUDGET_MS and limited.errors == 0
        made = sum(row.decisions.values())
        rounds = f", median of {len(pairs)} rounds" if len(pairs) > 1 else ""
        print(
            f"{row.name}: costs {cost:.0%} of throughput and {added_p99:+.2f} ms at p99{rounds}, {made:.0f} "
            f"decisions all made (budget <= {budget:.0%} and <= {LIMITER_P99_BUDGET_MS:g} ms): "
            f"{'PASS' if ok else 'FAIL'}"
        )
        met = met and ok
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/hello", help="upstream path to GET (default /hello)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", default="10s", help="wrk duration per server (default 10s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", default="2s", help="wrk warm-up before each measurement, 0 for none")
    parser.add_argument(
        "--only",
        action="append",
        choices=["httpx", "httpx-aiohttp", "gateway", "gateway-rl", "gateway-rl-redis", "nginx"],
        help="measure only this server (repeatable); direct and the aiohttp baseline always run",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, each measuring every server in turn; the median run is kept"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when the gateway target fails")
    parser.add_argument("--pin", action="store_true", help="each proxy alone on CPU 0, wrk/upstream/Redis on CPU 1")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")

    try:
        rows = measure(args)
    except KeyboardInterrupt:
        print("\ninterrupted: every server was stopped", file=sys.stderr)
        return 130
    met = report(rows, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {
                        "cores": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                    "wrk": wrk_argv(args, f"http://127.0.0.1:<port>{args.path}", args.duration),
                    "rows": [
                        {**asdict(r), "errors": r.result.errors if r.result else None, "invalid": r.invalid}
                        for r in rows
                    ],
                    "target_met": met,
                },
                indent=2,
            )
        )
    return 1 if args.check and met is False else 0


if __name__ == "__main__":
    sys.exit(main())
