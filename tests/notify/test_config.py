"""The notifications and hooks sections: validated at load, with errors that name the file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.exceptions import ConfigError
from gateway.settings import parse_settings
from tests.shipped import shipped_settings

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
notifications:
  channels:
    log: {plugin: log}
    email: {plugin: email, sender: gw@example.com}
  templates:
    plain:
      log: {body: "hi {{ name }}"}
    mail:
      email: {subject: "Hi", body: "hi {{ name }}"}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="gw.yaml", environ={})
    return caught.value.errors


def test_the_shipped_config_has_a_log_channel_and_a_hook() -> None:
    settings = shipped_settings()
    assert settings.notifications.channels["log"].plugin == "log"
    assert settings.hooks[0].on == ("ratelimit.exceeded",)  # a bare YAML `on:` key still means "on"
    assert settings.hooks[0].throttle == "1/1m per user_id"


def test_a_valid_section_loads_with_its_defaults() -> None:
    settings = parse_settings(BASE, environ={})
    notifications = settings.notifications
    assert notifications.retries.max_attempts == 3 and notifications.digest_interval == 3600.0
    assert notifications.workers.in_process is True and notifications.channels["email"].options == {
        "sender": "gw@example.com"
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            "hooks:\n  - {on: url.created, notify: {users: [ops], template: nope, channels: [log]}}\n",
            "gw.yaml:11: hooks[0].notify.template: unknown template 'nope'",
            id="hook-template",
        ),
        pytest.param(
            "hooks:\n  - {on: url.created, notify: {users: [ops], template: plain, channels: [fax]}}\n",
            "gw.yaml:11: hooks[0].notify.channels[0]: unknown channel 'fax'",
            id="hook-channel",
        ),
        pytest.param(
            "hooks:\n  - {on: url.created, notify: {users: [ops], template: mail, channels: [log]}}\n",
            "gw.yaml:11: hooks[0].notify.channels[0]: template 'mail' has no body for channel 'log'",
            id="hook-template-part",
        ),
        pytest.param(
            "hooks:\n  - {on: url.exploded, notify: {users: [ops], template: plain, channels: [log]}}\n",
            "unknown event type(s) ['url.exploded']",
            id="hook-event",
        ),
        pytest.param(
            "hooks:\n  - {on: url.created, throttle: lots, notify: {users: [ops], template: plain, channels: [log]}}\n",
            "not a throttle: 'lots'",
            id="hook-throttle",
        ),
    ],
)
def test_hooks_must_name_what_exists(extra: str, expected: str) -> None:
    errors = errors_of(BASE + extra)
    assert any(expected in error for error in errors), errors


def test_templates_must_give_every_part_their_channel_needs() -> None:
    text = BASE.replace('email: {subject: "Hi", body: "hi {{ name }}"}', 'email: {body: "no subject"}')
    assert errors_of(text) == ["gw.yaml:9: notifications.templates.mail.email: channel 'email' needs a 'subject'"]


def test_template_syntax_and_channel_names_are_checked() -> None:
    broken = BASE.replace('log: {body: "hi {{ name }}"}', 'log: {body: "hi {{ name "}')
    errors = errors_of(broken)
    assert any("notifications.templates.plain.log.body" in e and "invalid template" in e for e in errors), errors
    unknown = BASE.replace('log: {body: "hi {{ name }}"}', 'fax: {body: "x"}')
    assert errors_of(unknown) == [
        "gw.yaml:7: notifications.templates.plain.fax: unknown channel 'fax' (declared: log, email)"
    ]


def test_plugins_and_their_options_are_checked_at_load() -> None:
    text = BASE.replace("log: {plugin: log}", "log: {plugin: carrier-pigeon}\n    hook: {plugin: webhook, secret: x}")
    errors = errors_of(text)
    assert any(e.startswith("gw.yaml:3: notifications.channels.log.plugin: unknown plugin") for e in errors), errors
    assert any("notifications.channels.hook.secret" in e for e in errors), errors


UNKNOWN_WHEN_FIELD = """\
hooks:
  - on: ratelimit.exceeded
    when: {tierr: free}
    notify: {users: [ops], template: plain, channels: [log]}
"""


def test_a_when_key_must_be_a_field_of_the_hooks_event() -> None:
    assert errors_of(BASE + UNKNOWN_WHEN_FIELD) == [
        "gw.yaml:12: hooks[0].when.tierr: ratelimit.exceeded events have no field 'tierr' "
        "(fields: user_id, identity_kind, tier, rule, path, limit, window, retry_after)"
    ]


def test_a_when_key_must_be_a_field_of_every_event_the_hook_is_on() -> None:
    hooks = """\
hooks:
  - on: [circuit.opened, circuit.closed]
    when: {breaker: redis}
    notify: {users: [ops], template: plain, channels: [log]}
  - on: [url.created, url.clicked]
    when: {short_code: abc, owner: alice}
    notify: {users: [ops], template: plain, channels: [log]}
"""
    [error] = errors_of(BASE + hooks)
    assert error.startswith("gw.yaml:15: hooks[1].when.owner: 'owner' is not a field of url.clicked;"), error


def test_check_config_reports_an_unknown_when_field_and_bad_plugin_options_at_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    bad_plugin = "log: {plugin: log}\n    noisy: {plugin: log, colour: red}"
    path.write_text(BASE.replace("log: {plugin: log}", bad_plugin) + UNKNOWN_WHEN_FIELD)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}:4: notifications.channels.noisy.colour: unknown key",
        f"{path}:13: hooks[0].when.tierr: ratelimit.exceeded events have no field 'tierr' "
        "(fields: user_id, identity_kind, tier, rule, path, limit, window, retry_after)",
    ]
