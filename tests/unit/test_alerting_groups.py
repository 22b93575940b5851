"""The grouping stage alone, with the clock passed in: group_wait, group_interval,
repeat_interval, resolved messages, silences, each transition told once."""

from __future__ import annotations

import dataclasses

from gpulse.alerting import groups as g
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.finding import Finding, with_state

T0 = 1_800_000_000.0
ROUTE = Route("ops", (ChannelRef("slack", "/gpulse/t/webhooks/ops"),))
LABELS = {"cluster": "a", "rule": "idle_held"}
NOT_SILENCED = lambda f: False  # noqa: E731


def idle(gpu: int, since: float = T0 - 600, at: float = T0) -> Finding:
    return Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint=f"fp{gpu:02d}",
        cluster="a",
        since=since,
        at=at,
        summary=f"GPU {gpu} idle",
        action="free it",
        nodes=["n1"],
        gpus=[f"n1/{gpu}"],
        users=["bob"],
    )


def fill(*findings: Finding, at: float = T0) -> g.Group:
    group: g.Group | None = None
    for f in findings:
        group = g.add(group, f, ROUTE, LABELS, at)
    assert group is not None
    return group


def flush(
    group: g.Group, now: float, silenced: g.Silenced = NOT_SILENCED
) -> tuple[g.Group, g.Notification | None]:
    n = g.plan(group, ROUTE, silenced, now, [])
    if n is None:
        return group, None
    return g.complete(g.claim(group, n, now, 90), n, ROUTE, now), n


def test_eight_idle_gpus_wait_group_wait_then_go_as_one_message() -> None:
    group = fill(*(idle(i) for i in range(8)))
    assert g.due_at(group, ROUTE, NOT_SILENCED) == T0 + 30
    assert g.plan(group, ROUTE, NOT_SILENCED, T0 + 29, []) is None
    group, n = flush(group, T0 + 30)
    assert n is not None
    assert [f.fingerprint for f in n.firing] == [f"fp{i:02d}" for i in range(8)]
    assert (
        n.new == [f"fp{i:02d}" for i in range(8)] and n.id == f"{group.key}#{group.epoch}#1" and not n.repeat
    )
    assert all(m.told for m in group.members.values())


def test_a_redelivered_transition_changes_nothing() -> None:
    group, _ = flush(fill(idle(1)), T0 + 30)
    assert g.add(group, idle(1), ROUTE, LABELS, T0 + 40) is group
    assert g.due_at(group, ROUTE, NOT_SILENCED) == T0 + 30 + 4 * 3600  # only the repeat is left


def test_news_after_a_flush_waits_group_interval_and_lists_the_whole_group() -> None:
    group, _ = flush(fill(idle(1)), T0 + 30)
    group = g.add(group, idle(2, at=T0 + 60), ROUTE, LABELS, T0 + 60)
    assert g.due_at(group, ROUTE, NOT_SILENCED) == T0 + 30 + 300
    group, n = flush(group, T0 + 330)
    assert n is not None and [f.fingerprint for f in n.firing] == ["fp01", "fp02"] and n.new == ["fp02"]


def test_a_join_of_an_announced_alert_is_told_as_joined_not_new() -> None:
    group, _ = flush(fill(idle(1), idle(2)), T0 + 30)
    grown = dataclasses.replace(idle(1, at=T0 + 60), joined=["node-06"], newly_joined=["node-06"])
    group = g.add(group, grown, ROUTE, LABELS, T0 + 60)
    group, n = flush(group, T0 + 330)
    assert n is not None and (n.new, n.joined) == ([], ["fp01"])
    # listed again for another alert's news: the join was told, it is not news twice
    _, n = flush(g.add(group, idle(3, at=T0 + 400), ROUTE, LABELS, T0 + 400), T0 + 630)
    assert n is not None and (n.new, n.joined) == (["fp03"], [])
    # a join before the first announcement: the alert is new to the channel
    _, first = flush(fill(grown), T0 + 90)
    assert first is not None and (first.new, first.joined) == (["fp01"], [])
    # the alert resolved and fired again (another `since`): new, though its finding says it grew
    again = dataclasses.replace(grown, since=T0 + 400, at=T0 + 400)
    group = g.add(group, with_state(idle(1), "resolved", T0 + 350), ROUTE, LABELS, T0 + 350)
    group, _ = flush(group, T0 + 630)
    group = g.add(group, again, ROUTE, LABELS, T0 + 640)
    group, n = flush(group, T0 + 930)
    assert n is not None and (n.new, n.joined) == (["fp01"], [])


def test_resolved_is_told_once_then_kept_as_a_tombstone_until_it_expires() -> None:
    group, _ = flush(fill(idle(1), idle(2)), T0 + 30)
    group = g.add(group, with_state(idle(1), "resolved", T0 + 100), ROUTE, LABELS, T0 + 100)
    group, n = flush(group, T0 + 330)
    assert n is not None
    assert [f.fingerprint for f in n.resolved] == ["fp01"] and [f.fingerprint for f in n.firing] == ["fp02"]
    assert [fp for fp, m in group.members.items() if not m.done] == ["fp02"]
    tomb = group.members["fp01"]
    assert tomb.done and (tomb.finding.state, tomb.finding.since) == ("resolved", T0 - 600)
    assert (tomb.finding.summary, tomb.finding.users, tomb.finding.evidence) == ("", [], None)  # kept small
    assert g.prune(group, ROUTE, T0 + 100 + g.TOMBSTONE_S) is group
    assert list(g.prune(group, ROUTE, T0 + 101 + g.TOMBSTONE_S).members) == ["fp02"]


