"""Alert groups: Alertmanager's dispatch, as pure functions of (group, finding or clock).

A group is one route's alerts that share the route's group_by labels (by default cluster and
rule: one imbalance across twelve nodes, or eight idle GPUs of one cluster, is one message).

    first alert ──group_wait──► flush ──(a change)──group_interval──► flush ...
                                   └──(no change, still firing)──repeat_interval──► flush

A flush tells the channels every firing, unsilenced alert of the group, and the announced ones
that resolved since the last flush. Each member remembers the state last announced, so the
same transition is never announced twice; a silenced alert waits, and is announced when its
silence ends if it is still firing.

An alert with nothing more to say (resolved, or a one-shot event once told) stays in its group
as a tombstone for TOMBSTONE_S: a stale copy of its firing (an SQS redelivery, a redrive from
the DLQ) is then recognised as older and ignored, instead of firing a ghost nobody resolves.
Every group is born with a random epoch that its notification ids carry, so a group deleted
and created again never reuses an id the sent log already holds.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gpulse.alerting.routes import Route
from gpulse.finding import Finding
from gpulse.notification import Notification

Silenced = Callable[[Finding], bool]
# How long an alert that has nothing more to say is remembered: far longer than SQS redelivers a
# message (5 receives × 360 s visibility). Redriving the DLQ later than this is the operator's
# call: a firing redriven after its resolve was forgotten is announced again.
TOMBSTONE_S = 86400.0
# How long a group waits for the rest of an analyze run's transitions (SQS hands them to the alert
# function within seconds; a batch of them may be split across invocations): short against
# group_wait, long against a split batch.
AWAIT_S = 20.0


@dataclass(frozen=True)
class Member:
    finding: Finding  # the latest transition received for this alert
    announced: str | None = None  # the transition_id last announced, None if never
    received_at: float = 0.0  # when the group received `finding`

    @property
    def firing(self) -> bool:
        return self.finding.state == "firing"

    @property
    def told(self) -> bool:
        """Its current transition has been announced."""
        return self.announced == self.finding.transition_id

    @property
    def told_firing(self) -> bool:
        """Its current firing was announced (a resolve of it has something to close)."""
        return self.announced is not None and self.announced.split(":")[1] == "firing"

    @property
    def done(self) -> bool:
        """Nothing more to say (a tombstone): resolved and told, resolved before its firing was
        told, or a one-shot event told once."""
        if self.firing:
            return self.finding.one_shot and self.told
        return self.told or not self.told_firing


@dataclass(frozen=True)
class Group:
    key: str
    route: str
    labels: dict[str, str]
    created_at: float
    members: dict[str, Member] = field(default_factory=dict)  # fingerprint → member
    last_flush_at: float | None = None
    seq: int = 0
    version: int = 0
    epoch: str = ""  # random per creation of the group; part of every notification id
    outbox: Notification | None = None  # a flush claimed and being delivered
    lease_until: float = 0.0  # who claimed the outbox owns it until then


def order(f: Finding) -> tuple[float, float, bool]:
    """Where a transition stands in its alert's life: by when it was decided, then by the firing
    it belongs to (a re-fire starts later), then a resolve after its own firing — so two decided
    at the same instant still have an order."""
    return (f.at, f.since, f.state == "resolved")


def group_key(route: str, labels: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return f"{route}#{digest}"


def add(group: Group | None, finding: Finding, route: Route, labels: dict[str, str], now: float) -> Group:
    """The group with `finding` in it. A redelivered or out-of-date transition changes nothing."""
    g = group or Group(group_key(route.name, labels), route.name, labels, now, epoch=secrets.token_hex(6))
    old = g.members.get(finding.fingerprint)
    if old is not None and (
        old.finding.transition_id == finding.transition_id or order(old.finding) > order(finding)
    ):
        return g
    member = Member(finding, old.announced if old else None, now)
    return replace(g, members={**g.members, finding.fingerprint: member})


def _waited(g: Group, route: Route, silenced: Silenced) -> float:
    """How long the group's news waited before it reached the group: the least, over its news,
    of the time analyze held a firing beyond its `for`. A firing decided a minute after it could
    have been needs no further group_wait to collect its peers: they had that minute to start,
    and analyze decides every condition of a run together. 0 when any news did not wait (a
    resolve, a firing decided on time, a finding without `for`)."""
    late = []
    for m in g.members.values():
        if not _pending(m, route, silenced):
            continue
        f = m.finding
        if not m.firing or f.for_s is None:
            return 0.0
        late.append(max(0.0, f.at - f.since - f.for_s))
    return min(late, default=0.0)


def awaiting(g: Group) -> float | None:
    """Until when the group waits for transitions still on their way: a member whose latest
    transition was decided together with others (`Finding.decided_with`) while another member
    named there still holds an older transition than that run's. The wait ends when they arrive,
    or AWAIT_S after the member was received (a lost message must not hold the group)."""
    until = None
    for m in g.members.values():
        for fp in m.finding.decided_with:
            other = g.members.get(fp)
            if other is not None and other.finding.at < m.finding.at:
                end = m.received_at + AWAIT_S
                until = end if until is None else max(until, end)
                break
    return until


def _pending(m: Member, route: Route, silenced: Silenced) -> bool:
    """This member has news for the channels now."""
    if m.told or silenced(m.finding):
        return False
    return m.firing or (route.send_resolved and m.told_firing)


def _still_firing(m: Member, silenced: Silenced) -> bool:
    """This member fires, unsilenced, and is no told one-shot event (those are not repeated)."""
    return m.firing and not m.done and not silenced(m.finding)


def due_at(g: Group, route: Route, silenced: Silenced) -> float | None:
    """When the group should flush next: group_wait after it began, group_interval after the
    last flush when something changed, repeat_interval after it when nothing did but alerts
    still fire; None when it has nothing to say."""
    if any(_pending(m, route, silenced) for m in g.members.values()):
        if g.last_flush_at is None:
            due = g.created_at + max(0.0, route.group_wait_s - _waited(g, route, silenced))
        else:
            due = g.last_flush_at + route.group_interval_s
        wait = awaiting(g)
        return due if wait is None else max(due, wait)
    if g.last_flush_at is not None and any(_still_firing(m, silenced) for m in g.members.values()):
        return g.last_flush_at + route.repeat_interval_s
    return None


def plan(g: Group, route: Route, silenced: Silenced, now: float, mentions: list[str]) -> Notification | None:
    """The notification a flush at `now` sends, or None when there is nothing to send."""
    due = due_at(g, route, silenced)
    if due is None or due > now:
        return None
    firing = [m for m in g.members.values() if _still_firing(m, silenced)]
    resolved = [m for m in g.members.values() if not m.firing and _pending(m, route, silenced)]
    if not firing and not resolved:
        return None
    repeat = not any(_pending(m, route, silenced) for m in g.members.values())
    order = sorted(firing, key=lambda m: (_SEVERITY.get(m.finding.severity, 9), -m.finding.since))
    return Notification(
        id=f"{g.key}#{g.epoch}#{g.seq + 1}",
        route=g.route,
        group=dict(g.labels),
        # an alert told before and listed again is told as of this flush: its "for 11m" runs to
        # now, not to when it fired (a new one is told as analyze decided it, moments ago)
        firing=[replace(m.finding, at=max(m.finding.at, now)) if m.told else m.finding for m in order],
        resolved=[m.finding for m in resolved],
        new=[m.finding.fingerprint for m in order if not m.told and not _joined(m)],
        joined=[m.finding.fingerprint for m in order if not m.told and _joined(m)],
        mentions=mentions,
        repeat=repeat,
    )


_SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def _joined(m: Member) -> bool:
    """Its current transition is nodes joining a firing already announced (the same `since`): a
    join gets a transition id of its own, but it is not a new alert."""
    f = m.finding
    if not f.newly_joined or m.announced is None:
        return False
    base = f"{f.fingerprint}:firing:{int(f.since)}"
    return m.announced == base or m.announced.startswith(f"{base}:")


def claim(g: Group, n: Notification, now: float, lease_s: float) -> Group:
    """The group holding `n` in its outbox, leased to the caller for `lease_s`."""
    return replace(g, outbox=n, seq=g.seq + 1, lease_until=now + lease_s)


def complete(g: Group, n: Notification, route: Route, now: float) -> Group:
    """The group after `n` was delivered: each alert it listed is marked as announced in the
    state `n` told, even when the alert moved on since `n` was claimed (a resolve that arrived
    while a delivery was being retried: the channels now know of the firing, so the resolve is
    news for them); members with nothing more to say become tombstones, and expired ones leave."""
    told = {f.fingerprint: f.transition_id for f in n.findings}
    members = {fp: replace(m, announced=told[fp]) if fp in told else m for fp, m in g.members.items()}
    return replace(_expire(g, members, route, now), outbox=None, lease_until=0.0, last_flush_at=now)


def prune(g: Group, route: Route, now: float) -> Group:
    """The group without the tombstones older than TOMBSTONE_S (the same group when none is)."""
    return _expire(g, g.members, route, now)


def _expire(g: Group, members: dict[str, Member], route: Route, now: float) -> Group:
    keep: dict[str, Member] = {}
    for fp, m in members.items():
        if not m.firing and not m.told and not route.send_resolved:
            m = replace(m, announced=m.finding.transition_id)  # a resolve this route never tells
        if not (m.done and now - m.finding.at > TOMBSTONE_S):
            keep[fp] = _slim(m)
    return g if keep == g.members else replace(g, members=keep)


def _slim(m: Member) -> Member:
    """A tombstone keeps what it is compared by (fingerprint, state, since, at: `order` and the
    transition id), not what a message shows: the group item must stay small (DynamoDB: 400 KB)."""
    if not m.done or m.finding.summary == "":
        return m
    bare = replace(
        m.finding,
        title="",
        summary="",
        action="",
        nodes=[],
        gpus=[],
        users=[],
        containers=[],
        teams=[],
        values={},
        evidence=None,
        symptoms=[],
        decided_with=[],
    )
    return replace(m, finding=bare)
