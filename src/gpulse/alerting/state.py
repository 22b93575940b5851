"""The alert state machine, as a pure function of (conditions now, records stored, clock).

    (none) ──condition──► pending ──held for `for_s`──► firing ──gone for `keep_firing_for_s`──► resolved
              └ held for `for_s` already ─────────────────┘   │ ▲ pending ──gone──► (deleted, silent)
                                       more severe, or nodes joined └─┘ (announced again)

No flapping (Prometheus' `keep_firing_for`): a firing alert whose condition stops holding stays
firing until the condition has been absent for its rule's `keep_firing_for_s`, counted from the
last run at which it held (`finding.at` of the record); if it comes back meanwhile it is the same
alert, with its first start, and nothing is announced. A firing alert whose condition turns more
severe (warning → critical) is announced again, as its own transition (`Finding.escalated_from`).

Nodes that join an alert already firing (a second rank of the job stalls: the same fingerprint,
more nodes) are announced too (`Finding.newly_joined`), held to two rules so that a node that
comes and goes cannot page each time: a node is announced once in the alert's life (one that
left and came back is not news; one that left while the alert holds is not news either), and the
alert is told again at most once per JOIN_EVERY_S since it was last told (fired, escalated or
joined); nodes that join meanwhile wait, and are told then if they are still in the condition.

A muted condition (`Condition.muted_by`: another alert already covers it) counts as gone for a
pending alert and keeps a firing one firing without a word until its condition ends; so does a
firing alert about nodes that have gone silent (no data can tell it ended).

A transition into firing or resolved is put in the record's outbox in the same conditional
write that changes the state; analyze publishes outboxes and then clears them, so a crash
between the two re-publishes on the next run instead of losing the message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gpulse.alerting.incidents import advice, symptoms
from gpulse.detect.base import Condition
from gpulse.finding import Finding, fingerprint, with_state

RecordState = Literal["pending", "firing", "resolved"]

# At most one join announcement per alert this often: Alertmanager's group_interval habit (5 m),
# and a job whose ranks fail one by one is one incident growing, not a page per rank.
JOIN_EVERY_S = 300.0


@dataclass(frozen=True)
class AlertRecord:
    cluster: str
    fingerprint: str
    rule: str
    state: RecordState
    since: float
    finding: Finding  # latest content, as a firing finding
    version: int = 0
    outbox: Finding | None = None  # a transition decided but not yet published
    told_at: float | None = None  # when the alert was last announced firing (None: before joins were)


@dataclass(frozen=True)
class Rule:
    """What the state machine needs of a rule: its title, `for` duration and hold-down."""

    name: str
    title: str
    for_s: float
    one_shot: bool = False  # an event: announced when it fires, forgotten without a resolve
    keep_firing_for_s: float = 0.0  # how long a firing alert outlasts its condition before it resolves


@dataclass(frozen=True)
class Decision:
    """Write `record` (conditional on `expected_version`; None = must not exist), or delete it."""

    record: AlertRecord
    expected_version: int | None
    delete: bool = False


def to_finding(
    cond: Condition,
    rule: Rule,
    cluster: str,
    since: float,
    at: float,
    listed: list[dict[str, str]] | None = None,
) -> Finding:
    """The firing finding of a condition; `listed`: the incident's symptoms it is the root of."""
    fp = fingerprint(cond.rule, **cond.subject)
    return Finding(
        rule=cond.rule,
        title=rule.title,
        severity=cond.severity,
        state="firing",
        fingerprint=fp,
        cluster=cluster,
        node_group=_str_or_none(cond.subject.get("node_group")) or cond.node_group,
        since=since,
        at=at,
        summary=cond.summary,
        action=advice(cond, listed or []),
        nodes=list(cond.nodes),
        gpus=list(cond.gpus),
        mig=_str_or_none(cond.subject.get("mig")),
        users=list(cond.users),
        containers=list(cond.containers),
        teams=list(cond.teams),
        values=dict(cond.values),
        evidence=cond.evidence,
        one_shot=rule.one_shot,
        symptoms=list(listed or []),
        for_s=rule.for_s,
    )


_RANK = {"critical": 0, "warning": 1, "info": 2}


def escalates(announced: str, now: str) -> bool:
    """`now` is more severe than the severity the alert was announced with."""
    return _RANK.get(now, 9) < _RANK.get(announced, 9)


def held_down(rec: AlertRecord, rule: Rule | None, now: float) -> bool:
    """A firing alert whose condition is gone, but for less than its rule's hold-down (counted
    from the last run at which it held: the record's `finding.at`)."""
    keep = rule.keep_firing_for_s if rule is not None else 0.0
    return keep > 0 and now - rec.finding.at < keep


def _str_or_none(v: object) -> str | None:
    return None if v is None else str(v)


def in_the_dark(rec: AlertRecord, unseen: frozenset[str]) -> bool:
    """The alert names nodes, and nothing is known of any of them now (`decide` holds it): the
    nodes that joined count, so a joined node that still reports lets the alert resolve."""
    named = announced_nodes(rec.finding)
    return bool(named) and set(named) <= unseen


def announced_nodes(f: Finding) -> list[str]:
    """Every node told in the alert's life: the first announcement's, then those that joined."""
    return [*f.nodes, *(n for n in f.joined if n not in f.nodes)]


