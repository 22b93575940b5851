"""Admission: label each condition (node group, owning teams) and ask its rule's flag about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from gpulse.alerting.labels import LabelMap, labels, teams_of
from gpulse.analyze.inhibit import Inhibition, nodes_of
from gpulse.config.flags import Problem
from gpulse.detect.base import Condition, Window


class RuleSource(Protocol):
    """What analyze needs of the live config (gpulse.config.live.LiveConfig)."""

    def params(self) -> dict[str, dict[str, Any]]: ...
    def switched_off(self, rule: str) -> bool: ...
    def enabled(self, rule: str, labels: LabelMap) -> bool: ...
    def teams(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]: ...
    def problems(self) -> tuple[Problem, ...]: ...
    def inhibitions(self) -> list[Inhibition]: ...


def admitter(config: RuleSource, window: Window) -> Callable[[Condition], Condition | None]:
    """Label each condition (node group, owning teams) and ask its rule's flag about it: the
    condition labelled, or None where the rule is switched off for it."""
    teams = config.teams()
    group_of = dict(zip(window.nodes, window.node_groups, strict=True))
    group_of.update({n.node: n.node_group for n in window.registry})

    def admit(c: Condition) -> Condition | None:
        named = nodes_of(c)
        groups = {g for g in (group_of.get(n) for n in named) if g}
        if c.subject.get("node_group") is not None:
            groups = {str(c.subject["node_group"])}
        c = replace(
            c,
            node_group=next(iter(groups)) if len(groups) == 1 else None,
            teams=teams_of(c.users, groups, teams),
        )
        lm = labels(
            rule=c.rule,
            severity=c.severity,
            cluster=window.cluster,
            node_group=c.node_group,
            nodes=named,
            gpus=c.gpus,
            users=c.users,
            teams=c.teams,
        )
        return c if config.enabled(c.rule, lm) else None

    return admit
