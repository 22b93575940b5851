"""The alert state machine, driven with a hand-set clock."""

from __future__ import annotations

from dataclasses import replace

from gpulse.alerting.state import AlertRecord, Decision, Rule, decide
from gpulse.detect.base import Condition
from gpulse.finding import fingerprint

RULES = {"imbalance": Rule("imbalance", "Cross-node imbalance", for_s=60)}
SUBJECT = {"cluster": "c1", "node_group": None}
FP = fingerprint("imbalance", **SUBJECT)


def cond(since: float, nodes: list[str] | None = None) -> Condition:
    return Condition(
        rule="imbalance",
        subject=dict(SUBJECT),
        since=since,
        severity="warning",
        summary="2 of 8 nodes idle",
        action="look",
        nodes=nodes or ["node-03", "node-06"],
    )


def step(records: dict[str, AlertRecord], conditions: list[Condition], now: float) -> list[Decision]:
    decisions = decide("c1", conditions, records, RULES, now)
    for d in decisions:  # apply as the store would
        if d.delete:
            records.pop(d.record.fingerprint)
        else:
            records[d.record.fingerprint] = d.record
    return decisions


def test_pending_then_firing_then_resolved_each_announced_once() -> None:
    records: dict[str, AlertRecord] = {}
    [d] = step(records, [cond(1000)], now=1030)
    assert (d.record.state, d.record.since, d.record.outbox, d.expected_version) == (
        "pending",
        1000,
        None,
        None,
    )

    [d] = step(records, [cond(1000)], now=1060)
    assert (d.record.state, d.expected_version, d.record.version) == ("firing", 1, 2)
    assert d.record.outbox is not None
    assert (d.record.outbox.state, d.record.outbox.since, d.record.outbox.at) == ("firing", 1000, 1060)
    assert d.record.outbox.transition_id == f"{FP}:firing:1000"
    records[FP] = replace(records[FP], outbox=None, version=3)  # published and cleared

    [d] = step(records, [cond(1000, ["node-03"])], now=1120)  # what was announced stands
    assert (d.record.state, d.record.outbox, d.record.finding.nodes) == (
        "firing",
        None,
        ["node-03", "node-06"],
    )
    assert d.record.finding.at == 1120

    [d] = step(records, [], now=1180)
    assert d.record.state == "resolved"
    assert d.record.outbox is not None
    assert (d.record.outbox.state, d.record.outbox.since, d.record.outbox.at) == ("resolved", 1000, 1180)
    assert d.record.outbox.transition_id == f"{FP}:resolved:1000"
    records[FP] = replace(records[FP], outbox=None, version=records[FP].version + 1)

    [d] = step(records, [], now=1240)  # a resolved record with nothing left to publish is removed
    assert d.delete
    assert records == {}


def test_a_condition_already_older_than_for_fires_at_once() -> None:
    [d] = step({}, [cond(900)], now=1000)
    assert (d.record.state, d.expected_version) == ("firing", None)
    assert d.record.outbox is not None


def test_pending_that_clears_is_dropped_silently() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1030)
    [d] = step(records, [], now=1045)
    assert d.delete and d.record.outbox is None
    assert records == {}


def test_pending_follows_the_current_run_after_a_flap() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1030)
    [d] = step(records, [cond(1040)], now=1050)  # the run broke and began again at 1040
    assert (d.record.state, d.record.since) == ("pending", 1040)


def test_firing_keeps_its_original_since() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1070)
    [d] = step(records, [cond(1050)], now=1130)
    assert (d.record.state, d.record.since, d.record.finding.since) == ("firing", 1000, 1000)


def test_an_unpublished_outbox_is_kept_until_published() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1070)  # firing, outbox not yet cleared
    [d] = step(records, [cond(1000)], now=1080)
    assert d.record.outbox is not None and d.record.outbox.state == "firing"


def test_every_write_is_conditional_on_the_version_read() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1010)
    v = records[FP].version
    [d] = step(records, [cond(1000)], now=1020)
    assert (d.expected_version, d.record.version) == (v, v + 1)


def test_a_one_shot_rule_fires_once_and_ends_without_a_resolve() -> None:
    rules = {"mig_layout": Rule("mig_layout", "MIG layout changed", for_s=0, one_shot=True)}
    event = Condition(
        rule="mig_layout",
        subject={"cluster": "c1", "node": "n1", "gpu": 0},
        since=1000,
        severity="info",
        summary="layout changed",
        action="",
    )
    records: dict[str, AlertRecord] = {}
    [d] = decide("c1", [event], records, rules, 1010)
    assert d.record.state == "firing" and d.record.outbox is not None
    records[d.record.fingerprint] = replace(d.record, outbox=None)
    [d] = decide("c1", [], records, rules, 1070)
    assert d.delete and d.record.outbox is None