def _joining(live: AlertRecord, cond: Condition, now: float) -> list[str]:
    """The nodes of `cond` to announce as joined now: never told in this alert's life, and the
    alert last told at least JOIN_EVERY_S ago (a record from before joins were told: at once)."""
    told = set(announced_nodes(live.finding))
    new = [n for n in dict.fromkeys(cond.nodes) if n not in told]
    if not new or (live.told_at is not None and now - live.told_at < JOIN_EVERY_S):
        return []
    return new


def _joined(finding: Finding, announced: Finding, joining: list[str]) -> Finding:
    """`finding` (the condition now) told as the announced alert grown by `joining`: the first
    announcement's nodes and GPUs (the alert's identity, e.g. Alertmanager's labels), every node
    that joined so far, and those joining in this transition."""
    return replace(
        finding,
        nodes=list(announced.nodes),
        gpus=list(announced.gpus),
        joined=[*announced.joined, *joining],
        newly_joined=list(joining),
    )


def decide(
    cluster: str,
    conditions: list[Condition],
    records: dict[str, AlertRecord],
    rules: dict[str, Rule],
    now: float,
    *,
    unseen: frozenset[str] = frozenset(),
) -> list[Decision]:
    """The writes that move each alert of `cluster` to where `conditions` put it at `now`.
    A firing alert whose nodes are all `unseen` (silent: no data says either way) is held."""
    out: list[Decision] = []
    active: set[str] = set()
    incident = symptoms(conditions)  # root condition's index → the muted ones it explains
    for index, cond in enumerate(conditions):
        rule = rules[cond.rule]
        fp = fingerprint(cond.rule, **cond.subject)
        rec = records.get(fp)
        if cond.muted_by is not None:
            # muted: never announced; one already announced firing is held as it is (the fault is
            # still there, only told elsewhere) and resolves when its condition ends: it still
            # holds now, which is where its hold-down will count from
            if rec is not None and rec.state == "firing":
                active.add(fp)
                held = replace(rec.finding, at=now)
                out.append(Decision(replace(rec, finding=held, version=rec.version + 1), rec.version))
            continue
        active.add(fp)
        live = rec if rec is not None and rec.state != "resolved" else None
        # a firing alert keeps the start it was announced with; a pending one follows the current run
        since = live.since if live is not None and live.state == "firing" else cond.since
        finding = to_finding(cond, rule, cluster, since, now, incident.get(index))
        expected = rec.version if rec is not None else None
        version = (rec.version + 1) if rec is not None else 1
        # a transition still in the outbox (its publish failed) is told first: an escalation or a
        # join decided now would replace it, and the transition before it would never be told
        told = live is not None and live.state == "firing" and live.outbox is None
        joining = _joining(live, cond, now) if told and live is not None else []
        if told and live is not None and escalates(live.finding.severity, cond.severity):
            # more severe than announced: a transition of its own, told again (same alert, same start)
            raised = _joined(replace(finding, escalated_from=live.finding.severity), live.finding, joining)
            out.append(
                Decision(replace(live, finding=raised, version=version, outbox=raised, told_at=now), expected)
            )
        elif joining and live is not None:
            # nodes joined: told again at the severity announced, with the nodes that joined
            grown = _joined(replace(finding, severity=live.finding.severity), live.finding, joining)
            out.append(
                Decision(replace(live, finding=grown, version=version, outbox=grown, told_at=now), expected)
            )
        elif live is not None and live.state == "firing":
            # the announced summary and attribution stand (a resolve says what was announced);
            # only the picture and the incident's symptoms follow the data, and `at` says the
            # condition held at this run
            kept = replace(
                live.finding, evidence=finding.evidence, at=now, symptoms=finding.symptoms, newly_joined=[]
            )
            out.append(Decision(replace(live, finding=kept, version=version), expected))
        elif now - since >= rule.for_s:
            out.append(
                Decision(
                    AlertRecord(
                        cluster, fp, cond.rule, "firing", since, finding, version, outbox=finding, told_at=now
                    ),
                    expected,
                )
            )
        else:
            outbox = rec.outbox if rec is not None else None  # an unpublished resolve still goes out
            out.append(
                Decision(
                    AlertRecord(cluster, fp, cond.rule, "pending", since, finding, version, outbox), expected
                )
            )
    for fp, rec in records.items():
        if fp in active:
            continue
        if rec.state in ("pending", "resolved") and rec.outbox is None:
            out.append(Decision(rec, rec.version, delete=True))
        elif rec.state == "firing" and rec.outbox is None and rec.rule in rules and rules[rec.rule].one_shot:
            out.append(Decision(rec, rec.version, delete=True))  # an event ends without a resolve
        elif rec.state == "firing" and in_the_dark(rec, unseen):
            continue  # its nodes send nothing: the fault is not known to be gone, so no resolve
        elif rec.state == "firing" and held_down(rec, rules.get(rec.rule), now):
            continue  # gone for less than its hold-down: a pause in the fault, not its end
        elif rec.state == "firing":
            resolved = with_state(replace(rec.finding, newly_joined=[]), "resolved", now)
            out.append(
                Decision(
                    replace(rec, state="resolved", outbox=resolved, version=rec.version + 1), rec.version
                )
            )
    return out
