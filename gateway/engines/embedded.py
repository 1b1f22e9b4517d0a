"""The embedded engine: the very same `lua/` scripts, run in-process over a key-value store written in Lua.

The store (`lua/_embedded_store.lua`) lives in Lua, not Python, so that one decision crosses the Python/Lua
boundary once: the script's `redis.call`s stay inside Lua. Keys expire lazily on access and through a bounded
sweep every few calls.

The runtime is LuaJIT 2.1 where lupa ships it (it runs Lua 5.1 code, the dialect Redis runs, about 2.4× faster
here: 6 µs against 15 µs a decision), else Lua 5.1. `GATEWAY_EMBEDDED_LUA=lua51` (or `luajit21`) forces one;
the test suite runs the scripts on both.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from functools import cache
from types import ModuleType
from typing import Any

from gateway.engines.scripts import Script, encode_arg, lua_dir, packaged_lua_dir
from gateway.exceptions import StorageError

RUNTIME_ENV = "GATEWAY_EMBEDDED_LUA"
STORE_FILE = "_embedded_store.lua"


def lua_runtime_module(choice: str | None = None) -> ModuleType:
    """lupa's LuaJIT 2.1 module when available (or asked for), else its Lua 5.1 one."""
    choice = choice or os.environ.get(RUNTIME_ENV) or "auto"
    if choice not in ("auto", "luajit21", "lua51"):
        raise ValueError(f"{RUNTIME_ENV} must be auto, luajit21 or lua51, not {choice!r}")
    if choice != "lua51":
        try:
            return importlib.import_module("lupa.luajit21")
        except ImportError:
            if choice == "luajit21":
                raise
    return importlib.import_module("lupa.lua51")


# Every SWEEP_EVERY calls, look at up to SWEEP_BATCH keys that carry a TTL and drop the expired ones: amortised,
# about 4 keys a call, which outpaces the 2 keys a sliding-window decision can create.
SWEEP_EVERY = 32
SWEEP_BATCH = 128

# Reply tags from the Lua side, so the whole reply crosses the boundary as one tuple.
_NIL, _INT, _BULK, _ARRAY, _STATUS, _ERROR, _NESTED = range(7)


def _convert(reply: Any) -> Any:
    """A tagged reply tuple from the Lua side into what redis-py would return."""
    if type(reply) is not tuple:
        reply = (reply,)
    tag = reply[0]
    if tag == _ARRAY:
        return list(reply[1:])
    if tag == _INT or tag == _BULK:
        return reply[1]
    if tag == _NIL:
        return None
    if tag == _STATUS:
        return reply[1].encode() if isinstance(reply[1], str) else reply[1]
    if tag == _ERROR:
        message = reply[1].decode(errors="replace") if isinstance(reply[1], bytes) else str(reply[1])
        raise StorageError(f"embedded engine: {message}")
    items, length = reply[1], reply[2]
    return [_convert_item(items[i]) for i in range(1, length + 1)]


def _convert_item(item: Any) -> Any:
    # lupa's table objects differ per runtime module; any of them has `keys`, no reply scalar does.
    if hasattr(item, "keys"):
        return _convert(tuple(item[i] for i in range(1, len(item) + 1)))
    return item


@cache
def _store_source() -> bytes:
    # Part of the engine, not a user script: a configured GATEWAY_LUA_DIR without it falls back to the package's.
    for directory in (lua_dir(), packaged_lua_dir()):
        path = directory / STORE_FILE
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError(f"{STORE_FILE} is in neither {lua_dir()} nor {packaged_lua_dir()}")


class EmbeddedEngine:
    """Runs `lua/` scripts in-process; single-threaded, so each script is atomic by construction."""

    name = "embedded"

    def __init__(self, *, clock: Callable[[], float] = time.time, runtime: str | None = None) -> None:
        self._clock = clock
        # Chosen here, not at import: the environment read is the one of the process that builds the engine.
        module = lua_runtime_module(runtime)
        #: "luajit21" or "lua51": which Lua runs the scripts.
        self.runtime = module.__name__.rsplit(".", 1)[-1]
        self._lua = module.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        if self.runtime == "luajit21":
            # No side traces: with them, engines grew different ones and decided in anywhere from 11 to 34 µs
            # (six engines, two runs, same calls); without them, 11-12 µs in every one.
            self._lua.execute('jit.opt.start("maxside=0")')
        module = self._lua.execute(_store_source(), SWEEP_EVERY, SWEEP_BATCH)
        self._eval = module.eval
        self._command = module.command
        self._load = module.load
        self._flush = module.flush
        self._size = module.size
        self._stored = module.stored
        self._loaded: dict[str, bytes] = {}

    def run(self, script: Script, keys: Sequence[str | bytes], args: Sequence[int | float | str | bytes]) -> Any:
        """Run `script` synchronously; `eval` is the same call behind the engine interface."""
        sha = self._loaded.get(script.sha1)
        if sha is None:
            sha = self._compile(script)
        return _convert(
            self._eval(
                sha,
                int(self._clock() * 1_000_000),
                len(keys),
                *[encode_arg(key) for key in keys],
                *[encode_arg(arg) for arg in args],
            )
        )

    def run_encoded(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """`run` for callers that encode their keys and arguments themselves (the limiter's hot path)."""
        sha = self._loaded.get(script.sha1)
        if sha is None:
            sha = self._compile(script)
        return _convert(self._eval(sha, int(self._clock() * 1_000_000), len(keys), *keys, *args))

    def _compile(self, script: Script) -> bytes:
        sha = script.sha1.encode()
        error = self._load(sha, script.source.encode(), script.name.encode())
        if error is not None:
            raise StorageError(f"embedded engine: cannot compile {script.name}: {error.decode(errors='replace')}")
        self._loaded[script.sha1] = sha
        return sha

    async def eval(self, script: Script, keys: Sequence[str | bytes], args: Sequence[int | float | str | bytes]) -> Any:
        return self.run(script, keys, args)

    def command(self, *args: int | float | str | bytes) -> Any:
        """One Redis command against the store, outside any script (for tests, tools and warm-up)."""
        return _convert(self._command(int(self._clock() * 1_000_000), *[encode_arg(arg) for arg in args]))

    def flush(self) -> None:
        """Forget every key (FLUSHDB)."""
        self._flush()

    def dbsize(self) -> int:
        """Keys that are still alive."""
        return int(self._size(int(self._clock() * 1_000_000)))

    def stored_keys(self) -> int:
        """Keys still held in memory, expired ones not yet swept included (to test the sweep)."""
        return int(self._stored())

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