def test_imbalance_inhibits_the_network_alert_on_the_same_nodes_only() -> None:
    from gpulse.analyze import inhibit

    def on(rule: str, nodes: list[str]) -> Condition:
        return Condition(
            rule=rule,
            subject={"cluster": "c1"},
            since=0,
            severity="warning",
            summary="",
            action="",
            nodes=nodes,
        )

    imbalance = on("imbalance", ["node-03", "node-06"])
    same = on("network", ["node-03", "node-06"])
    wider = on("network", ["node-03", "node-07"])
    assert inhibit([imbalance, same, wider]) == [imbalance, replace(same, muted_by="imbalance"), wider]


def test_a_muted_firing_alert_is_held_without_a_word_and_resolves_when_its_condition_ends() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1060)
    records[FP] = replace(records[FP], outbox=None, version=3)  # announced firing, published
    held = records[FP]

    # muted (a wider alert now says it): neither resolved nor announced again; only the time its
    # condition last held moves (its hold-down counts from there)
    [d] = step(records, [replace(cond(1000), muted_by="silent_node")], now=1120)
    assert records[FP] == replace(held, finding=replace(held.finding, at=1120), version=4)
    assert d.expected_version == 3
    # unmuted and still there: still the same firing alert, not a new one
    [d] = step(records, [cond(1000)], now=1180)
    assert (d.record.state, d.record.since, d.record.outbox) == ("firing", 1000, None)
    # muted, then its own condition ends: resolved then, and told
    step(records, [replace(cond(1000), muted_by="silent_node")], now=1240)
    [d] = step(records, [], now=1300)
    assert d.record.state == "resolved" and d.record.outbox is not None


def test_a_muted_condition_never_goes_pending_and_drops_a_pending_one() -> None:
    records: dict[str, AlertRecord] = {}
    assert step(records, [replace(cond(1000), muted_by="imbalance")], now=1100) == []
    step(records, [cond(1100)], now=1120)
    assert records[FP].state == "pending"
    [d] = step(records, [replace(cond(1100), muted_by="imbalance")], now=1180)  # would have fired
    assert d.delete and records == {}


# --- hold-down before resolve (keep_firing_for) ---------------------------------------------------

HELD = {"imbalance": Rule("imbalance", "Cross-node imbalance", for_s=60, keep_firing_for_s=120)}


def held_step(records: dict[str, AlertRecord], conditions: list[Condition], now: float) -> list[Decision]:
    decisions = decide("c1", conditions, records, HELD, now)
    for d in decisions:
        if d.delete:
            records.pop(d.record.fingerprint)
        else:  # published and cleared at once, as settle does
            records[d.record.fingerprint] = d.record
    return decisions


def test_a_fault_that_pauses_for_less_than_the_hold_down_is_one_alert() -> None:
    records: dict[str, AlertRecord] = {}
    [d] = held_step(records, [cond(1000)], now=1060)
    assert d.record.state == "firing" and d.record.outbox is not None
    records[FP] = replace(records[FP], outbox=None)
    # the condition pauses (a checkpoint): 60 s and 119 s after it last held, nothing is decided
    assert held_step(records, [], now=1120) == []
    assert held_step(records, [], now=1179) == []
    assert records[FP].state == "firing"
    # it comes back with a later start: the same alert, its first start, nothing announced
    [d] = held_step(records, [cond(1170)], now=1180)
    assert (d.record.state, d.record.since, d.record.outbox, d.record.finding.at) == (
        "firing",
        1000,
        None,
        1180,
    )


def test_the_hold_down_counts_from_the_last_run_the_condition_held() -> None:
    records: dict[str, AlertRecord] = {}
    held_step(records, [cond(1000)], now=1060)
    records[FP] = replace(records[FP], outbox=None)
    held_step(records, [cond(1000)], now=1120)  # held at 1120
    assert held_step(records, [], now=1239) == []  # 119 s absent
    [d] = held_step(records, [], now=1240)  # 120 s absent: resolved, once
    assert d.record.state == "resolved" and d.record.outbox is not None
    assert (d.record.outbox.state, d.record.outbox.since, d.record.outbox.at) == ("resolved", 1000, 1240)


def test_without_a_hold_down_a_gone_condition_resolves_at_once() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000)], now=1060)
    records[FP] = replace(records[FP], outbox=None)
    [d] = step(records, [], now=1061)
    assert d.record.state == "resolved"


def test_a_muted_alert_holds_down_from_the_last_run_it_was_muted() -> None:
    records: dict[str, AlertRecord] = {}
    held_step(records, [cond(1000)], now=1060)
    records[FP] = replace(records[FP], outbox=None)
    held_step(records, [replace(cond(1000), muted_by="silent_node")], now=1200)
    assert held_step(records, [], now=1319) == []
    [d] = held_step(records, [], now=1320)
    assert d.record.state == "resolved"


