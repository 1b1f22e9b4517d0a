"""Shared pieces of the proxy tests: the upstream process, the gateway in-process or as a process, metric reading.

Test modules import what they use from here; pytest picks up the imported fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import server_options
from gateway.settings import parse_settings
from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class UpstreamServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/stats")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    """tests/upstream_app.py under uvicorn, one process for the session (tests/conftest.py imports this fixture)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.upstream_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
    )
    try:
        wait_for_port(port)
        yield UpstreamServer(port=port, process=process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def settings_for(upstream_url: str, routes: str, *, server: str = "", upstreams: str = "") -> Settings:
    """Settings with an upstream `up` on `upstream_url`, extra YAML for `server:` and `upstreams:`, and routes."""
    return parse_settings(gateway_yaml(upstream_url, routes, server=server, upstreams=upstreams))


def gateway_yaml(upstream_url: str, routes: str, *, server: str = "", upstreams: str = "") -> str:
    return (
        "server:\n  access_log: true\n"
        + _indent(server, 2)
        # The proxy needs no durable state: keep the database off the disk (and out of the repository).
        + 'engine:\n  database:\n    url: "sqlite:///:memory:"\n'
        + "upstreams:\n"
        + f'  up:\n    targets: ["{upstream_url}"]\n'
        + _indent(upstreams, 2)
        + "routes:\n"
        + _indent(routes, 2)
    )


def _indent(text: str, spaces: int) -> str:
    lines = text.strip("\n").splitlines()
    if not lines:
        return ""
    common = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "".join(" " * spaces + line[common:] + "\n" for line in lines)


@contextlib.asynccontextmanager
async def serve_gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway under a real uvicorn.Server on a free port, in the test's own event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", **server_options(settings.server)
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class GatewayProcess:
    """`python -m gateway run` on a config file; stdout (the access log) and stderr go to files."""

    process: subprocess.Popen[bytes]
    port: int
    config_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status_field(self, name: str) -> int:
        """A kB field of /proc/<pid>/status (VmHWM, VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(name)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway (pid {self.pid}) did not exit within {timeout}s")
            await asyncio.sleep(0.02)
        return self.process.returncode


@contextlib.contextmanager
def gateway_process(yaml_text: str, directory: Path) -> Iterator[GatewayProcess]:
    config_path = directory / "gateway.yaml"
    config_path.write_text(yaml_text)
    stdout_path = directory / "gateway.stdout"
    stderr_path = directory / "gateway.stderr"
    port = free_port()
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config_path), "--port", str(port)],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    gateway = GatewayProcess(process=process, port=port, config_path=config_path, stderr_path=stderr_path)
    try:
        try:
            wait_for_port(port, timeout=20)
        except RuntimeError:
            raise RuntimeError(f"the gateway did not start:\n{gateway.stderr()}") from None
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition; 0 when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


async def scrape(client: httpx.AsyncClient, base_url: str) -> str:
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200
    return response.text


async def eventually(check: Any, timeout: float, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy, for at most `timeout` seconds; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


async def raw_exchange(base_url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` as is on a new connection and read until the server closes it."""
    url = httpx.URL(base_url)
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()


def split_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (lower-case names, in order) and the bytes after the blank line of a raw response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(status_line.split()[1]), headers, rest


def echoed(data: dict[str, Any], name: str) -> list[str]:
    """Every value the echo endpoint saw for header `name`, in order."""
    return [value for key, value in data["headers"] if key == name.lower()]


@contextlib.asynccontextmanager
async def raw_upstream(answer: bytes, *, close_after: bool = False) -> AsyncIterator[str]:
    """An upstream that answers every request head with the bytes `answer`, as they are; yields its URL.

    With `close_after` it closes the connection after each answer (the end of a close-delimited body).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
