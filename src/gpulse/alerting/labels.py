"""The labels an alert is matched on (routes, silences, rule targeting): one list of values per
label, since an alert may name several nodes, users or teams."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gpulse.finding import Finding

LabelMap = dict[str, list[str]]


def teams_of(
    users: Iterable[str], node_groups: Iterable[str], teams: Mapping[str, tuple[Sequence[str], Sequence[str]]]
) -> list[str]:
    """The teams (name → (users, node groups)) with a member among `users` or owning a group."""
    u, g = set(users), set(node_groups)
    return sorted(name for name, (members, groups) in teams.items() if u & set(members) or g & set(groups))


def labels(
    *,
    rule: str,
    severity: str,
    cluster: str,
    node_group: str | None = None,
    nodes: Iterable[str] = (),
    gpus: Iterable[str] = (),
    users: Iterable[str] = (),
    teams: Iterable[str] = (),
    state: str = "firing",
) -> LabelMap:
    return {
        "rule": [rule],
        "severity": [severity],
        "cluster": [cluster],
        "node_group": [node_group] if node_group else [],
        "node": sorted(set(nodes)),
        "gpu": sorted(set(gpus)),
        "user": sorted(set(users)),
        "team": sorted(set(teams)),
        "state": [state],
    }


def of_finding(f: Finding) -> LabelMap:
    return labels(
        rule=f.rule,
        severity=f.severity,
        cluster=f.cluster,
        node_group=f.node_group,
        nodes=f.nodes,
        gpus=f.gpus,
        users=f.users,
        teams=f.teams,
        state=f.state,
    )


def flag_context(lm: LabelMap) -> dict[str, object]:
    """The context a rule's feature flag is evaluated in: each label as one string (its only
    value, "" for none, comma-joined for several) and the many-valued ones also as lists
    (`teams`, `users`, `nodes`) for ANY_IN_VALUE and friends."""
    ctx: dict[str, object] = {k: ",".join(v) for k, v in lm.items()}
    ctx.update(teams=list(lm["team"]), users=list(lm["user"]), nodes=list(lm["node"]))
    return ctx
