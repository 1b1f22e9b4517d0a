"""`gateway run`, `gateway check-config`, `gateway --version`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.exceptions import ConfigError
from gateway.version import __version__

if TYPE_CHECKING:
    from gateway.config import Settings

CONFIG_ENV = "GATEWAY_CONFIG"
DEFAULT_CONFIG = Path("config/gateway.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the gateway")
    run.add_argument("--config", help=f"YAML file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} if present)")
    run.add_argument("--host", help="overrides server.host")
    run.add_argument("--port", type=int, help="overrides server.port")
    run.add_argument("--workers", type=int, help="overrides server.workers")

    check = commands.add_parser("check-config", help="validate a YAML file: exit 0, or print every error and exit 1")
    check.add_argument("path")

    worker = commands.add_parser("worker", help="deliver notifications from the channel queues (scale-out workers)")
    worker.add_argument("--config", help="YAML file (as for run)")
    dlq = commands.add_parser("dlq", help="list or replay dead-lettered notifications")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("id", nargs="?", help="the entry to replay")
    dlq.add_argument("--config", help="YAML file (as for run)")
    dlq.add_argument("--limit", type=int, default=100)

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command in ("worker", "dlq"):
        return notify_command(args)
    return run_server(args.config, args.host, args.port, args.workers)


def check_config(path: str) -> int:
    from gateway.engines.scripts import check_scripts
    from gateway.settings import load_settings

    # Warnings (a legacy spelling read in its old meaning) go to stderr beside the errors.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        load_settings(path)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    try:
        # `run` needs the Lua scripts as much as the configuration: fail here where it would fail.
        scripts = check_scripts()
    except OSError as exc:
        print(f"cannot read the Lua scripts: {exc} (GATEWAY_LUA_DIR or the installed package)", file=sys.stderr)
        return 1
    print(f"{path}: ok (scripts from {scripts})")
    return 0


def _settings(path: str | None) -> Settings | None:
    """The settings at `path` (built-in defaults without one), or None after printing every error."""
    from gateway.settings import Settings, load_settings

    try:
        return load_settings(path) if path else Settings()
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def notify_command(args: argparse.Namespace) -> int:
    from gateway.notify import commands as notify

    settings = _settings(_config_path(args.config))
    if settings is None:
        return 2
    if args.command == "worker":
        configure_logging()
    action, entry_id, limit = getattr(args, "action", None), getattr(args, "id", None), getattr(args, "limit", 100)
    return notify.main(args.command, settings, action=action, entry_id=entry_id, limit=limit)


def _config_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    return str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None


def configure_logging() -> None:
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("gateway")
    root.addHandler(errors)
    root.setLevel(logging.INFO)
    access = logging.getLogger("gateway.access")
    access.propagate = False
    lines = logging.StreamHandler(sys.stdout)
    lines.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(lines)
    # httpx logs every request's full URL at INFO, credentials and query tokens of channel URLs included.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_server(config: str | None, host: str | None, port: int | None, workers: int | None) -> int:
    import uvicorn

    from gateway.engines.scripts import check_scripts
    from gateway.server import server_options

    path = _config_path(config)
    settings = _settings(path)
    if settings is None:
        return 2
    try:
        check_scripts()
    except OSError as exc:
        print(f"cannot read the Lua scripts: {exc} (GATEWAY_LUA_DIR or the installed package)", file=sys.stderr)
        return 2
    server = settings.server
    workers = workers or server.workers
    if path:
        os.environ[CONFIG_ENV] = str(Path(path).resolve())
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here, and /metrics in any worker aggregates them all.
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    configure_logging()
    if workers == 1:
        # uvicorn re-raises SIGTERM/SIGINT once it has drained, to reach the previous handler: make that one a
        # no-op, so a graceful shutdown ends with exit status 0 (the multiprocess supervisor exits 0 itself).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, frame: None)
    try:
        uvicorn.run(
            "gateway.app:app_from_environment",
            factory=True,
            host=host or server.host,
            port=port if port is not None else server.port,
            workers=workers,
            **server_options(server),
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