def test_a_stale_redelivery_of_a_resolved_alerts_firing_is_ignored() -> None:
    group, _ = flush(fill(idle(1)), T0 + 30)
    group = g.add(group, with_state(idle(1), "resolved", T0 + 100), ROUTE, LABELS, T0 + 100)
    group, _ = flush(group, T0 + 330)
    assert g.add(group, idle(1), ROUTE, LABELS, T0 + 400) is group  # the firing of T0, again
    assert g.due_at(group, ROUTE, NOT_SILENCED) is None


def test_a_refire_after_the_group_emptied_gets_a_new_notification_id() -> None:
    group, first = flush(fill(idle(1)), T0 + 30)
    group = g.add(group, with_state(idle(1), "resolved", T0 + 100), ROUTE, LABELS, T0 + 100)
    group, _ = flush(group, T0 + 330)
    # the group's store deletes it once nothing is left in it; the next alert creates it anew
    reborn, again = flush(fill(idle(1, since=T0 + 500, at=T0 + 500), at=T0 + 500), T0 + 530)
    assert first is not None and again is not None and again.new == ["fp01"]
    assert reborn.key == group.key and reborn.epoch != group.epoch and again.id != first.id


def test_a_one_shot_event_is_told_once_and_never_repeated() -> None:
    xid = dataclasses.replace(idle(1), rule="hardware", one_shot=True)
    group, n = flush(fill(xid), T0 + 30)
    assert n is not None and n.new == ["fp01"]
    assert group.members["fp01"].done and g.due_at(group, ROUTE, NOT_SILENCED) is None
    assert g.add(group, xid, ROUTE, LABELS, T0 + 60) is group


def test_no_resolved_message_when_the_route_says_so() -> None:
    route = dataclasses.replace(ROUTE, send_resolved=False)
    group = fill(idle(1))
    n = g.plan(group, route, NOT_SILENCED, T0 + 30, [])
    assert n is not None
    group = g.complete(g.claim(group, n, T0 + 30, 90), n, route, T0 + 30)
    group = g.add(group, with_state(idle(1), "resolved", T0 + 100), route, LABELS, T0 + 100)
    assert g.due_at(group, route, NOT_SILENCED) is None
    assert g.prune(group, route, T0 + 101 + g.TOMBSTONE_S).members == {}


def test_an_alert_resolved_before_anyone_was_told_is_never_mentioned() -> None:
    group = fill(idle(1))
    group = g.add(group, with_state(idle(1), "resolved", T0 + 10), ROUTE, LABELS, T0 + 10)
    assert g.due_at(group, ROUTE, NOT_SILENCED) is None
    assert group.members["fp01"].done
    assert g.prune(group, ROUTE, T0 + 11 + g.TOMBSTONE_S).members == {}


def test_still_firing_is_repeated_after_repeat_interval() -> None:
    group, _ = flush(fill(idle(1)), T0 + 30)
    assert g.plan(group, ROUTE, NOT_SILENCED, T0 + 30 + 4 * 3600 - 1, []) is None
    group, n = flush(group, T0 + 30 + 4 * 3600)
    assert n is not None and n.repeat and n.new == [] and n.id.endswith("#2")


def test_a_silenced_alert_waits_and_is_told_when_the_silence_ends() -> None:
    ends = T0 + 3600
    silenced: g.Silenced = lambda f: f.fingerprint == "fp01" and now < ends  # noqa: E731
    now = T0 + 30
    group, n = flush(fill(idle(1)), now, silenced)
    assert n is None and g.due_at(group, ROUTE, silenced) is None
    now = ends
    group, n = flush(group, now, silenced)
    assert n is not None and [f.fingerprint for f in n.firing] == ["fp01"] and n.new == ["fp01"]


def test_an_older_transition_arriving_late_does_not_undo_a_newer_one() -> None:
    resolved = with_state(idle(1), "resolved", T0 + 100)
    group = fill(resolved)
    assert g.add(group, idle(1, at=T0), ROUTE, LABELS, T0 + 101) is group


def test_a_resolve_that_arrives_while_the_firing_is_being_retried_is_told_after_it() -> None:
    group = fill(idle(1))
    n = g.plan(group, ROUTE, NOT_SILENCED, T0 + 30, [])
    assert n is not None
    claimed = g.claim(group, n, T0 + 30, 90)  # a channel failed: the outbox waits for its retry
    claimed = g.add(claimed, with_state(idle(1), "resolved", T0 + 40), ROUTE, LABELS, T0 + 40)
    group = g.complete(claimed, n, ROUTE, T0 + 45)  # the retry delivered the firing
    assert group.members["fp01"].told_firing and not group.members["fp01"].done
    group, resolved = flush(group, T0 + 45 + 300)  # group_interval after that flush
    assert resolved is not None and [f.state for f in resolved.resolved] == ["resolved"]
