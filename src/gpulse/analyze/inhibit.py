"""Inhibition: a condition that another alert already covers is muted (`Condition.muted_by`).

Alertmanager's inhibit rules, read live from the config table (kind `inhibit`): a condition
matching an item's `target_matchers` is muted when conditions of another rule matching its
`source_matchers` agree with it on every `equal` label. Labels are the alert's (rule, severity,
cluster, node_group, node, gpu, user, team, job). `node` is many-valued, so `equal: ["node"]`
means coverage: every node the target names is named by such a source (a target naming one more
node stays unmuted). Any other `equal` label must hold the same values on both, and a value on
each: unlike Alertmanager, two alerts that both lack a `job` are not "of the same job".

The built-in rules (DEFAULT_INHIBITIONS) hold until an item of the same name replaces or
disables them; the wider alert of one rule (one without a node in its subject, e.g. most of a
cluster silent) mutes that rule's per-node ones, always.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from gpulse.alerting.inhibition import (
    DEFAULT_INHIBITIONS,
    INHIBITIONS,
    SILENT_RULE,
    Inhibition,
    effective,
    muted_by,
    sources_of,
)
from gpulse.alerting.labels import LabelMap, labels
from gpulse.detect.base import Condition

__all__ = [
    "DEFAULT_INHIBITIONS",
    "INHIBITIONS",
    "SILENT_RULE",
    "Inhibition",
    "announced",
    "effective",
    "inhibit",
    "labels_of",
    "muted_by",
    "nodes_of",
    "sources_of",
]


def nodes_of(c: Condition) -> set[str]:
    """Every node the condition names (its list, and its subject's node)."""
    node = c.subject.get("node")
    return set(c.nodes) | ({str(node)} if node is not None else set())


def _per_node(c: Condition) -> bool:
    return c.subject.get("node") is not None


def labels_of(c: Condition, cluster: str) -> LabelMap:
    """The labels a condition is matched on, as its alert will carry them."""
    lm = labels(
        rule=c.rule,
        severity=c.severity,
        cluster=cluster,
        node_group=c.node_group or _text(c.subject.get("node_group")),
        nodes=nodes_of(c),
        gpus=c.gpus,
        users=c.users,
        teams=c.teams,
    )
    job = getattr(c, "job", None)
    lm["job"] = [job] if job else []
    return lm


def _text(v: object) -> str | None:
    return None if v is None else str(v)


def inhibit(
    conditions: list[Condition], rules: Iterable[Inhibition] | None = None, *, cluster: str = ""
) -> list[Condition]:
    """The conditions, those that an alert already covering them mutes marked `muted_by` (the
    source's rule): an inhibit rule (`rules`, the built-ins by default), or a wider alert of the
    same rule (one without a node in its subject) over its per-node ones."""
    rules = list(DEFAULT_INHIBITIONS.values()) if rules is None else list(rules)
    lms = [labels_of(c, cluster) for c in conditions]
    wide: dict[str, set[str]] = {}
    for c in conditions:
        if not _per_node(c):
            wide.setdefault(c.rule, set()).update(nodes_of(c))
    candidates = sources_of(rules, lms)
    out = []
    for i, c in enumerate(conditions):
        named = nodes_of(c)
        hit = muted_by(lms[i], candidates)
        by = hit[0] if hit is not None else None
        if by is None and _per_node(c) and named and named <= wide.get(c.rule, set()):
            by = c.rule
        out.append(c if by is None else replace(c, muted_by=by))
    return out


def announced(conditions: list[Condition]) -> list[Condition]:
    """The conditions no inhibition mutes."""
    return [c for c in conditions if c.muted_by is None]
