"""Finds the real client address: X-Forwarded-For is believed only from configured trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        self._is_trusted = lru_cache(maxsize=4096)(self._check)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def is_trusted(self, address: str) -> bool:
        return bool(self.networks) and self._is_trusted(address)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The peer, or, when the peer is trusted, the right-most untrusted hop of X-Forwarded-For."""
        if forwarded_for is None or not self.is_trusted(peer):
            return peer
        # Each proxy appends to the list, so walk it from the right and stop at the first hop we don't trust.
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer
