"""The Lua scripts of `lua/`, loaded once and shared by every engine."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LUA_DIR_ENV = "GATEWAY_LUA_DIR"


@dataclass(frozen=True)
class Script:
    """One Lua file; `sha1` is what Redis knows it by (EVALSHA)."""

    name: str
    source: str = field(repr=False)
    sha1: str


@cache
def lua_dir() -> Path:
    """Resolved once: `$GATEWAY_LUA_DIR`, else the `lua/` directory beside the package (the repository layout)."""
    configured = os.environ.get(LUA_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "lua"


@cache
def load_script(name: str) -> Script:
    """Read `<lua_dir>/<name>.lua` once; a missing file raises FileNotFoundError naming the path."""
    path = lua_dir() / f"{name}.lua"
    source = path.read_text(encoding="utf-8")
    return Script(
        name=name, source=source, sha1=hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
    )


def encode_arg(value: int | float | str | bytes) -> bytes:
    """A script key or argument as redis-py sends it, so scripts see the same KEYS and ARGV strings on every engine.
    Bytes pass as they are: callers on the hot path encode what does not change once (gateway/ratelimit/limiter.py)."""
    if isinstance(value, bytes):
        return value
    if type(value) is int:
        return b"%d" % value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()
