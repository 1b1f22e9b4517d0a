from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.units import parse_duration, parse_size
from gateway.exceptions import ConfigError
from gateway.settings import parse_settings
from tests.shipped import shipped_settings

ROOT = Path(__file__).resolve().parent.parent

VALID = """\
server:
  port: ${GW_TEST_PORT:-9999}
upstreams:
  app:
    targets: ["http://127.0.0.1:9000"]
routes:
  - name: app
    match: {path_prefix: /app}
    upstream: app
"""


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="gw.yaml", environ=environ or {})
    return caught.value.errors


def test_the_shipped_default_config_is_valid() -> None:
    settings = shipped_settings()
    assert settings.engine.kind == "embedded"
    assert settings.routes[0].upstream in settings.upstreams


def test_environment_substitution_uses_the_variable_then_the_default() -> None:
    assert parse_settings(VALID, environ={}).server.port == 9999
    assert parse_settings(VALID, environ={"GW_TEST_PORT": "7000"}).server.port == 7000


def test_a_variable_without_default_must_be_set() -> None:
    text = VALID.replace("${GW_TEST_PORT:-9999}", "${GW_TEST_PORT}")
    assert errors_of(text) == [
        "gw.yaml:2: server.port: environment variable GW_TEST_PORT is not set and has no default"
    ]


def test_unknown_upstream_names_file_line_and_field() -> None:
    text = VALID + "  - name: billing\n    match: {path: /bill}\n    upstream: billing\n"
    assert errors_of(text) == ["gw.yaml:12: routes[1].upstream: unknown upstream 'billing'"]


def test_unknown_keys_are_errors_at_their_line() -> None:
    text = VALID.replace("    upstream: app\n", "    upstream: app\n    colour: blue\n")
    assert errors_of(text) == ["gw.yaml:10: routes[0].colour: unknown key"]


def test_every_schema_error_is_reported_at_once() -> None:
    text = VALID.replace("path_prefix: /app", "path_prefix: app, methods: [GET, FETCH]").replace(
        '["http://127.0.0.1:9000"]', '["ftp://x"]'
    )
    errors = errors_of(text)
    assert "gw.yaml:5: upstreams.app.targets: target must be an http:// or https:// URL, got 'ftp://x'" in errors
    assert "gw.yaml:8: routes[0].match.path_prefix: must start with '/': 'app'" in errors
    assert "gw.yaml:8: routes[0].match.methods: unknown HTTP method(s): FETCH" in errors


def test_a_missing_field_points_at_its_parent() -> None:
    text = VALID.replace("    upstream: app\n", "")
    assert errors_of(text) == ["gw.yaml:7: routes[0].upstream: missing required field"]


def test_invalid_yaml_names_the_line() -> None:
    (error,) = errors_of("server:\n  port: [1,\n")
    assert error.startswith("gw.yaml:3: invalid YAML")


def test_duplicate_keys_are_refused() -> None:
    assert errors_of("server:\n  port: 1\n  port: 2\n") == ["gw.yaml:3: server.port: duplicate key 'port'"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [pytest.param("500ms", 0.5, id="ms"), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), (2, 2.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("10MiB", 10 * 1024 * 1024), ("10MB", 10_000_000), ("512", 512), (7, 7)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["fast", "-1s", "1w"])
def test_bad_durations_name_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("-", r"\-")):
        parse_duration(bad)


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("upstream: app", "upstream: nope"))
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"{bad}:9: routes[0].upstream: unknown upstream 'nope'" in failed.stderr


def test_version_command() -> None:
    from gateway import __version__

    result = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"gateway {__version__}"


def test_loading_the_configuration_registers_no_metric_and_loads_no_subsystem() -> None:
    """`gateway run` loads the file before it sets up multi-process metrics: nothing may register one first."""
    script = (
        "import sys, prometheus_client, gateway.config, gateway.events\n"
        "names = [n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith('gateway')]\n"
        "loaded = [m for m in sys.modules if m.startswith(('gateway.notify', 'gateway.metrics'))]\n"
        "print(names, loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[] []"
