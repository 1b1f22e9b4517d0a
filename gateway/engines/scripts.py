"""The Lua scripts of `lua/`, loaded once and shared by every engine."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
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
    """Resolved once: `$GATEWAY_LUA_DIR`, else the scripts shipped with the package (packaged_lua_dir)."""
    configured = os.environ.get(LUA_DIR_ENV)
    return Path(configured) if configured else packaged_lua_dir()


@cache
def packaged_lua_dir() -> Path:
    """The `gateway.lua` package's directory: in the wheel, inside the package; in a checkout, the repository's
    `lua/` (the editable install maps it); `lua/` beside the package if the checkout is not installed at all."""
    try:
        return Path(str(resources.files("gateway.lua")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "lua"


@cache
def load_script(name: str) -> Script:
    """Read `<lua_dir>/<name>.lua` once; a missing file raises FileNotFoundError naming the path."""
    path = lua_dir() / f"{name}.lua"
    source = path.read_text(encoding="utf-8")
    return Script(
        name=name, source=source, sha1=hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
    )


#: Every script the gateway runs, by name: `gateway check-config` loads them all, so it fails where `run` would.
SCRIPTS = (
    "sliding_window",
    "key_pool_pop",
    "url_cache_get",
    "idempotency_claim",
    "idempotency_release",
    "notify_throttle",
    "notify_promote",
    "notify_requeue",
)


def check_scripts() -> Path:
    """Load every script (a missing or unreadable file raises OSError naming it); returns the directory."""
    for name in SCRIPTS:
        load_script(name)
    return lua_dir()


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


def pack_evalsha(script: Script, keys: Sequence[str | bytes], args: Sequence[int | float | str | bytes]) -> bytes:
    """One EVALSHA in RESP, encoded as redis-py would encode it, without its generic per-command overhead."""
    items = [b"%d" % len(keys), *[encode_arg(key) for key in keys], *[encode_arg(arg) for arg in args]]
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (len(items) + 2, script.sha1.encode())
    return head + b"".join([b"$%d\r\n%s\r\n" % (len(item), item) for item in items])
