"""The interface every state engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.engines.scripts import Script


class ScriptEngine(Protocol):
    """Runs one `lua/` script atomically; failures and missed deadlines raise `StorageError`."""

    name: str

    async def eval(self, script: Script, keys: Sequence[str | bytes], args: Sequence[int | float | str | bytes]) -> Any:
        """Run `script` with KEYS and ARGV and return its reply converted as redis-py would."""
        ...

    async def ping(self) -> None:
        """Raise `StorageError` unless the engine answers."""
        ...

    async def aclose(self) -> None:
        """Release connections; the engine is not used afterwards."""
        ...
