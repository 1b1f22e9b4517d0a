"""The shipped config/gateway.yaml and the environment scripts/run gives it (var/dev.env), for every test that
loads the file as a newcomer would."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from gateway.config import Settings
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "gateway.yaml"


def dev_environ(
    tmp_path: Path | None = None, upstream: str = "http://127.0.0.1:9000", receiver: str = "http://127.0.0.1:9100"
) -> dict[str, str]:
    """What scripts/run writes into var/dev.env (fresh secrets each time), and where the peers listen."""
    environ = {
        "GATEWAY_DEV_KEY": f"gw_dev_{secrets.token_hex(16)}",
        "SHORTENER_SECRET": secrets.token_hex(24),
        "WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "EXAMPLE_UPSTREAM": upstream,
        "WEBHOOK_URL": f"{receiver}/hook",
    }
    if tmp_path is not None:
        environ["DATABASE_URL"] = f"sqlite:///{tmp_path}/gateway.db"
    return environ


def shipped_settings(tmp_path: Path | None = None, upstream: str = "http://127.0.0.1:9000") -> Settings:
    return load_settings(SHIPPED_CONFIG, environ=dev_environ(tmp_path, upstream))
