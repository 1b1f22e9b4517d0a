"""Instructions per proxied request, counted by callgrind: what a rate-limit rule costs, whatever the host does.

    .venv/bin/python -m bench.instructions                 # 1,000 requests to each gateway, about 3 minutes
    .venv/bin/python -m bench.instructions --requests 300  # quicker

Throughput on this shared 2-core machine moves by 2x within minutes, so a limiter's cost is also counted in
instructions, which do not move: each gateway (no rule, one embedded rule, one Redis rule, as bench.proxy runs
them) runs under `valgrind --tool=callgrind`, its counters are zeroed once it serves, one keep-alive client sends
`--requests` GETs through it to an nginx upstream, and the count is dumped. Every answer is checked (200 and the
upstream's body), and a limiter row counts only if /metrics says each of its decisions was made.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.proxy import (
    GATEWAY_YAML,
    RATELIMIT_YAML,
    REDIS_ENGINE_YAML,
    UNMADE,
    Servers,
    decisions_by_result,
    free_port,
    upstream_command,
)
from tests import services

_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def count(group: Servers, tmp: Path, name: str, yaml_text: str, requests: int, reference: bytes) -> tuple[int, str]:
    """Instructions per request through the gateway configured by `yaml_text`, and a note ("" when valid)."""
    port = free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(yaml_text.replace("{port}", str(port)))
    out = tmp / f"{name}.callgrind"
    gateway = Path(sys.executable).parent / "gateway"
    # JIT-compiled code (LuaJIT's) is rewritten in place: valgrind must check for that outside the stack too.
    argv = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}"]
    group.start(name, [*argv, str(gateway), "run", "--config", str(config), "--port", str(port)], port, wait_s=300)
    pid = group.procs[name].pid
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(20):  # warm: connections to the upstream, caches, the JIT
            conn.request("GET", "/hello")
            conn.getresponse().read()
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
        for _ in range(requests):
            conn.request("GET", "/hello")
            response = conn.getresponse()
            if response.status != 200 or response.read() != reference:
                return 0, f"wrong answer: {response.status}"
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    finally:
        conn.close()
    decisions = decisions_by_result(port) if "ratelimit" in yaml_text else {}
    group.stop(name)
    dumps = sorted(tmp.glob(f"{name}.callgrind*"), key=lambda path: path.stat().st_mtime)
    totals = [int(found.group(1)) for path in dumps if (found := _TOTAL.search(path.read_bytes()))]
    # The dump asked for covers the requests only; the one written at exit covers the stop.
    measured = next((total for path, total in zip(dumps, totals, strict=False) if path != out), 0)
    unmade = {result: n for result, n in decisions.items() if result in UNMADE and n}
    if "ratelimit" in yaml_text and (not decisions or unmade):
        return measured // requests, f"INVALID: {unmade or 'no decisions counted'}"
    return measured // requests, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here, for callgrind_annotate")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install -y valgrind)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    rows: list[tuple[str, int, str]] = []
    try:
        with contextlib.ExitStack() as stack:
            group = Servers(tmp)
            stack.callback(group.stop_all)
            redis = stack.enter_context(services.redis_server())
            upstream_port = free_port()
            pinned = argparse.Namespace(pin=True, path="/hello")
            group.start("upstream", upstream_command(pinned, tmp, upstream_port), upstream_port)
            reference = http.client.HTTPConnection("127.0.0.1", upstream_port)
            reference.request("GET", "/hello")
            body = reference.getresponse().read()
            reference.close()
            base = GATEWAY_YAML.format(port="{port}", upstream_port=upstream_port)
            configs = [
                ("gateway, no rule", base),
                ("gateway + one embedded rule", base + RATELIMIT_YAML),
                ("gateway + one Redis rule", base + REDIS_ENGINE_YAML.format(redis_url=redis.url) + RATELIMIT_YAML),
            ]
            for index, (name, text) in enumerate(configs):
                started = time.monotonic()
                per_request, note = count(group, tmp, f"g{index}", text, args.requests, body)
                rows.append((name, per_request, note))
                print(f"  {name}: {per_request:,} instructions a request {note} ({time.monotonic() - started:.0f}s)")
    finally:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("*.callgrind*"):
                shutil.copy(dump, args.keep / dump.name)
        shutil.rmtree(tmp, ignore_errors=True)
    base_count = rows[0][1]
    print(f"\nGET /hello through each gateway, {args.requests} requests on one keep-alive connection, callgrind")
    print(f"{'name':<32}{'instructions/request':>22}{'vs no rule':>14}")
    for name, per_request, note in rows:
        versus = f"+{per_request / base_count - 1:.0%}" if base_count and per_request != base_count else "-"
        print(f"{name:<32}{per_request:>22,}{versus:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
