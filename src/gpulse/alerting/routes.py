"""Routes: which channels an alert goes to, and how its group waits (Alertmanager's route tree,
flattened to an ordered list).

Routes are tried in `order`; the first whose matchers all hold takes the alert, and the search
goes on past it only if it says `continue`. The route named "default" (no matchers) takes what
no other route took. A rule may name its route outright, which skips the matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gpulse.alerting.matchers import Labels, Matcher, match_all

DEFAULT_ROUTE = "default"
# Alertmanager's defaults: the habit operators bring (DESIGN.md, figures worth knowing)
GROUP_BY = ("cluster", "rule")
GROUP_WAIT_S = 30.0
GROUP_INTERVAL_S = 300.0
REPEAT_INTERVAL_S = 4 * 3600.0


@dataclass(frozen=True)
class ChannelRef:
    kind: str  # "slack" / "jandi" / "alertmanager"
    secret: str  # the SSM parameter that holds the webhook URL (never the URL)


@dataclass(frozen=True)
class Route:
    name: str
    channels: tuple[ChannelRef, ...]
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = GROUP_BY
    group_wait_s: float = GROUP_WAIT_S
    group_interval_s: float = GROUP_INTERVAL_S
    repeat_interval_s: float = REPEAT_INTERVAL_S
    send_resolved: bool = True
    order: int = 100
    continue_: bool = False
    mention_users: dict[str, str] = field(default_factory=dict)  # user → chat handle
    mention_teams: dict[str, str] = field(default_factory=dict)  # team → chat handle

    def mentions(self, labels: Labels) -> list[str]:
        """The handles of the users and teams an alert names, in that order, each once."""
        out: list[str] = []
        for key, table in (("user", self.mention_users), ("team", self.mention_teams)):
            for who in labels.get(key, ()):
                handle = table.get(who)
                if handle and handle not in out:
                    out.append(handle)
        return out

    def group_key(self, labels: Labels) -> dict[str, str]:
        """The values of the group_by labels (several values joined with ",")."""
        return {k: ",".join(sorted(labels.get(k, ()))) for k in self.group_by}


def select(labels: Labels, routes: Sequence[Route], rule_route: str | None = None) -> list[Route]:
    """The routes an alert with `labels` goes to (never empty while a default route exists)."""
    by_name = {r.name: r for r in routes}
    if rule_route is not None and rule_route in by_name:
        return [by_name[rule_route]]
    chosen: list[Route] = []
    for r in sorted(routes, key=lambda r: (r.order, r.name)):
        if r.name == DEFAULT_ROUTE or not match_all(r.matchers, labels):
            continue
        chosen.append(r)
        if not r.continue_:
            return chosen
    if not chosen and DEFAULT_ROUTE in by_name:
        chosen.append(by_name[DEFAULT_ROUTE])
    return chosen
