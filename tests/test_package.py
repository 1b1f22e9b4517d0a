"""The package as users install it: the wheel carries the Lua scripts and the plugins inside `gateway`, installs
into a fresh venv, and serves from another directory with nothing from the checkout. The Dockerfile's RUN steps
are these same commands (docker itself does not run on this machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import free_port, wait_for_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the bin directory of a fresh venv it is installed in)."""
    tmp = tmp_path_factory.mktemp("package")
    # Built from a clean copy: setuptools keeps a build/ directory beside the sources, and files left in it by an
    # earlier build (a module since removed) would ship in the wheel; nor should a test write into the checkout.
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "var", "*.egg-info", ".*_cache", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp / "dist"), str(source)],
        check=True,
        timeout=300,
    )
    wheel = next((tmp / "dist").glob("gateway-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    bin_dir = tmp / "venv" / "bin"
    subprocess.run(
        [str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)], check=True, timeout=600
    )
    yield wheel, bin_dir


def test_the_wheel_ships_the_scripts_and_plugins_inside_the_package(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in sorted((ROOT / "lua").glob("*.lua")):
        assert f"gateway/lua/{script.name}" in names
    assert {"gateway/plugins/webhook.py", "gateway/plugins/email.py", "gateway/plugins/log.py"} <= names
    assert not any(name.startswith(("plugins/", "lua/")) for name in names)  # no top-level `plugins` package


CONFIG = """
server: {{port: {port}, access_log: false, watch_config: false}}
engine: {{database: {{url: "sqlite:///{tmp}/gw.db"}}}}
identities:
  api_keys: [{{key: wheel-key-0001, user_id: ops, tier: enterprise, admin: true}}]
ratelimit:
  rules: [{{match: "/api/v1/*", windows: ["100/1m"]}}]
notifications:
  channels: {{log: {{plugin: log}}, hook: {{plugin: webhook, url: "http://127.0.0.1:9/x", secret: "whsec_c2VjcmV0"}}}}
  templates: {{t: {{default: {{subject: "s", body: "b"}}}}}}
"""


def test_the_installed_gateway_serves_from_another_directory(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = installed
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(port=port, tmp=tmp_path))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "GATEWAY_LUA_DIR")}
    checked = subprocess.run(
        [str(bin_dir / "gateway"), "check-config", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "site-packages/gateway/lua" in checked.stdout
    process = subprocess.Popen(
        [str(bin_dir / "gateway"), "run", "--config", str(config)], cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": "wheel-key-0001"}) as client:
            assert client.get("/readyz").status_code == 200
            created = client.post("/api/v1/urls", json={"long_url": "https://example.com/"})
            assert created.status_code == 201 and "ratelimit" in created.headers  # the Lua limiter ran
            body = {"user_ids": ["a"], "template_id": "t", "channels": ["log"]}
            assert client.post("/api/v1/notifications", json=body).status_code == 202
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr.decode()
    no_plugins = subprocess.run([str(bin_dir / "python"), "-c", "import plugins"], cwd=tmp_path, env=env)
    assert no_plugins.returncode != 0


def test_check_config_fails_where_run_would_without_the_scripts(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = installed
    config = tmp_path / "gateway.yaml"
    config.write_text("server: {access_log: false}\n")
    env = {**os.environ, "GATEWAY_LUA_DIR": str(tmp_path / "no-scripts-here")}
    env.pop("PYTHONPATH", None)
    checked = subprocess.run(
        [str(bin_dir / "gateway"), "check-config", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 1
    assert "cannot read the Lua scripts" in checked.stderr and "Traceback" not in checked.stderr
    started = time.monotonic()
    ran = subprocess.run(
        [str(bin_dir / "gateway"), "run", "--config", str(config), "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode != 0 and time.monotonic() - started < 30
    assert "cannot read the Lua scripts" in ran.stderr and "Traceback" not in ran.stderr


def test_the_dockerfile_installs_the_wheel_and_copies_no_sources_into_the_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    assert "pip wheel" in text and "pip install /wheels/" in final
    for source in ("COPY gateway", "COPY lua", "COPY plugins", "GATEWAY_LUA_DIR"):
        assert source not in final, source
