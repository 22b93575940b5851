"""What a flush tells: never a stale "firing" for what one analyze run resolved together, "for"
measured to the flush, escalations and an incident's symptoms in the message."""

from __future__ import annotations

import dataclasses

from gpulse.alerting import groups as g
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.finding import Finding, with_state
from gpulse.notification import single
from gpulse.notify import evidence as ev
from gpulse.notify import jandi, slack

T0 = 1_800_000_000.0
ROUTE = Route("ops", (ChannelRef("slack", "/gpulse/t/webhooks/ops"),), group_wait_s=30, group_interval_s=300)
LABELS = {"cluster": "a", "rule": "idle_held"}
NOT_SILENCED = lambda f: False  # noqa: E731


def idle(gpu: int, since: float = T0 - 660, at: float = T0 - 600) -> Finding:
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
    )


def told(group: g.Group, now: float) -> tuple[g.Group, g.Notification]:
    n = g.plan(group, ROUTE, NOT_SILENCED, now, [])
    assert n is not None
    return g.complete(g.claim(group, n, now, 90), n, ROUTE, now), n


def sixteen_firing_and_told() -> g.Group:
    group: g.Group | None = None
    for i in range(16):
        group = g.add(group, idle(i), ROUTE, LABELS, T0 - 600)
    assert group is not None
    group, n = told(group, T0 - 570)
    assert len(n.firing) == 16
    return group


def test_a_run_that_resolves_sixteen_is_told_as_sixteen_resolved_not_fifteen_firing() -> None:
    group = sixteen_firing_and_told()
    run = [f"fp{i:02d}" for i in range(16)]
    resolves = [dataclasses.replace(with_state(idle(i), "resolved", T0), decided_with=run) for i in range(16)]
    # the first resolve arrives alone (the others are in the next SQS batch): the group waits
    group = g.add(group, resolves[0], ROUTE, LABELS, T0 + 5)
    assert g.awaiting(group) == T0 + 5 + g.AWAIT_S
    assert g.due_at(group, ROUTE, NOT_SILENCED) == T0 + 5 + g.AWAIT_S
    assert g.plan(group, ROUTE, NOT_SILENCED, T0 + 10, []) is None
    for f in resolves[1:]:
        group = g.add(group, f, ROUTE, LABELS, T0 + 8)
    # all in: no more waiting (group_interval has long passed since the last flush)
    assert g.awaiting(group) is None
    assert g.due_at(group, ROUTE, NOT_SILENCED) == T0 - 570 + 300
    group, n = told(group, T0 + 10)
    assert (len(n.firing), len(n.resolved)) == (0, 16)


def test_the_wait_for_the_rest_of_a_run_is_bounded() -> None:
    group = sixteen_firing_and_told()
    first = dataclasses.replace(with_state(idle(0), "resolved", T0), decided_with=["fp00", "fp01"])
    group = g.add(group, first, ROUTE, LABELS, T0 + 5)
    # fp01's resolve was lost: after AWAIT_S the group tells what it has
    group, n = told(group, T0 + 5 + g.AWAIT_S)
    assert ([f.fingerprint for f in n.resolved], len(n.firing)) == (["fp00"], 15)


def test_a_transition_decided_alone_does_not_wait() -> None:
    group = sixteen_firing_and_told()
    group = g.add(group, with_state(idle(0), "resolved", T0), ROUTE, LABELS, T0 + 5)
    assert g.awaiting(group) is None


