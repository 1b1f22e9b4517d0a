"""Reads YAML into plain data while remembering the line of every node, and substitutes ${ENV:-default}."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

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


class Problem(NamedTuple):
    """One problem found while reading, at a line; reading goes on so that every problem is reported at once."""

    line: int
    location: Location
    message: str


def read_yaml(text: str, environ: Mapping[str, str] | None = None) -> tuple[Any, dict[Location, int], list[Problem]]:
    """Parse `text`; return the data, a map from each node's location to its 1-based line, and the problems met
    on the way (a missing ${ENV} reads as "" and is one of them). A YAML syntax error is a SourceError: nothing
    after it can be read."""
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
    problems: list[Problem] = []
    if node is None:
        return {}, lines, problems
    return _build(loader, node, (), lines, env, problems), lines, problems


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    location: Location,
    lines: dict[Location, int],
    env: Mapping[str, str],
    problems: list[Problem],
) -> Any:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = _scalar(loader, key_node, location, problems)
            if not isinstance(key, str | int | float | bool):
                problems.append(Problem(line, location, "mapping keys must be scalars"))
                continue
            key = str(key)
            if key in result:
                problems.append(Problem(line, (*location, key), f"duplicate key '{key}'"))
                continue
            result[key] = _build(loader, value_node, (*location, key), lines, env, problems)
            lines[(*location, key)] = line
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*location, index), lines, env, problems) for index, item in enumerate(node.value)]
    value = _scalar(loader, node, location, problems)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, env, node.start_mark.line + 1, location, problems)
    return value


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, location: Location, problems: list[Problem]) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        # An unknown tag (!!python/name:..., !custom) or a value its tag cannot read: never constructed.
        problems.append(Problem(node.start_mark.line + 1, location, f"unsupported YAML tag or value {node.tag!r}"))
        return None


def _substitute(value: str, env: Mapping[str, str], line: int, location: Location, problems: list[Problem]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found not in (None, ""):
            return str(found)
        if default is not None:
            return default
        problems.append(Problem(line, location, f"environment variable {name} is not set and has no default"))
        return ""

    return _ENV.sub(replace, value)
