"""The alert state machine, as a pure function of (conditions now, records stored, clock).

    (none) ──condition──► pending ──held for `for_s`──► firing ──condition gone──► resolved
              └ held for `for_s` already ─────────────────┘   pending ──gone──► (deleted, silent)

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

from gpulse.detect.base import Condition
from gpulse.finding import Finding, fingerprint, with_state

RecordState = Literal["pending", "firing", "resolved"]


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


@dataclass(frozen=True)
class Rule:
    """What the state machine needs of a rule: its title and `for` duration."""

    name: str
    title: str
    for_s: float
    one_shot: bool = False  # an event: announced when it fires, forgotten without a resolve


@dataclass(frozen=True)
class Decision:
    """Write `record` (conditional on `expected_version`; None = must not exist), or delete it."""

    record: AlertRecord
    expected_version: int | None
    delete: bool = False


def to_finding(cond: Condition, rule: Rule, cluster: str, since: float, at: float) -> Finding:
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
        action=cond.action,
        nodes=list(cond.nodes),
        gpus=list(cond.gpus),
        mig=_str_or_none(cond.subject.get("mig")),
        users=list(cond.users),
        containers=list(cond.containers),
        teams=list(cond.teams),
        values=dict(cond.values),
        evidence=cond.evidence,
        one_shot=rule.one_shot,
    )


def _str_or_none(v: object) -> str | None:
    return None if v is None else str(v)


def in_the_dark(rec: AlertRecord, unseen: frozenset[str]) -> bool:
    """The alert names nodes, and nothing is known of any of them now (`decide` holds it)."""
    return bool(rec.finding.nodes) and set(rec.finding.nodes) <= unseen


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
    for cond in conditions:
        rule = rules[cond.rule]
        fp = fingerprint(cond.rule, **cond.subject)
        rec = records.get(fp)
        if cond.muted_by is not None:
            # muted: never announced; one already announced firing is held as it is (the fault is
            # still there, only told elsewhere) and resolves when its condition ends
            if rec is not None and rec.state == "firing":
                active.add(fp)
            continue
        active.add(fp)
        live = rec if rec is not None and rec.state != "resolved" else None
        # a firing alert keeps the start it was announced with; a pending one follows the current run
        since = live.since if live is not None and live.state == "firing" else cond.since
        finding = to_finding(cond, rule, cluster, since, now)
        expected = rec.version if rec is not None else None
        version = (rec.version + 1) if rec is not None else 1
        if live is not None and live.state == "firing":
            # the announced summary and attribution stand (a resolve says what was announced);
            # only the picture follows the data
            kept = replace(live.finding, evidence=finding.evidence, at=now)
            out.append(Decision(replace(live, finding=kept, version=version), expected))
        elif now - since >= rule.for_s:
            out.append(
                Decision(
                    AlertRecord(cluster, fp, cond.rule, "firing", since, finding, version, outbox=finding),
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
        elif rec.state == "firing":
            resolved = with_state(rec.finding, "resolved", now)
            out.append(
                Decision(
                    replace(rec, state="resolved", outbox=resolved, version=rec.version + 1), rec.version
                )
            )
    return out
