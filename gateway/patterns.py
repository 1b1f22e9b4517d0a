"""The one path grammar of routes (`match.path`) and rate-limit rules (`match`), matched on the edge's normalised
path (gateway/paths.py):

- a literal segment matches itself (a `*` inside a segment, as in `/a*b`, is a literal character);
- `*` as a whole segment matches exactly one segment: `/users/*/orders` matches `/users/42/orders`;
- `**` as the last segment matches the path before it and everything below: `/api/**` matches `/api`,
  `/api/` and `/api/v1/x`, never `/apix`. `/**` matches every path.

Specificity, for choosing among several matches: an exact path, then a pattern with `*` (more literal characters
first), then a `**` prefix (longer first). A route's `path_prefix: /app` is the pattern `/app/**`.

Before this grammar, a rule's trailing `/*` meant the path and everything below it. Such a rule is still read so,
with a warning asking for `/**` (`LEGACY_RULE_SUFFIX`), so that no existing limit silently covers less.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Specificity kinds, higher first.
EXACT, WILDCARD, PREFIX = 3, 2, 1
LEGACY_RULE_SUFFIX = "/*"


@dataclass(frozen=True, slots=True)
class PathPattern:
    text: str
    #: EXACT, WILDCARD or PREFIX.
    kind: int
    #: Literal characters: among patterns of one kind, more is more specific.
    literal: int
    _exact: str | None = None
    #: For a `**` pattern without `*`: the path before `/**` ("" for `/**`).
    _prefix: str | None = None
    _regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """`text` in the grammar above; ValueError when `**` is not the last segment or `text` is not a path."""
        if not text.startswith("/"):
            raise ValueError(f"a path pattern starts with '/', got {text!r}")
        segments = text.split("/")[1:]
        if "**" in segments[:-1]:
            raise ValueError(f"'**' may only be the last segment, in {text!r}")
        below = segments[-1] == "**"
        if below:
            segments = segments[:-1]
        # Literal characters, slashes included, as `text` without its wildcards.
        literal = len(("/" + "/".join(segments)).replace("*", "")) if segments else 0
        if "*" not in segments:
            head = "/" + "/".join(segments) if segments else ""
            if below:
                return cls(text, PREFIX, len(head), _prefix=head.rstrip("/"))
            return cls(text, EXACT, len(text), _exact=text)
        body = "".join("/[^/]+" if part == "*" else "/" + re.escape(part) for part in segments)
        return cls(text, WILDCARD, literal, _regex=re.compile(body + ("(?:/.*)?" if below else "")))

    @classmethod
    def prefix(cls, prefix: str) -> PathPattern:
        """A route's `path_prefix`: the prefix and everything below it, segment-aware."""
        return cls.parse(prefix.rstrip("/") + "/**")

    @property
    def specificity(self) -> tuple[int, int]:
        return (self.kind, self.literal)

    @property
    def below(self) -> str | None:
        """The path a `**` pattern covers with everything below it, or None."""
        return self._prefix

    def matches(self, path: str) -> bool:
        if self._exact is not None:
            return path == self._exact
        if self._prefix is not None:
            prefix = self._prefix
            return prefix == "" or path == prefix or path.startswith(prefix + "/")
        assert self._regex is not None
        return self._regex.fullmatch(path) is not None


def rule_pattern(text: str) -> tuple[PathPattern, str | None]:
    """A rate-limit rule's `match`, and a warning when it uses the legacy trailing `/*` (read as `/**`)."""
    if text.endswith(LEGACY_RULE_SUFFIX) and not text.endswith("/**"):
        modern = text[: -len(LEGACY_RULE_SUFFIX)] + "/**"
        warning = (
            f"match {text!r} is read as {modern!r} (the path and everything below it); write {modern!r}: in the one "
            "path grammar a trailing '*' is a single segment"
        )
        return PathPattern.parse(modern), warning
    return PathPattern.parse(text), None
