"""Which channels one user gets a notification on: requested ∩ opted in ∩ addressable, then the priority rule.

high → every such channel; normal → the primary channel if it is among them, else the first requested;
low → the digest channel (else as normal), batched into the user's next digest. A channel dropped for an
opt-out or a missing address is reported with its reason; one dropped by the priority rule is not a skip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.notify.channel import Channel
from gateway.notify.models import Preferences

OPTED_OUT = "opted_out"
NO_ADDRESS = "no_address"


@dataclass(frozen=True, slots=True)
class Route:
    channel: str
    to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    user_id: str
    routes: tuple[Route, ...]
    #: (channel, reason) for requested channels the user cannot get.
    skipped: tuple[tuple[str, str], ...]
    #: The routes go into the user's digest rather than out on their own.
    digest: bool


class ChannelRouter:
    def __init__(self, channels: Mapping[str, Channel], default_channels: Sequence[str] | None = None) -> None:
        self.channels = channels
        self.default_channels = tuple(default_channels) if default_channels is not None else tuple(channels)

    def plan(self, preferences: Preferences, requested: Sequence[str], priority: str) -> Plan:
        opted = set(preferences.channels if preferences.channels is not None else self.default_channels)
        usable: list[Route] = []
        skipped: list[tuple[str, str]] = []
        for name in requested:
            if name not in opted:
                skipped.append((name, OPTED_OUT))
                continue
            channel = self.channels[name]
            to = preferences.addresses(channel.address_field)
            if not to and channel.address_field is not None:
                default = channel.default_address()
                if default is None:
                    skipped.append((name, NO_ADDRESS))
                    continue
                to = (default,)
            usable.append(Route(name, to))
        if not usable or priority == "high":
            return Plan(preferences.user_id, tuple(usable), tuple(skipped), digest=False)
        by_name = {route.channel: route for route in usable}
        preferred = [preferences.primary_channel]
        if priority == "low":
            preferred.insert(0, preferences.digest_channel)
        chosen = next((by_name[name] for name in preferred if name in by_name), usable[0])
        return Plan(preferences.user_id, (chosen,), tuple(skipped), digest=priority == "low")
