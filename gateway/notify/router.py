"""Which channels one user gets a notification on: requested ∩ opted in ∩ addressable, then the priority rule.

high → every such channel; normal → the primary channel if it is among them, else the first requested;
low → the digest channel (else as normal), batched into the user's next digest. A channel dropped for an
opt-out or a missing address is reported with its reason; one dropped by the priority rule is not a skip.
A channel whose breaker is open is passed over for another that is not, when there is one.

Fallback (`notifications.fallback`, an ordered list of channels): when none of the requested channels can take the
notification now (opted out, no address, or its breaker open), it goes to the first channel of that order that
the user opted into, has an address for, whose breaker is closed and whose text the template can render, on its
own (not into a digest). Its delivery says `reason: "fallback:<the first requested channel>"`, and each
requested channel is reported skipped with its reason (`breaker_open` among them). With no such channel, a
requested channel whose breaker is open is queued as before and waits for its breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.notify.channel import Channel
from gateway.notify.models import Preferences

OPTED_OUT = "opted_out"
NO_ADDRESS = "no_address"
BREAKER_OPEN = "breaker_open"
FALLBACK = "fallback:"


@dataclass(frozen=True, slots=True)
class Route:
    channel: str
    to: tuple[str, ...]
    #: Why this channel, when it is not a requested one ("fallback:<channel>").
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    user_id: str
    routes: tuple[Route, ...]
    #: (channel, reason) for requested channels the user cannot get.
    skipped: tuple[tuple[str, str], ...]
    #: The routes go into the user's digest rather than out on their own.
    digest: bool


class ChannelRouter:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        default_channels: Sequence[str] | None = None,
        fallback: Sequence[str] = (),
    ) -> None:
        self.channels = channels
        self.default_channels = tuple(default_channels) if default_channels is not None else tuple(channels)
        self.fallback = tuple(fallback)

    def plan(
        self,
        preferences: Preferences,
        requested: Sequence[str],
        priority: str,
        *,
        available: Callable[[str], bool] = lambda name: True,
        renders: Callable[[str], bool] = lambda name: True,
    ) -> Plan:
        """`available(channel)`: its breaker lets sends through now; `renders(channel)`: the template has its text."""
        opted = set(preferences.channels if preferences.channels is not None else self.default_channels)
        usable: list[Route] = []
        skipped: list[tuple[str, str]] = []
        for name in requested:
            if name not in opted:
                skipped.append((name, OPTED_OUT))
                continue
            route = self._route(preferences, name)
            if route is None:
                skipped.append((name, NO_ADDRESS))
                continue
            usable.append(route)
        up = [route for route in usable if available(route.channel)]
        if not up:
            stand_in = self._fallback(preferences, opted, requested, available, renders)
            if stand_in is not None:
                skipped += [(route.channel, BREAKER_OPEN) for route in usable]
                return Plan(preferences.user_id, (stand_in,), tuple(skipped), digest=False)
            up = usable  # nothing else can take it: it waits for its breaker
        if not up or priority == "high":
            return Plan(preferences.user_id, tuple(usable), tuple(skipped), digest=False)
        by_name = {route.channel: route for route in up}
        preferred = [preferences.primary_channel]
        if priority == "low":
            preferred.insert(0, preferences.digest_channel)
        chosen = next((by_name[name] for name in preferred if name in by_name), up[0])
        return Plan(preferences.user_id, (chosen,), tuple(skipped), digest=priority == "low")

    def _route(self, preferences: Preferences, name: str) -> Route | None:
        channel = self.channels[name]
        to = preferences.addresses(channel.address_field)
        if not to and channel.address_field is not None:
            default = channel.default_address()
            if default is None:
                return None
            to = (default,)
        return Route(name, to)

    def _fallback(
        self,
        preferences: Preferences,
        opted: set[str],
        requested: Sequence[str],
        available: Callable[[str], bool],
        renders: Callable[[str], bool],
    ) -> Route | None:
        if not requested:
            return None
        for name in self.fallback:
            if name in requested or name not in opted or not available(name):
                continue
            route = self._route(preferences, name)
            if route is not None and renders(name):
                return Route(route.channel, route.to, FALLBACK + requested[0])
        return None
