"""Rate-limit rules compiled from config: which rule applies to a tier, a path and a method.

`match` is a path pattern (gateway/patterns.py, the grammar routes use too). The most specific pattern wins: an
exact path, then a pattern with one-segment wildcards (more literal characters first), then the longest prefix
("/api/v1/**"). Paths are the edge's normalised ones (gateway/paths.py),
and a trailing slash matches as if it were not there. At equal specificity a rule that names the tier
beats one for every tier, one that names methods beats one that does not, and a rule managed through the admin
API (gateway/ratelimit/rule_store.py) beats one from the YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.config.base import with_head
from gateway.config.ratelimit import FailurePolicy, RuleSettings
from gateway.config.windows import Window, parse_windows
from gateway.patterns import PathPattern, rule_pattern
from gateway.ratelimit.headers import policy_value


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    #: Changes whenever the rule's meaning changes, so counters of an edited rule start afresh.
    id: str
    tiers: frozenset[str] | None
    methods: frozenset[str] | None
    windows: tuple[Window, ...]
    cost: int
    on_failure: FailurePolicy
    shadow: bool
    rank: tuple[int, int, int, int, int]
    #: The RateLimit-Policy header value, built once.
    policy: bytes
    path: PathPattern

    def matches(self, tier: str, path: str, method: str) -> bool:
        if self.tiers is not None and tier not in self.tiers:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if len(path) > 1 and path[-1] == "/":
            # Many upstreams serve /x/ as /x (Express, by default): a trailing slash must not be a way around.
            path = path[:-1]
        return self.path.matches(path)


def rule_name(settings: RuleSettings) -> str:
    """The name a rule shows in metrics, headers and status: its own, else "<tiers>:<match>"."""
    tiers = settings.tiers
    return settings.name or f"{'|'.join(tiers) if tiers else '*'}:{settings.match}"


def compile_rule(settings: RuleSettings, *, managed: bool = False) -> Rule:
    match = settings.match
    path, _legacy = rule_pattern(match)
    kind, literal = path.specificity
    tiers = settings.tiers
    fingerprint = repr((sorted(tiers or ()), match, sorted(settings.methods or ()), settings.windows, settings.cost))
    windows = parse_windows(settings.windows)
    return Rule(
        name=rule_name(settings),
        id=hashlib.blake2b(fingerprint.encode(), digest_size=4).hexdigest(),
        tiers=frozenset(tiers) if tiers else None,
        methods=with_head(settings.methods),
        windows=windows,
        cost=settings.cost,
        on_failure=settings.on_failure,
        shadow=settings.shadow,
        rank=(kind, literal, 1 if tiers else 0, 1 if settings.methods else 0, 1 if managed else 0),
        policy=policy_value(windows),
        path=path,
    )


class RuleSet:
    def __init__(self, rules: Iterable[RuleSettings], managed: Iterable[RuleSettings] = ()) -> None:
        compiled = [compile_rule(rule) for rule in rules] + [compile_rule(rule, managed=True) for rule in managed]
        self.rules: Sequence[Rule] = tuple(sorted(compiled, key=lambda rule: rule.rank, reverse=True))

    def match(self, tier: str, path: str, method: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(tier, path, method):
                return rule
        return None

    def for_tier(self, tier: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.tiers is None or tier in rule.tiers]

    def __bool__(self) -> bool:
        return bool(self.rules)
