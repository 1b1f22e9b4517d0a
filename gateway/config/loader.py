"""Turns a YAML file into `Settings`, or into a ConfigError listing every problem as file:line: field: message."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.models import Settings
from gateway.config.source import Location, SourceError, read_yaml
from gateway.exceptions import ConfigError

#: A subsystem's own check of valid settings: (location, message) for each problem, reported with the file's.
Check = Callable[[Settings], Iterable[tuple[Location, str]]]
_PASSES = 8
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required field",
}


def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None, *, checks: Sequence[Check] = ()
) -> Settings:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: the file is not UTF-8 (byte 0x{raw[exc.start]:02x})"]) from None
    return parse_settings(text, source=str(path), environ=environ, checks=checks)


def parse_settings(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    checks: Sequence[Check] = (),
) -> Settings:
    """Every problem of the file in one ConfigError, in line order: reading (tags, ${ENV}), schema, the
    cross-references between sections, and `checks` (the subsystems' own: see gateway.settings), the last two
    run on what of the file is valid, so their errors come with the others."""
    try:
        data, lines, problems = read_yaml(text, environ)
    except SourceError as exc:
        raise ConfigError([_format(source, exc.line, exc.location, exc.message)]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the configuration must be a mapping of sections"])
    found: list[tuple[int, str]] = [(p.line, _format(source, p.line, p.location, p.message)) for p in problems]
    # Values that could not be read stand in as "" or None: what the schema says of them follows from that.
    unreadable = [problem.location for problem in problems]
    settings, schema_errors, removed = _validate(data)
    for location, message in schema_errors:
        if not any(_within(location, bad) for bad in unreadable):
            line = _line_of(location, lines)
            found.append((line, _format(source, line, location, message)))
    if settings is not None:
        # A reference to something taken out for its own errors is not a second error.
        gone_names = {f"'{gone[-1]}'" for gone in removed.locations if isinstance(gone[-1], str)}
        checked = list(settings.reference_errors())
        for check in checks:
            checked.extend(check(settings))
        for location, message in checked:
            location = removed.original(location)
            if any(name in message for name in gone_names):
                continue
            if not any(_within(location, gone) or _within(gone, location) for gone in removed.locations):
                line = _line_of(location, lines)
                found.append((line, _format(source, line, location, message)))
    if found or settings is None:
        raise ConfigError([message for _, message in sorted(found, key=lambda item: item[0])])
    return settings


class _Removed:
    """What `_validate` took out of the data to get past schema errors, and how to map locations back."""

    def __init__(self) -> None:
        self.locations: list[Location] = []
        #: For a list that lost items: the original index of each item left, by the list's location.
        self.indexes: dict[Location, list[int]] = {}

    def original(self, location: Location) -> Location:
        result: list[str | int] = []
        for part in location:
            kept = self.indexes.get(tuple(result))
            if isinstance(part, int) and kept is not None and part < len(kept):
                part = kept[part]
            result.append(part)
        return tuple(result)


def _validate(data: dict[str, Any]) -> tuple[Settings | None, list[tuple[Location, str]], _Removed]:
    """Validate; on errors, take out each erroneous value (a missing one: its enclosing item) and validate again,
    so that what remains still gets its cross-reference checks. Returns the errors of every pass."""
    candidate = copy.deepcopy(data)
    removed = _Removed()
    errors: list[tuple[Location, str]] = []
    for _ in range(_PASSES):
        try:
            return Settings.model_validate(candidate), errors, removed
        except ValidationError as exc:
            progress = False
            for error in exc.errors(include_url=False):
                location = removed.original(tuple(error["loc"]))
                if not any(_within(location, gone) for gone in removed.locations):
                    errors.append((location, _MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, "))))
            for error in sorted(exc.errors(include_url=False), key=lambda e: _sort_key(e["loc"]), reverse=True):
                progress |= _remove(candidate, tuple(error["loc"]), removed)
            if not progress:
                break
    return None, errors, removed


def _sort_key(location: Sequence[Any]) -> tuple[tuple[int, str], ...]:
    return tuple((part, "") if isinstance(part, int) else (-1, str(part)) for part in location)


def _remove(data: Any, location: Location, removed: _Removed) -> bool:
    """Delete the deepest existing node on `location` (the root excepted); False if there is none."""
    path: list[str | int] = []
    node: Any = data
    parent: Any = None
    for part in location:
        if isinstance(node, dict) and part in node:
            parent, node = node, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, node = node, node[part]
        else:
            break
        path.append(part)
    if not path:
        return False
    key = path[-1]
    where = removed.original(tuple(path[:-1]))
    removed.locations.append((*where, removed.original(tuple(path))[-1]))
    if isinstance(parent, list):
        assert isinstance(key, int)
        kept = removed.indexes.setdefault(where, list(range(len(parent))))
        del kept[key]
    del parent[key]
    return True


def _within(location: Location, other: Location) -> bool:
    return location[: len(other)] == other


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
