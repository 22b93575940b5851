"""Inhibition: a condition that another alert already covers is muted (`Condition.muted_by`).

Like Alertmanager's inhibit rules, as (source rule, target rule) pairs, plus the wider alert of
one rule over its per-node ones.
"""

from __future__ import annotations

from dataclasses import replace

from gpulse.detect.base import Condition

SILENT_RULE = "silent_node"
# (source rule, target rule): a condition of the target rule is muted when every node it names
# is named by a condition of the source rule, because the source already says what is wrong there.
# None as target: every other rule. A silent node's data is stale, not its GPUs idle; nodes out of
# step in a job also stop exchanging, and the imbalance alert already names them.
INHIBITIONS: tuple[tuple[str, str | None], ...] = ((SILENT_RULE, None), ("imbalance", "network"))


def nodes_of(c: Condition) -> set[str]:
    """Every node the condition names (its list, and its subject's node)."""
    node = c.subject.get("node")
    return set(c.nodes) | ({str(node)} if node is not None else set())


def _per_node(c: Condition) -> bool:
    return c.subject.get("node") is not None


def inhibit(conditions: list[Condition]) -> list[Condition]:
    """The conditions, those that an alert already covering them mutes marked `muted_by`:
    an INHIBITIONS entry, or a wider alert of the same rule (one without a node in its subject,
    e.g. most of a cluster silent) over its per-node ones. A condition naming several nodes stays
    unmuted if any of them is not covered."""
    covered: dict[str, set[str]] = {}
    wide: dict[str, set[str]] = {}
    for c in conditions:
        covered.setdefault(c.rule, set()).update(nodes_of(c))
        if not _per_node(c):
            wide.setdefault(c.rule, set()).update(nodes_of(c))
    out = []
    for c in conditions:
        named = nodes_of(c)
        sources = (s for s, target in INHIBITIONS if c.rule != s and target in (None, c.rule))
        by = next((s for s in sources if named and named <= covered.get(s, set())), None)
        if by is None and _per_node(c) and named <= wide.get(c.rule, set()):
            by = c.rule
        out.append(c if by is None else replace(c, muted_by=by))
    return out


def announced(conditions: list[Condition]) -> list[Condition]:
    """The conditions no inhibition mutes."""
    return [c for c in conditions if c.muted_by is None]
