"""The configuration as the gateway runs it: gateway.config's schema and cross-references, then every subsystem's
own checks. `gateway run`, `gateway check-config` and the app (start and reload) load settings through here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.config import Check, Settings, load_settings as _load_settings, parse_settings as _parse_settings
from gateway.notify.checks import channel_errors

__all__ = ["CHECKS", "Settings", "load_settings", "parse_settings"]

#: Each subsystem's check of valid settings; a new subsystem with options of its own adds its check here.
CHECKS: tuple[Check, ...] = (channel_errors,)


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in the YAML file at `path`, or a ConfigError with every problem as file:line: field: message."""
    return _load_settings(path, environ, checks=CHECKS)


def parse_settings(text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None) -> Settings:
    """As `load_settings`, for YAML text (errors name `source`)."""
    return _parse_settings(text, source=source, environ=environ, checks=CHECKS)
