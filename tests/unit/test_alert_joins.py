"""A node joining an alert already firing, from the state machine to what each channel is sent:
the join is its own transition, worded as one, and the alert keeps its identity (Alertmanager
labels) from its first announcement to its resolve."""

from __future__ import annotations

from dataclasses import replace

from gpulse.alerting.state import JOIN_EVERY_S, AlertRecord, Rule, decide
from gpulse.detect.base import Condition
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import alertmanager as am
from gpulse.notify import jandi, slack
from gpulse.notify.evidence import facts

RULES = {"imbalance": Rule("imbalance", "Cross-node imbalance", for_s=60)}


def stalled(nodes: list[str]) -> Condition:
    return Condition(
        rule="imbalance",
        subject={"cluster": "c1", "job": "slurm:77"},
        since=1000.0,
        severity="warning",
        summary=f"{len(nodes)} of 8 nodes of job slurm:77 idle",
        action="Read the stalled ranks' logs.",
        nodes=nodes,
        gpus=[f"{n}/{g}" for n in nodes for g in range(2)],
    )


def life() -> list[Finding]:
    """Fire on node-03; node-06 joins; it resolves: the transitions published, in order."""
    records: dict[str, AlertRecord] = {}
    told: list[Finding] = []
    for now, nodes in ((1060.0, ["node-03"]), (1060.0 + JOIN_EVERY_S, ["node-03", "node-06"]), (2000.0, [])):
        for d in decide("c1", [stalled(nodes)] if nodes else [], records, RULES, now):
            if d.record.outbox is not None:
                told.append(d.record.outbox)
            records[d.record.fingerprint] = replace(d.record, outbox=None)
    return told


def test_the_join_is_worded_as_one_in_every_channel() -> None:
    fire, join, resolve = life()
    assert [f.transition_id.split(":", 1)[1] for f in (fire, join, resolve)] == [
        "firing:1000",
        "firing:1000:joined1",
        "resolved:1000",
    ]
    said = facts(join)
    assert said.headline == (
        "[FIRING + node-06 JOINED] Cross-node imbalance — 2 of 8 nodes of job slurm:77 idle"
    )
    assert said.where == "cluster c1\nnode node-03\njoined since: node-06\nGPUs node-03/0, node-03/1"
    assert facts(fire).headline == "[FIRING] Cross-node imbalance — 1 of 8 nodes of job slurm:77 idle"
    assert facts(resolve).headline.startswith("[RESOLVED] Cross-node imbalance — was: 2 of 8 nodes")
    assert slack.render(single(join))["text"].startswith("🟠 [FIRING + node-06 JOINED] Cross-node imbalance")
    assert jandi.render(single(join))["body"].startswith("[FIRING + node-06 JOINED] Cross-node imbalance")


def test_alertmanager_sees_one_alert_that_grew() -> None:
    fire, join, resolve = life()
    posted = [am.postable(f, now=2000.0, lifetime_s=600.0) for f in (fire, join, resolve)]
    assert [p["labels"] for p in posted] == [posted[0]["labels"]] * 3
    assert posted[0]["labels"]["node"] == "node-03"
    assert [p["annotations"].get("joined") for p in posted] == [None, "node-06", "node-06"]
    assert [p["startsAt"] for p in posted] == [am.rfc3339(1000.0)] * 3


def test_the_record_keeps_when_it_was_last_told() -> None:
    """`told_at` (the join interval counts from it) survives the state table; a record written
    before it existed reads as None (a join is then told at once)."""
    from gpulse.alerting.records import _from_item, _to_item

    records: dict[str, AlertRecord] = {}
    [d] = decide("c1", [stalled(["node-03"])], records, RULES, 1060.0)
    key = {"pk": {"S": "alert#c1"}, "sk": {"S": d.record.fingerprint}}
    item = key | _to_item(d.record, 1060.0)
    assert _from_item(item) == d.record and d.record.told_at == 1060.0
    del item["told_at"]
    assert _from_item(item).told_at is None


def test_a_join_waits_for_an_unpublished_firing_to_be_told_first() -> None:
    """The FIRING's publish failed (it is still in the outbox) when node-06 joins: the join is not
    decided over it (it would replace the FIRING, never told); it is told after the FIRING."""
    records: dict[str, AlertRecord] = {}
    [fired] = decide("c1", [stalled(["node-03"])], records, RULES, 1060.0)
    records[fired.record.fingerprint] = fired.record  # outbox kept: the publish failed
    later = 1060.0 + JOIN_EVERY_S
    [held] = decide("c1", [stalled(["node-03", "node-06"])], records, RULES, later)
    assert held.record.outbox is not None
    assert held.record.outbox.transition_id.endswith(":firing:1000")
    records[held.record.fingerprint] = replace(held.record, outbox=None)  # now it is told
    [joined] = decide("c1", [stalled(["node-03", "node-06"])], records, RULES, later + 10)
    assert joined.record.outbox is not None and joined.record.outbox.newly_joined == ["node-06"]
