"""`gateway run --workers N`: several processes behind one port, and one /metrics that adds them all up."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.proxy_fixtures import UpstreamServer, gateway_process, gateway_yaml, metric


async def test_workers_serve_and_metrics_aggregate_every_worker(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = gateway_yaml(
        upstream.url,
        "- {name: app, match: {path_prefix: /app}, upstream: up, strip_prefix: true}",
        server="workers: 2\nwatch_config: false",
    )
    with gateway_process(config, tmp_path) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            # New connections spread over the workers; each keeps its own counters in the multiprocess directory.
            for _ in range(40):
                async with httpx.AsyncClient(base_url=gateway.url) as fresh:
                    assert (await fresh.get("/app/hello")).status_code == 200
            text = (await client.get("/metrics")).text
        workers = children(gateway.pid)
    assert metric(text, "gateway_requests_total", route="app", method="GET", status="2xx") == 40
    assert len(workers) == 2


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the uvicorn supervisor's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
            found.append(int(stat.parent.name))
    return found
