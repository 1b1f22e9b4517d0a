"""Matches a request's host, path and method to the most specific configured route."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.base import with_head
from gateway.config.routes import RouteSettings
from gateway.patterns import PathPattern


@dataclass(frozen=True, slots=True)
class Route:
    settings: RouteSettings
    name: str
    #: Specificity: higher sorts first. (host, path kind, literal length, methods)
    rank: tuple[int, int, int, int]
    _host: str | None
    _host_suffix: str | None
    #: None: every path.
    _path: PathPattern | None
    _methods: frozenset[str] | None

    def matches(self, host: str, path: str, method: str) -> bool:
        if self._methods is not None and method not in self._methods:
            return False
        if self._host is not None and host != self._host:
            return False
        if self._host_suffix is not None and not host.endswith(self._host_suffix):
            return False
        return self._path is None or self._path.matches(path)

    @property
    def _prefix(self) -> str | None:
        return self._path.below if self._path is not None and self.settings.match.path_prefix is not None else None

    def upstream_path(self, path: str) -> str:
        """The path to send upstream, after strip_prefix / rewrite_prefix."""
        settings = self.settings
        if self._prefix is None or (not settings.strip_prefix and settings.rewrite_prefix is None):
            return path
        rest = path[len(self._prefix) :]
        new_prefix = (settings.rewrite_prefix or "").rstrip("/")
        result = new_prefix + rest
        return result if result.startswith("/") else "/" + result

    @property
    def public_prefix(self) -> str | None:
        """The client-facing prefix that upstream Location headers must get back, if the path is rewritten."""
        if self._prefix is None or (not self.settings.strip_prefix and self.settings.rewrite_prefix is None):
            return None
        return self._prefix


def compile_route(settings: RouteSettings) -> Route:
    match = settings.match
    host = suffix = None
    host_rank = 0
    if match.host is not None:
        if match.host.startswith("*."):
            suffix, host_rank = match.host[1:].lower(), 1
        else:
            host, host_rank = match.host.lower(), 2
    path = None
    if match.path is not None:
        path = PathPattern.parse(match.path)
    elif match.path_prefix is not None:
        path = PathPattern.prefix(match.path_prefix)
    kind, literal = path.specificity if path is not None else (0, 0)
    methods = with_head(match.methods)
    return Route(
        settings=settings,
        name=settings.name,
        rank=(host_rank, kind, literal, 1 if methods else 0),
        _host=host,
        _host_suffix=suffix,
        _path=path,
        _methods=methods,
    )


class Router:
    """Routes sorted by specificity once; the first that matches wins."""

    def __init__(self, routes: Sequence[RouteSettings]) -> None:
        compiled = [compile_route(route) for route in routes]
        # Stable sort: among equally specific routes, the one written first wins.
        self.routes = tuple(sorted(compiled, key=lambda route: route.rank, reverse=True))

    def match(self, host: str, path: str, method: str) -> Route | None:
        for route in self.routes:
            if route.matches(host, path, method):
                return route
        return None


def request_host(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1").lower()
            # Strip a port, but not the colons of a bracketed IPv6 literal.
            if host.startswith("["):
                return host.split("]")[0] + "]"
            return host.split(":", 1)[0]
    return ""