def test_for_is_the_time_the_condition_has_held_at_the_flush() -> None:
    group = g.add(None, idle(0), ROUTE, LABELS, T0 - 600)
    # analyze decided the firing at T0 - 600 (60 s after it began); the group tells it 30 s later
    # as decided
    group, n = told(group, T0 - 570)
    assert n.firing[0].at == T0 - 600
    assert ev.short_details(n.firing[0]) == "n1 GPU 0 · for 1m"
    # listed again in a later flush (another alert of the group fired), and in the repeat four
    # hours later, it says how long it has really held
    group = g.add(group, idle(1, since=T0 - 100, at=T0), ROUTE, LABELS, T0)
    group, n = told(group, T0 + 30)
    assert [ev.short_details(f) for f in n.firing] == ["n1 GPU 1 · for 1m 40s", "n1 GPU 0 · for 11m 30s"]
    group, n = told(group, T0 + 30 + ROUTE.repeat_interval_s)
    assert n.repeat
    assert [ev.short_details(f) for f in n.firing] == ["n1 GPU 1 · for 4h 2m", "n1 GPU 0 · for 4h 11m"]
    assert group.members["fp00"].finding.at == T0 - 600  # what was received is unchanged


def test_an_escalation_is_worded_as_one() -> None:
    raised = dataclasses.replace(idle(0), severity="critical", escalated_from="warning", summary="GPU 0 full")
    assert ev.facts(raised).headline == "[ESCALATED from warning] GPU held but idle — GPU 0 full"
    assert ev.facts(raised, repeat=True).headline == "[STILL FIRING] GPU held but idle — GPU 0 full"
    assert (
        slack.render(single(raised))["text"] == "🔴 [ESCALATED from warning] GPU held but idle — GPU 0 full"
    )


def test_an_incident_lists_its_symptoms_under_the_root_cause() -> None:
    root = dataclasses.replace(
        idle(0),
        rule="imbalance",
        title="Cross-node imbalance",
        summary="2 of 8 nodes out of step",
        symptoms=[
            {"rule": "idle_held", "subject": f"n{n}/{i}", "summary": f"GPU {i} idle, 70 GiB held"}
            for n in (3, 6)
            for i in range(8)
        ],
    )
    text = ev.symptoms_text(root)
    assert text == "\n".join(
        [
            "16 symptoms of this cause, not told apart:",
            *(f"• idle_held · n3/{i} · GPU {i} idle, 70 GiB held" for i in range(8)),
            "• idle_held · n6/0 · GPU 0 idle, 70 GiB held",
            "• idle_held · n6/1 · GPU 1 idle, 70 GiB held",
            "… and 6 more",
        ]
    )
    blocks = slack.render(single(root))["blocks"]
    assert {"type": "section", "text": {"type": "mrkdwn", "text": text}} in blocks
    info = jandi.render(single(root))["connectInfo"]
    assert {"title": "Symptoms", "description": text} in info
    assert ev.symptoms_text(idle(0)) is None
    assert all(i["title"] != "Symptoms" for i in jandi.render(single(idle(0)))["connectInfo"])


def test_group_wait_counts_the_time_analyze_held_a_firing_beyond_its_for() -> None:
    # idle(0) began at T0 - 660 and was decided firing at T0 - 600: 60 s after it began
    def first_due(*findings: Finding) -> float | None:
        group: g.Group | None = None
        for f in findings:
            group = g.add(group, f, ROUTE, LABELS, T0 - 590)
        assert group is not None
        return g.due_at(group, ROUTE, NOT_SILENCED)

    on_time = dataclasses.replace(idle(0), for_s=60.0)
    assert first_due(on_time) == T0 - 590 + 30  # fired as soon as it could: the full group_wait
    late_15 = dataclasses.replace(idle(1), for_s=45.0)
    assert first_due(late_15) == T0 - 590 + 15
    late_40 = dataclasses.replace(idle(2), for_s=20.0)
    assert first_due(late_40) == T0 - 590  # waited longer than group_wait already: at once
    # the least any news waited counts: one that fired on time still collects its peers
    assert first_due(late_40, on_time) == T0 - 590 + 30
    assert first_due(late_40, late_15) == T0 - 590 + 15
    # a finding that does not say its `for` (an older analyze) waits the whole group_wait
    assert first_due(idle(3)) == T0 - 590 + 30
