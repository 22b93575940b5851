"""Inhibit rules (Alertmanager's): which alert mutes which, as data the config table can hold.

A condition matching a rule's `target` matchers is muted when conditions of another rule
matching its `source` matchers agree with it on every `equal` label (gpulse.analyze.inhibit
applies them). `node` and `gpu` are many-valued, so `equal: ["node"]` (or `"gpu"`) means
coverage: every node (GPU) the target names is named by such a source. Any other `equal` label
must hold the same values on both, and a value on each: unlike Alertmanager, two alerts that both
lack a `job` are not "of one job".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gpulse.alerting.labels import LabelMap
from gpulse.alerting.matchers import Matcher, match_all, parse_all

SILENT_RULE = "silent_node"


@dataclass(frozen=True)
class Inhibition:
    """One inhibit rule: sources matching `source` mute targets matching `target` that agree
    with them on `equal` (see the module's docstring)."""

    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ("node",)
    description: str = ""


def _builtin(
    name: str, source: Sequence[str], target: Sequence[str], equal: Sequence[str], why: str
) -> Inhibition:
    return Inhibition(name, parse_all(source), parse_all(target), tuple(equal), why)


# Why each: a silent node's data is stale, not its GPUs idle; nodes out of step in a job also stop
# exchanging, and the imbalance alert already names them; a rank that stalls with its memory held
# IS an idle, held GPU (one per GPU of the node: 16 pages for two stalled 8-GPU ranks), and the
# imbalance alert says why and what to do (the rank's logs, NCCL), which "end the notebook kernel"
# does not; likewise a job that computes on one of its GPUs and holds the others idle is one
# gpu_imbalance alert, not one idle_held page per GPU — only the GPUs that job holds (`gpu`
# coverage): the same user's notebook on another GPU of the node is still its own alert.
DEFAULT_INHIBITIONS: dict[str, Inhibition] = {
    i.name: i
    for i in (
        _builtin(
            "silent_node",
            ['rule="silent_node"'],
            ['rule!="silent_node"'],
            ["node"],
            "a silent node's data is stale: no other alert about its nodes means anything",
        ),
        _builtin(
            "imbalance_network",
            ['rule="imbalance"'],
            ['rule="network"'],
            ["node"],
            "nodes out of step also stop exchanging: the imbalance alert names them",
        ),
        _builtin(
            "imbalance_idle_held",
            ['rule="imbalance"'],
            ['rule=~"idle_held|mig_idle"'],
            ["node"],
            "a stalled rank's GPUs sit idle with memory held: one alert (imbalance) for the job, "
            "not one per GPU",
        ),
        _builtin(
            "gpu_imbalance_idle_held",
            ['rule="gpu_imbalance"'],
            ['rule="idle_held"'],
            ["node", "gpu"],
            "a job that computes on one GPU and holds the others idle: one alert (gpu_imbalance), "
            "not one per idle GPU",
        ),
    )
}
# The built-in rules as (source rule, target rule) pairs; None as target: every other rule.
INHIBITIONS: tuple[tuple[str, str | None], ...] = (
    (SILENT_RULE, None),
    ("imbalance", "network"),
    ("imbalance", "idle_held"),
    ("imbalance", "mig_idle"),
    ("gpu_imbalance", "idle_held"),
)


def effective(items: Mapping[str, Inhibition | None]) -> list[Inhibition]:
    """The rules in force: the built-ins with the table's items laid over them by name (an item
    None: that built-in disabled), in name order."""
    merged: dict[str, Inhibition | None] = {**DEFAULT_INHIBITIONS, **items}
    return [i for _, i in sorted(merged.items()) if i is not None]


def sources_of(
    rules: Iterable[Inhibition], alerts: Iterable[LabelMap]
) -> list[tuple[Inhibition, list[LabelMap]]]:
    """Each rule with the alerts its source matchers match (matched once per run, not once per
    target: a cluster's hundreds of conditions are mostly targets, its sources few)."""
    alerts = list(alerts)
    return [(rule, [a for a in alerts if match_all(rule.source, a)]) for rule in rules]


def muted_by(
    target: LabelMap, candidates: Iterable[tuple[Inhibition, Sequence[LabelMap]]]
) -> tuple[str, str] | None:
    """(source rule, inhibition name) of the first inhibition that mutes an alert with labels
    `target`, given each rule's source alerts (`sources_of`); None when none does. An alert of
    the target's own rule is never its source."""
    for rule, sources in candidates:
        if not sources or not match_all(rule.target, target):
            continue
        others = [
            s
            for s in sources
            if s["rule"] != target["rule"]
            and all(_same(s, target, label) for label in rule.equal if label not in COVERED)
        ]
        if not others:
            continue
        if not all(_covered(target, others, label) for label in COVERED if label in rule.equal):
            continue
        return others[0]["rule"][0], rule.name
    return None


COVERED = ("node", "gpu")  # many-valued labels: `equal` on them means the sources cover the target's


def _covered(target: LabelMap, sources: Sequence[LabelMap], label: str) -> bool:
    named = set(target.get(label, []))
    return bool(named) and named <= set().union(*(s.get(label, []) for s in sources))


def _same(a: LabelMap, b: LabelMap, label: str) -> bool:
    va, vb = sorted(a.get(label, [])), sorted(b.get(label, []))
    return bool(va) and va == vb
