"""LiveConfig: what analyze and alert ask of the config table, answered from one cached read.

Rule on/off and targeting are Powertools feature flags evaluated per alert, with the alert's
labels as context (cluster, node_group, team, severity, …; time windows come from the clock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.feature_flags import FeatureFlags

from gpulse.alerting.inhibition import DEFAULT_INHIBITIONS, Inhibition, effective
from gpulse.alerting.labels import LabelMap, flag_context
from gpulse.alerting.routes import DEFAULT_ROUTE, ChannelRef, Route
from gpulse.alerting.silences import Silence
from gpulse.config.documents import InhibitConfig, RuleConfig, Team
from gpulse.config.flags import DynamoDBStore, Problem
from gpulse.detect.catalogue import CATALOGUE, params_for

logger = logging.getLogger(__name__)


class LiveConfig:
    def __init__(
        self, store: DynamoDBStore, *, fallback_channels: Callable[[], tuple[ChannelRef, ...]] = tuple
    ) -> None:
        """`fallback_channels()` make the default route when the table has none (the template's
        webhooks that are set), so a fresh deployment alerts before anyone configures a route."""
        self.store = store
        self.flags = FeatureFlags(store=store, logger=logger)
        self.fallback_channels = fallback_channels

    def rules(self) -> dict[str, RuleConfig]:
        """Every detector's rule: the table's item, or the defaults (enabled, no route)."""
        items: dict[str, RuleConfig] = self.store.snapshot().of("rule")
        return {
            name: items.get(name) or RuleConfig(name, params_for(name), {"default": True})
            for name in CATALOGUE
        }

    def params(self) -> dict[str, dict[str, Any]]:
        return {name: rc.params for name, rc in self.rules().items()}

    def rule_route(self, rule: str) -> str | None:
        """The route a rule names outright (None: its alerts are matched against the routes)."""
        rc = self.store.snapshot().of("rule").get(rule)
        return rc.route if rc is not None else None

    def switched_off(self, rule: str) -> bool:
        """Off everywhere (default off, no targeting rule): its detector need not even run."""
        flag = self.store.snapshot().of("rule").get(rule)
        return flag is not None and flag.flag.get("default") is False and not flag.flag.get("rules")

    def enabled(self, rule: str, labels: LabelMap) -> bool:
        """Whether `rule` may raise an alert with these labels, now."""
        return bool(self.flags.evaluate(name=rule, context=flag_context(labels), default=True))

    def routes(self) -> list[Route]:
        routes: dict[str, Route] = self.store.snapshot().of("route")
        if DEFAULT_ROUTE not in routes:
            channels = self.fallback_channels()
            if channels:
                routes[DEFAULT_ROUTE] = Route(DEFAULT_ROUTE, channels)
        return list(routes.values())

    def silences(self) -> list[Silence]:
        return list(self.store.snapshot().of("silence").values())

    def teams(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        teams: dict[str, Team] = self.store.snapshot().of("team")
        return {name: (t.users, t.node_groups) for name, t in teams.items()}

    def problems(self) -> tuple[Problem, ...]:
        return self.store.snapshot().problems

    def inhibitions(self) -> list[Inhibition]:
        """The inhibit rules in force: the built-ins, with the table's items over them by name."""
        items: dict[str, InhibitConfig] = self.store.snapshot().of("inhibit")
        return effective({name: i.rule for name, i in items.items()})


class StaticRules:
    """The rule side of LiveConfig without a table: every rule on, the defaults with `overrides`
    laid over them (benchmarks, the scenario suite, tests)."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self._params = {name: params_for(name, (overrides or {}).get(name)) for name in CATALOGUE}

    def params(self) -> dict[str, dict[str, Any]]:
        return dict(self._params)

    def switched_off(self, rule: str) -> bool:
        return False

    def enabled(self, rule: str, labels: LabelMap) -> bool:
        return True

    def teams(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return {}

    def problems(self) -> tuple[Problem, ...]:
        return ()

    def inhibitions(self) -> list[Inhibition]:
        return list(DEFAULT_INHIBITIONS.values())
