"""Reads YAML into plain data while remembering the line of every node, and substitutes ${ENV:-default}."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

Location = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SourceError(Exception):
    """A problem in the YAML text itself, at a line."""

    def __init__(self, line: int, location: Location, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.location = location
        self.message = message


def read_yaml(text: str, environ: Mapping[str, str] | None = None) -> tuple[Any, dict[Location, int]]:
    """Parse `text`; return the data and a map from each node's location to its 1-based line."""
    env = os.environ if environ is None else environ
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SourceError(mark.line + 1 if mark else 1, (), f"invalid YAML: {exc.problem or exc}") from exc
    finally:
        loader.dispose()
    lines: dict[Location, int] = {}
    if node is None:
        return {}, lines
    return _build(loader, node, (), lines, env), lines


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, location: Location, lines: dict[Location, int], env: Mapping[str, str]
) -> Any:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                raise SourceError(key_node.start_mark.line + 1, location, "mapping keys must be scalars")
            key = str(key)
            if key in result:
                raise SourceError(key_node.start_mark.line + 1, (*location, key), f"duplicate key '{key}'")
            result[key] = _build(loader, value_node, (*location, key), lines, env)
            lines[(*location, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*location, index), lines, env) for index, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, env, node.start_mark.line + 1, location)
    return value


def _substitute(value: str, env: Mapping[str, str], line: int, location: Location) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found not in (None, ""):
            return str(found)
        if default is not None:
            return default
        raise SourceError(line, location, f"environment variable {name} is not set and has no default")

    return _ENV.sub(replace, value)
