"""Turns a YAML file into `Settings`, or into a ConfigError listing every problem as file:line: field: message."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from gateway.config.models import Settings
from gateway.config.source import Location, SourceError, read_yaml
from gateway.exceptions import ConfigError

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required field",
}


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_settings(text, source=str(path), environ=environ)


def parse_settings(text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None) -> Settings:
    try:
        data, lines = read_yaml(text, environ)
    except SourceError as exc:
        raise ConfigError([_format(source, exc.line, exc.location, exc.message)]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the configuration must be a mapping of sections"])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            location = tuple(error["loc"])
            message = _MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, "))
            errors.append(_format(source, _line_of(location, lines), location, message))
        raise ConfigError(errors) from None
    problems = settings.reference_errors()
    if problems:
        raise ConfigError([_format(source, _line_of(loc, lines), loc, message) for loc, message in problems])
    return settings


def _line_of(location: Location, lines: dict[Location, int]) -> int:
    # A missing field has no line of its own: point at the nearest enclosing node that has one.
    for end in range(len(location), -1, -1):
        line = lines.get(location[:end])
        if line is not None:
            return line
    return 1


def _format(source: str, line: int, location: Location, message: str) -> str:
    field = ""
    for part in location:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return f"{source}:{line}: {field}: {message}" if field else f"{source}:{line}: {message}"
