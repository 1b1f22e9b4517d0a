"""Running the proxy: retries and passive health, metrics, the access log, graceful shutdown, config reload."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy_fixtures import (
    GatewayProcess,
    UpstreamServer,
    eventually,
    gateway_process,
    gateway_yaml,
    metric,
    scrape,
    serve_gateway,
    settings_for,
)
from tests.services import free_port

RETRIES = "gateway_upstream_retries_total"
ERRORS = "gateway_upstream_errors_total"


async def test_an_idempotent_request_is_retried_on_a_connect_error(upstream: UpstreamServer) -> None:
    name = f"get_{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(
        upstream.url,
        f"- {{name: {name}, match: {{path_prefix: /pair}}, upstream: {name}, strip_prefix: true}}",
        upstreams=f'{name}: {{targets: ["{dead}", "{upstream.url}"], retries: 1}}',
    )
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        first = await client.get(f"{base}/pair/echo")  # the first pick is the dead target
        after_first = await scrape(client, base)
        second = await client.get(f"{base}/pair/echo")
        after_second = await scrape(client, base)

    assert first.status_code == 200
    assert first.json()["path"] == "/echo"
    assert metric(after_first, RETRIES, upstream=name) == 1
    assert metric(after_first, ERRORS, upstream=name) == 0  # a retry that succeeded is not an error
    # Passive health: the dead target is skipped now, so nothing needs retrying.
    assert second.status_code == 200
    assert metric(after_second, RETRIES, upstream=name) == 1


async def test_a_post_is_not_retried_and_the_dead_target_is_then_skipped(upstream: UpstreamServer) -> None:
    name = f"post_{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(
        upstream.url,
        f"- {{name: {name}, match: {{path_prefix: /pair}}, upstream: {name}, strip_prefix: true}}",
        upstreams=f'{name}: {{targets: ["{dead}", "{upstream.url}"], retries: 1}}',
    )
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        failed = await client.post(f"{base}/pair/echo", content=b"not idempotent")
        after_failure = await scrape(client, base)
        # Round robin alone would send every other request to the dead target again.
        later = [await client.post(f"{base}/pair/echo", content=b"not idempotent") for _ in range(4)]
        after_all = await scrape(client, base)

    assert failed.status_code == 502
    assert failed.json()["error"] == "bad_gateway"
    assert metric(after_failure, RETRIES, upstream=name) == 0
    assert metric(after_failure, ERRORS, upstream=name, kind="connect") == 1
    assert [response.status_code for response in later] == [200, 200, 200, 200]
    assert all(response.json()["body_length"] == len(b"not idempotent") for response in later)
    assert metric(after_all, RETRIES, upstream=name) == 0
    assert metric(after_all, ERRORS, upstream=name, kind="connect") == 1


async def test_a_kept_alive_connection_the_upstream_dropped_is_replaced() -> None:
    """The upstream answers once per connection, then closes it on the next request (an idle timeout race)."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: drop it unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = settings_for(url, "- {name: flaky, match: {path_prefix: /}, upstream: up}", upstreams="")
    try:
        async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
            responses = [await client.get(f"{base}/again") for _ in range(3)]
    finally:
        server.close()
        await server.wait_closed()

    assert [(response.status_code, response.content) for response in responses] == [(200, b"ok")] * 3
    assert connections >= 3


async def test_metrics_exposition_is_valid_and_bounded(upstream: UpstreamServer) -> None:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    routes = f"""
    - name: {name}
      match: {{path_prefix: /m}}
      upstream: up
      strip_prefix: true
    - name: {name}_dead
      match: {{path_prefix: /dead}}
      upstream: {name}_dead
    """
    settings = settings_for(upstream.url, routes, upstreams=f'{name}_dead: {{targets: ["{dead}"], retries: 0}}')
    marker = uuid.uuid4().hex
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        before = await scrape(client, base)
        for path in (f"/m/echo/{marker}", f"/m/status/404?{marker}", f"/unrouted/{marker}"):
            await client.get(f"{base}{path}")
        failed = await client.get(f"{base}/dead/{marker}")
        slow = asyncio.ensure_future(client.get(f"{base}/m/slow", params={"s": "0.5"}))
        await asyncio.sleep(0.2)
        during = await scrape(client, base)
        assert (await slow).status_code == 200
        text = await scrape(client, base)

    assert failed.status_code == 502
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    output = (check.stdout + check.stderr).decode()
    assert check.returncode == 0, output
    assert not [line for line in output.splitlines() if "error" in line.lower()], output

    assert metric(text, "gateway_requests_total", route=name, method="GET", status="2xx") == 2  # echo and slow
    assert metric(text, "gateway_requests_total", route=name, method="GET", status="4xx") == 1
    assert metric(text, "gateway_requests_total", route=f"{name}_dead", method="GET", status="5xx") == 1
    assert metric(text, "gateway_requests_total", route="unmatched", status="4xx") >= 1
    assert metric(text, "gateway_request_duration_seconds_count", route=name) == 3
    assert metric(text, ERRORS, upstream=f"{name}_dead", kind="connect") == 1
    assert metric(before, ERRORS, upstream=f"{name}_dead", kind="connect") == 0
    # The /metrics scrape itself is in flight, and the slow request was too while it ran.
    assert metric(text, "gateway_requests_in_flight") >= 1
    assert metric(during, "gateway_requests_in_flight") == metric(text, "gateway_requests_in_flight") + 1

    label_values = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert not [value for value in label_values if marker in value or value.startswith("/")], label_values