def test_a_pending_alert_has_no_hold_down() -> None:
    records: dict[str, AlertRecord] = {}
    held_step(records, [cond(1000)], now=1030)
    [d] = held_step(records, [], now=1040)
    assert d.delete and records == {}


# --- severity escalation ----------------------------------------------------------------------------


def test_an_escalation_is_announced_as_its_own_transition_and_never_twice() -> None:
    records: dict[str, AlertRecord] = {}
    held_step(records, [cond(1000)], now=1060)
    first = records[FP].outbox
    assert first is not None and first.transition_id == f"{FP}:firing:1000"
    records[FP] = replace(records[FP], outbox=None)
    critical = replace(cond(1000), severity="critical", summary="GPU memory 97 % full")
    [d] = held_step(records, [critical], now=1120)
    out = d.record.outbox
    assert out is not None
    assert (out.state, out.severity, out.escalated_from, out.since, out.summary) == (
        "firing",
        "critical",
        "warning",
        1000,
        "GPU memory 97 % full",
    )
    assert out.transition_id == f"{FP}:firing:1000:critical"
    records[FP] = replace(records[FP], outbox=None)
    # still critical, then back to warning: nothing more is announced (the announced severity stands)
    [d] = held_step(records, [critical], now=1180)
    assert d.record.outbox is None
    [d] = held_step(records, [cond(1000)], now=1240)
    assert (d.record.outbox, d.record.finding.severity) == (None, "critical")
    # and it resolves as one alert
    held_step(records, [], now=1400)
    out = records[FP].outbox
    assert out is not None and out.transition_id == f"{FP}:resolved:1000"


# --- nodes joining an alert already firing -------------------------------------------------------


def published(records: dict[str, AlertRecord]) -> list[str] | None:
    """The nodes the record's outbox announces as joined (None: nothing to publish), then clears it."""
    out = records[FP].outbox
    records[FP] = replace(records[FP], outbox=None)
    return None if out is None else list(out.newly_joined)


def test_a_node_that_joins_a_firing_alert_is_announced_once_in_its_life() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000, ["node-03"])], now=1060)
    assert published(records) == []  # the firing itself
    assert records[FP].told_at == 1060

    grown = replace(cond(1000, ["node-03", "node-06"]), summary="2 of 8 nodes idle")
    step(records, [grown], now=1360)  # 300 s after the firing was told
    out = records[FP].outbox
    assert out is not None
    assert (
        out.state,
        out.since,
        out.nodes,
        out.joined,
        out.newly_joined,
        out.summary,
        out.escalated_from,
    ) == (
        "firing",
        1000,
        ["node-03"],  # the first announcement's: the alert's identity
        ["node-06"],
        ["node-06"],
        "2 of 8 nodes idle",
        None,
    )
    assert out.transition_id == f"{FP}:firing:1000:joined1"
    published(records)
    # it leaves while the alert holds: not news; it comes back: told before, not news either
    step(records, [cond(1000, ["node-03"])], now=1720)
    assert published(records) is None
    step(records, [grown], now=1780)
    assert published(records) is None
    # the resolve closes the one alert, and says nothing of a join
    step(records, [], now=1840)
    out = records[FP].outbox
    assert out is not None
    assert (out.transition_id, out.joined, out.newly_joined) == (f"{FP}:resolved:1000", ["node-06"], [])


def test_joins_are_told_at_most_once_per_interval_and_only_if_still_there() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000, ["node-03"])], now=1060)
    published(records)
    # node-05 joins 60 s after the firing was told: it waits for JOIN_EVERY_S
    step(records, [cond(1000, ["node-03", "node-05"])], now=1120)
    assert published(records) is None
    # it left before the interval was up: never told; node-07 is there when it is up
    step(records, [cond(1000, ["node-03", "node-07"])], now=1360)
    assert published(records) == ["node-07"]
    # node-01 and node-05 join 60 s later: told together, 300 s after node-07 was
    step(records, [cond(1000, ["node-01", "node-03", "node-05"])], now=1420)
    assert published(records) is None
    step(records, [cond(1000, ["node-01", "node-03", "node-05"])], now=1660)
    out = records[FP].outbox
    assert out is not None
    assert (out.joined, out.newly_joined, out.transition_id) == (
        ["node-07", "node-01", "node-05"],
        ["node-01", "node-05"],
        f"{FP}:firing:1000:joined3",
    )


def test_a_join_and_an_escalation_in_one_run_are_one_transition() -> None:
    records: dict[str, AlertRecord] = {}
    step(records, [cond(1000, ["node-03"])], now=1060)
    published(records)
    worse = replace(cond(1000, ["node-03", "node-06"]), severity="critical")
    step(records, [worse], now=1360)
    out = records[FP].outbox
    assert out is not None
    assert (out.severity, out.escalated_from, out.newly_joined, out.transition_id) == (
        "critical",
        "warning",
        ["node-06"],
        f"{FP}:firing:1000:critical:joined1",
    )
