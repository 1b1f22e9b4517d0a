"""Configuration mistakes: every error of a file in one run, each `file:line: field: message`, never a traceback,
from both `gateway check-config` and `gateway run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANY_MISTAKES = """\
server:
  port: "${GATEWAY_TEST_UNSET_PORT}"
  max_body_bytes: lots
upstreams:
  app: {targets: ["http://127.0.0.1:9000"]}
  broken: {targets: ["ftp://x"]}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: missing}
  - {name: b, match: {path_prefix: /b}, upstream: app, colour: blue}
  - {name: c, match: {path_prefix: /c}, upstream: broken}
ratelimit:
  rules:
    - {match: "/x", windows: ["1/1m"], tier: gold}
"""


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TEST_UNSET_PORT"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_every_error_of_a_file_is_reported_in_one_run(tmp_path: Path, command: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MANY_MISTAKES)
    result = gateway(command, *(["--config"] if command == "run" else []), str(path), cwd=tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}:2: server.port: environment variable GATEWAY_TEST_UNSET_PORT is not set and has no default",
        f"{path}:3: server.max_body_bytes: not a size: 'lots' (use e.g. 1048576, 512KiB, 10MB)",
        f"{path}:6: upstreams.broken.targets: target must be an http:// or https:// URL, got 'ftp://x'",
        f"{path}:8: routes[0].upstream: unknown upstream 'missing'",
        f"{path}:9: routes[1].colour: unknown key",
        f"{path}:13: ratelimit.rules[0].tier: unknown tier 'gold' (declared: anonymous, free, premium, enterprise)",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b"server:\n  host: !!python/name:os.system\n",
            ":2: server.host: unsupported YAML tag or value 'tag:yaml.org,2002:python/name:os.system'",
            id="python-tag",
        ),
        pytest.param(
            b"server:\n  host: !custom x\n", ":2: server.host: unsupported YAML tag or value '!custom'", id="tag"
        ),
        pytest.param(b"server:\n  port: 80\n  host: caf\xe9\n", ":3: the file is not UTF-8 (byte 0xe9)", id="latin-1"),
        pytest.param(b"server:\n  workers: .inf\n", ":2: server.workers: Input should be a finite number", id="inf"),
        pytest.param(b"server: [1, 2\n", ":2: invalid YAML: expected ',' or ']', but got '<stream end>'", id="syntax"),
        pytest.param(b"- just\n- a list\n", ":1: the configuration must be a mapping of sections", id="not-a-mapping"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_yaml_is_one_line_never_a_traceback(tmp_path: Path, command: str, content: bytes, expected: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(content)
    result = gateway(command, *(["--config"] if command == "run" else []), str(path), cwd=tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{path}{expected}"]