async def test_access_log_has_one_json_line_per_request(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    settings = settings_for(upstream.url, "- {name: logged, match: {path_prefix: /logged}, upstream: up}")
    ids = {kind: f"{kind}-{uuid.uuid4().hex}" for kind in ("ok", "missing", "post")}
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        await client.get(f"{base}/logged/a?q=1", headers={"X-Request-ID": ids["ok"]})
        await client.get(f"{base}/nowhere", headers={"X-Request-ID": ids["missing"]})
        await client.post(f"{base}/logged/b", content=b"12345", headers={"X-Request-ID": ids["post"]})

        def lines() -> list[dict[str, object]]:
            return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]

        async def all_logged() -> bool:
            return {line["request_id"] for line in lines()} >= set(ids.values())

        assert await eventually(all_logged, timeout=2.0)

    by_id: dict[object, list[dict[str, object]]] = {}
    for line in lines():
        by_id.setdefault(line["request_id"], []).append(line)
    assert all(len(by_id[request_id]) == 1 for request_id in ids.values()), by_id

    ok, missing, post = (by_id[ids[kind]][0] for kind in ("ok", "missing", "post"))
    assert ok["route"] == "logged"
    assert ok["status"] == 200
    assert ok["method"] == "GET"
    assert ok["path"] == "/logged/a"
    assert ok["upstream"] == upstream.url
    assert ok["client"] == "127.0.0.1"
    assert missing["route"] == "unmatched"
    assert missing["status"] == 404
    assert missing["upstream"] is None
    assert post["method"] == "POST"
    assert post["status"] == 200
    for line in (ok, missing, post):
        assert isinstance(line["duration_ms"], float | int)
        assert 0 <= line["duration_ms"] < 2000


SLOW_ROUTE = "- {name: all, match: {path_prefix: /}, upstream: up}"


async def _start_slow_request(
    client: httpx.AsyncClient, gateway: GatewayProcess, upstream: UpstreamServer, seconds: float
) -> asyncio.Future[httpx.Response]:
    """A /slow request through the gateway, returned once the upstream has it."""
    token = uuid.uuid4().hex
    request = asyncio.ensure_future(client.get(f"{gateway.url}/slow", params={"s": str(seconds), "token": token}))

    async def upstream_has_it() -> bool:
        return token in (await upstream.stats())["slow_open"]

    assert await eventually(upstream_has_it, timeout=3.0)
    return request


