"""`gateway worker` delivers beside a gateway that runs no workers; `gateway dlq list|replay` manage dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from tests.notify.harness import gateway_yaml, notify, settings, wait_for_status, webhook_channel
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import ROOT, serve_gateway

WORKERS = "{in_process: false, lease: 1s, poll_interval: 50ms, tick_interval: 50ms, shutdown_grace: 1s}"


async def gateway_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def start_worker(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "worker", "--config", str(config), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    return stderr.decode()


async def test_worker_and_dead_letter_commands(sqlite_yaml: str, tmp_path: Path) -> None:
    healthy = False
    async with webhook_receiver(lambda n: 200 if healthy else 400) as receiver:
        text = gateway_yaml(sqlite_yaml, channels=webhook_channel(receiver.url), workers=WORKERS)
        config = tmp_path / "gateway.yaml"
        config.write_text(text)
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            body = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "A"}}
            notification_id = (await notify(client, base, body)).json()["notification_id"]
            await asyncio.sleep(0.3)
            assert receiver.requests == []  # the gateway runs no workers

            worker = await start_worker(config)
            await wait_for_status(client, base, notification_id, "failed", timeout=20)  # a 400 is permanent
            assert "consuming webhook (sqlite queue)" in await stop(worker)

            code, out, _ = await gateway_cli("dlq", "list", "--config", str(config))
            assert code == 0
            entries = [json.loads(line) for line in out.splitlines()]
            assert [(e["notification_id"], e["user_id"], e["attempts"]) for e in entries] == [
                (notification_id, "alice", 1)
            ]
            assert "HTTP 400" in entries[0]["error"]

            healthy = True
            code, out, _ = await gateway_cli("dlq", "replay", entries[0]["id"], "--config", str(config))
            assert (code, out.strip()) == (0, f"{entries[0]['id']}: requeued")
            code, _, err = await gateway_cli("dlq", "replay", entries[0]["id"], "--config", str(config))
            assert code == 1 and "no dead-letter entry" in err

            worker = await start_worker(config)
            await wait_for_status(client, base, notification_id, "delivered", timeout=20)
            await stop(worker)
    assert len(receiver.applied) == 1 and len(receiver.requests) == 2
