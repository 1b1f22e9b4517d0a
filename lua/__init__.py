"""The Lua scripts: every atomic state change, run by Redis (EVALSHA) and by the embedded engine (lupa).

Installed as the package `gateway.lua`; gateway.engines.scripts reads the `.lua` files beside this one.
"""

from __future__ import annotations