@pytest.mark.slow
async def test_sigterm_drains_the_request_in_flight(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = gateway_yaml(upstream.url, SLOW_ROUTE, server="drain_timeout: 5s\nwatch_config: false")
    with gateway_process(config, tmp_path) as gateway:
        async with httpx.AsyncClient(timeout=10.0) as client:
            request = await _start_slow_request(client, gateway, upstream, 1.0)
            gateway.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            response = await request
            finished = time.monotonic() - signalled
        code = await gateway.wait_exit(timeout=5.0)
        exited = time.monotonic() - signalled

    assert response.status_code == 200
    assert response.text == "slept 1.0s\n"
    assert finished < 2.0
    assert exited < 3.0, f"the gateway took {exited:.1f}s to exit after its last request"
    assert code == 0, gateway.stderr()


@pytest.mark.slow
async def test_a_request_still_running_when_the_drain_ends_gets_a_json_503(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = gateway_yaml(upstream.url, SLOW_ROUTE, server="drain_timeout: 1s\nwatch_config: false")
    with gateway_process(config, tmp_path) as gateway:
        async with httpx.AsyncClient(timeout=10.0) as client:
            # A keep-alive connection a load balancer's health checks would use, opened before the signal.
            assert (await client.get(f"{gateway.url}/readyz")).status_code == 200
            request = await _start_slow_request(client, gateway, upstream, 5.0)
            gateway.process.send_signal(signal.SIGTERM)
            response = await request
        code = await gateway.wait_exit(timeout=5.0)
    stderr = gateway.stderr()

    assert response.status_code == 503
    assert response.json()["error"] == "shutting_down" and response.headers["retry-after"] == "1"
    assert "Traceback" not in stderr and "Internal Server Error" not in stderr
    assert '"status":503' in (tmp_path / "gateway.stdout").read_text()
    assert code == 0


async def test_readiness_answers_503_once_the_drain_begins() -> None:
    from gateway.app import create_app
    from gateway.settings import parse_settings

    app = create_app(parse_settings("server: {access_log: false}\nengine: {database: {url: 'sqlite:///:memory:'}}"))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            ready = await client.get("/readyz")
            app.begin_drain()
            draining = await client.get("/readyz")
    finally:
        await app.shutdown()
    assert ready.status_code == 200
    assert draining.status_code == 503 and draining.json()["status"] == "draining"


async def test_sigterm_exit_status_is_0(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = gateway_yaml(upstream.url, SLOW_ROUTE, server="drain_timeout: 5s\nwatch_config: false")
    with gateway_process(config, tmp_path) as gateway:
        gateway.process.send_signal(signal.SIGTERM)
        code = await gateway.wait_exit(timeout=5.0)

    assert code == 0, gateway.stderr()


ONE = "- {name: one, match: {path_prefix: /one}, upstream: up, strip_prefix: true}"
TWO = "- {name: two, match: {path_prefix: /two}, upstream: up, strip_prefix: true}"


async def _route_serves(client: httpx.AsyncClient, url: str) -> bool:
    response = await client.get(url)
    return response.status_code == 200 and response.json()["path"] == "/echo"


@pytest.mark.slow
async def test_sighup_reloads_a_valid_config_and_refuses_an_invalid_one(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    server = "watch_config: false\ndrain_timeout: 1s"
    with gateway_process(gateway_yaml(upstream.url, ONE, server=server), tmp_path) as gateway:
        async with httpx.AsyncClient() as client:
            assert await _route_serves(client, f"{gateway.url}/one/echo")
            assert (await client.get(f"{gateway.url}/two/echo")).status_code == 404

            gateway.config_path.write_text(gateway_yaml(upstream.url, f"{ONE}\n{TWO}", server=server))
            gateway.process.send_signal(signal.SIGHUP)
            assert await eventually(lambda: _route_serves(client, f"{gateway.url}/two/echo"), timeout=3.0)

            invalid = gateway_yaml(
                upstream.url,
                f"{ONE}\n{TWO}\n- {{name: three, match: {{path_prefix: /three}}, upstream: nowhere}}",
                server=server,
            )
            bad_line = next(i for i, line in enumerate(invalid.splitlines(), 1) if "nowhere" in line)
            gateway.config_path.write_text(invalid)
            gateway.process.send_signal(signal.SIGHUP)

            async def refused() -> bool:
                return "configuration refused" in gateway.stderr()

            assert await eventually(refused, timeout=3.0), gateway.stderr()
            assert await _route_serves(client, f"{gateway.url}/two/echo")
            assert await _route_serves(client, f"{gateway.url}/one/echo")
            assert (await client.get(f"{gateway.url}/three/echo")).status_code == 404
            text = await scrape(client, gateway.url)

    stderr = gateway.stderr()
    assert f"{gateway.config_path.resolve()}:{bad_line}: routes[2].upstream: unknown upstream 'nowhere'" in stderr
    assert metric(text, "gateway_config_reloads_total", result="applied") == 1
    assert metric(text, "gateway_config_reloads_total", result="refused") == 1


@pytest.mark.slow
async def test_the_config_watcher_applies_an_edit_without_a_signal(upstream: UpstreamServer, tmp_path: Path) -> None:
    server = "watch_config: true\ndrain_timeout: 1s"
    with gateway_process(gateway_yaml(upstream.url, ONE, server=server), tmp_path) as gateway:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{gateway.url}/two/echo")).status_code == 404
            gateway.config_path.write_text(gateway_yaml(upstream.url, f"{ONE}\n{TWO}", server=server))
            edited = time.monotonic()
            assert await eventually(lambda: _route_serves(client, f"{gateway.url}/two/echo"), timeout=3.0)
            assert time.monotonic() - edited < 3.0
            assert await _route_serves(client, f"{gateway.url}/one/echo")
