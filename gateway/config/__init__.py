"""Configuration: one YAML file parsed into typed, immutable settings.

This package checks the file's shape and its cross-references only; it imports no subsystem. The subsystems'
own checks (channel plugins and their options) are handed to the loader as `checks=`: gateway.settings loads
with all of them, as `gateway run` and `check-config` do.
"""

from __future__ import annotations

from gateway.config.loader import Check, load_settings, parse_settings
from gateway.config.models import Settings

__all__ = ["Check", "Settings", "load_settings", "parse_settings"]
