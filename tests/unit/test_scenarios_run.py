"""The scenario runner: its matching and scoring on hand-made alarms, its alert bookkeeping, the
real trace as documents, and the quick suite scored over the catalogue as registered now."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from gpulse.alerting.state import decide
from gpulse.detect.base import Condition
from gpulse.detect.catalogue import CATALOGUE
from gpulse.finding import Finding
from gpulse.wire.batch import parse
from scenarios.faults import GroundTruth
from scenarios.run import (
    TRACE,
    Alarm,
    Replay,
    ScenarioResult,
    main,
    missed,
    report,
    run_all,
    score,
    subject_matches,
    trace_batches,
    unmatched,
)
from scenarios.suite import suite


def truth(rule: str, subject: dict[str, Any], start: float, end: float, **kw: Any) -> GroundTruth:
    return GroundTruth("s", rule, subject, start, end, "hand-made", **kw)


def alarm(rule: str, subject: dict[str, Any], published: float, scenario: str = "s", **kw: Any) -> Alarm:
    fields: dict[str, Any] = {
        "nodes": (subject["node"],) if "node" in subject else (),
        "gpus": (),
        "mig": None,
        "since": published - 100,
        "at": published - 20,
        "summary": f"{rule} {subject}",
    }
    fields.update(kw)
    return Alarm(
        scenario=scenario,
        rule=rule,
        fingerprint=f"{rule}{subject}",
        subject=subject,
        published=published,
        **fields,
    )


def result(
    name: str, truths: list[GroundTruth], alarms: list[Alarm], *, healthy: bool = False
) -> ScenarioResult:
    return ScenarioResult(name, healthy, 4, 43_200.0, 0.0, tuple(truths), tuple(alarms), 0, 0, 0.0)


FAULTS = [
    truth("idle_held", {"node": "n1", "gpu": 2}, 1000, 1600),
    truth("idle_held", {"node": "n2", "gpu": 0}, 1000, 1600),
    truth("imbalance", {"node": "n3"}, 2000, 2600),
    truth("imbalance", {"node": "n4"}, 2000, 2600),
    truth("gpu_imbalance", {"node": "n5"}, 3000, 3600),
]
GROUP = {"cluster": "c", "node_group": "g"}
ALARMS = [
    alarm("idle_held", {"node": "n1", "gpu": 2}, 1320),  # A: 320 s
    alarm("idle_held", {"node": "n1", "gpu": 3}, 1320),  # another GPU
    alarm("idle_held", {"node": "n1", "gpu": 2}, 1800),  # after end + 120 s
    alarm("idle_held", {"node": "n5", "gpu": 1}, 3320),  # a co-symptom of the gpu_imbalance fault
    alarm("imbalance", GROUP, 2140, nodes=("n3", "n4")),  # both imbalance faults, 140 s
    alarm("imbalance", GROUP, 2500, nodes=("n3",)),  # fired again for n3
    alarm("gpu_imbalance", {"node": "n5", "container": "abc"}, 3320),
]


def test_score_counts_recall_precision_delays_and_false_alarms_exactly() -> None:
    results = [
        result("s", FAULTS, ALARMS),
        result("h", [], [alarm("idle_held", {"node": "n9", "gpu": 0}, 500, scenario="h")], healthy=True),
    ]
    scores = score(results, ["idle_held", "imbalance", "gpu_imbalance", "numa"])
    idle, imb, gpu, numa = (scores[r] for r in ("idle_held", "imbalance", "gpu_imbalance", "numa"))
    assert (idle.faults, idle.detected, idle.recall) == (2, 1, 0.5)
    assert (idle.alarms, idle.matched, idle.explained, idle.precision) == (5, 1, 1, 0.4)
    assert (idle.delays, idle.bound_s, idle.late) == ((320.0,), 420.0, 0)
    assert (idle.healthy_alarms, idle.node_days, idle.false_per_node_day) == (1, 2.0, 0.5)
    assert (imb.recall, imb.precision, imb.delays, imb.extra, imb.bound_s) == (
        1.0,
        1.0,
        (140.0, 140.0),
        1,
        180.0,
    )
    assert (gpu.recall, gpu.precision, gpu.delay_median, gpu.delay_max) == (1.0, 1.0, 320.0, 320.0)
    assert (numa.faults, numa.recall, numa.precision, numa.alarms) == (0, None, None, 0)


def test_firing_share_and_messages_per_incident_count_each_faults_time_and_transitions() -> None:
    faults = [
        truth("throttling", {"node": "n1", "gpu": 0}, 1000, 2000),
        truth("imbalance", {"node": "n2"}, 1000, 2000),
        truth("throttling", {"node": "n3", "gpu": 1}, 1000, 2000),  # missed
    ]
    alarms = [
        # n1: fired at 1200, resolved in a pause at 1400, fired again at 1500 until past the end
        alarm("throttling", {"node": "n1", "gpu": 0}, 1200, resolved=1400),
        alarm("throttling", {"node": "n1", "gpu": 0}, 1500, resolved=2300),
        # n2: the root cause from 1100 on, two idle GPUs as symptoms, one of them resolved
        alarm("imbalance", GROUP, 1100, nodes=("n2",)),
        alarm("idle_held", {"node": "n2", "gpu": 0}, 1400, resolved=1900),
        alarm("idle_held", {"node": "n2", "gpu": 1}, 1400),
    ]
    scores = score([result("s", faults, alarms)], ["throttling", "imbalance"])
    hot, imb = scores["throttling"], scores["imbalance"]
    assert hot.firing_shares == (0.2 + 0.5, 0.0)  # 200 s + 500 s of 1000; the missed fault: none
    assert hot.firing_share == 0.35
    assert (hot.messages, hot.messages_per_incident) == ((4, 0), 2.0)
    assert (imb.firing_shares, imb.messages) == ((0.9,), (1 + 2 + 1,))
    assert imb.row()["messages_per_incident"] == 4.0


def test_an_escalation_is_a_message_of_the_same_alarm_not_another_alarm() -> None:
    r = Replay("s")
    warn = Finding("memory_pressure", "Memory", "warning", "firing", "fp", "c", 900.0, 1000.0, "s", "a")
    r.publish(warn, 1015.0)
    r.publish(replace(warn, severity="critical", escalated_from="warning", at=1100.0), 1115.0)
    r.publish(replace(warn, state="resolved", at=1200.0), 1215.0)
    [only] = r.alarms
    assert (only.published, only.escalations, only.resolved) == (1015.0, 1, 1215.0)
    fault = truth("memory_pressure", {}, 900, 1300)
    scored = score([result("s", [fault], [only])], ["memory_pressure"])["memory_pressure"]
    assert (scored.extra, scored.messages) == (0, (3,))


def test_a_co_symptom_counts_only_inside_its_faults_incident() -> None:
    """Another rule's alarm is correct while it rides with a fault's own alarm (a node in common,
    firing together); before that alarm fired, or about other nodes, it is a false alarm, even
    in the same job (that fault's alarm may fire for hours: the job alone explains nothing)."""
    faults = [truth("imbalance", {"node": "n2"}, 1000, 2000)]
    root = alarm("imbalance", GROUP, 1200, nodes=("n2",), job="slurm:7", resolved=1800)
    alarms = [
        root,
        alarm("idle_held", {"node": "n2", "gpu": 0}, 1260),  # a node in common, while it fires
        alarm("network", GROUP, 1320, nodes=("n6",), job="slurm:7"),  # the same job, no node in common
        alarm("idle_held", {"node": "n2", "gpu": 1}, 1900, resolved=2000),  # within the grace
        alarm("idle_held", {"node": "n2", "gpu": 2}, 600, resolved=1000),  # before the root fired
        alarm("network", GROUP, 1320, nodes=("n7",), job="slurm:8"),  # another job
        alarm("idle_held", {"node": "n2", "gpu": 3}, 2100),  # after the root resolved + 120 s
    ]
    results = [result("s", faults, alarms)]
    scores = score(results, ["imbalance", "idle_held", "network"])
    assert [(scores[r].alarms, scores[r].explained) for r in ("imbalance", "idle_held", "network")] == [
        (1, 0),
        (4, 2),
        (2, 0),
    ]
    assert scores["imbalance"].messages == (2 + 1 + 2,)
    assert [(a.rule, a.nodes, a.published) for a in unmatched(results)] == [
        ("network", ("n6",), 1320),
        ("idle_held", ("n2",), 600),
        ("network", ("n7",), 1320),
        ("idle_held", ("n2",), 2100),
    ]


def test_a_join_is_a_message_of_the_same_alarm_and_names_its_node() -> None:
    r = Replay("s")
    one = Finding(
        "imbalance", "Imbalance", "warning", "firing", "fp", "c", 900.0, 1000.0, "s", "a", nodes=["n1"]
    )
    r.publish(one, 1015.0)
    r.publish(replace(one, at=1300.0, joined=["n4"], newly_joined=["n4"]), 1315.0)
    [only] = r.alarms
    assert (only.nodes, only.joins, only.escalations) == (("n1", "n4"), 1, 0)
    late = truth("imbalance", {"node": "n4"}, 1200, 1600)
    scored = score([result("s", [late], [only])], ["imbalance"])["imbalance"]
    assert (scored.detected, scored.messages) == (1, (2,))


def test_a_transition_that_escalates_and_joins_at_once_is_one_message() -> None:
    r = Replay("s")
    one = Finding(
        "imbalance", "Imbalance", "warning", "firing", "fp", "c", 900.0, 1000.0, "s", "a", nodes=["n1"]
    )
    r.publish(one, 1015.0)
    both = replace(one, severity="critical", escalated_from="warning", joined=["n4"], newly_joined=["n4"])
    r.publish(replace(both, at=1300.0), 1315.0)
    r.publish(replace(both, state="resolved", at=1400.0), 1415.0)
    [only] = r.alarms
    assert (only.escalations, only.joins, only.retold, only.resolved) == (1, 1, 1, 1415.0)
    fault = truth("imbalance", {"node": "n1"}, 900, 1500)
    scored = score([result("s", [fault], [only])], ["imbalance"])["imbalance"]
    assert scored.messages == (3,)  # fired, told again once, resolved


def test_the_table_shows_the_explained_alarms_of_each_rule() -> None:
    faults = [truth("imbalance", {"node": "n2"}, 1000, 2000)]
    alarms = [
        alarm("imbalance", GROUP, 1200, nodes=("n2",), resolved=1800),
        alarm("idle_held", {"node": "n2", "gpu": 0}, 1260),
    ]
    results = [result("s", faults, alarms)]
    scores = score(results, ["imbalance", "idle_held"])
    out = io.StringIO()
    report(results, scores, {}, out, lambda _: None)
    head, imb, idle = out.getvalue().splitlines()[:3]
    assert head.split()[:6] == ["rule", "faults", "recall", "alarms", "expl", "prec"]
    assert imb.split()[:6] == ["imbalance", "1", "1.00", "1", "0", "1.00"]
    assert idle.split()[:6] == ["idle_held", "0", "-", "1", "1", "1.00"]


def test_unmatched_alarms_and_missed_faults_are_listed() -> None:
    results = [result("s", FAULTS, ALARMS)]
    assert [(a.rule, a.subject, a.published) for a in unmatched(results)] == [
        ("idle_held", {"node": "n1", "gpu": 3}, 1320),
        ("idle_held", {"node": "n1", "gpu": 2}, 1800),
    ]
    assert [(t.rule, t.subject) for t in missed(results)] == [("idle_held", {"node": "n2", "gpu": 0})]


def test_a_delay_past_the_bound_plus_the_faults_allowance_is_late() -> None:
    faults = [
        truth("network", {"node": "n1"}, 1000, 1600, allow_s=120),
        truth("network", {"node": "n2"}, 1000, 1600),
    ]
    alarms = [alarm("network", {"node": "n1"}, 1290), alarm("network", {"node": "n2"}, 1290)]
    s = score([result("s", faults, alarms)], ["network"])["network"]
    assert (s.delays, s.bound_s, s.allow_s, s.late) == ((290.0, 290.0), 180.0, 120.0, 1)


@pytest.mark.parametrize(
    ("subject", "kw", "expected"),
    [
        ({"node": "n1", "gpu": 2}, {}, True),
        ({"node": "n1", "gpu": 3}, {}, False),
        ({"node": "n1", "gpu": "host"}, {}, False),  # host memory is not GPU 2's
        ({"node": "n1"}, {}, True),  # a node-level alarm names no GPU to disagree with
        (GROUP, {"nodes": ("n0", "n1")}, True),
        (GROUP, {"nodes": ("n0",)}, False),
        (GROUP, {"nodes": ("n1",), "gpus": ("n1/2",)}, True),
        (GROUP, {"nodes": ("n1",), "gpus": ("n1/0",)}, False),
        ({"node": "n1", "gpu": 2, "mig": "MIG-a"}, {}, True),
        ({"node": "n1", "gpu": 2, "mig": "MIG-b"}, {}, False),
        ({"node": "n2", "gpu": 2}, {}, False),
    ],
)
def test_subject_matching(subject: dict[str, Any], kw: dict[str, Any], expected: bool) -> None:
    fault = truth("x", {"node": "n1", "gpu": 2, "mig": "MIG-a"}, 0, 1)
    assert subject_matches(alarm("x", subject, 0, **kw), fault) is expected


def cond(rule: str, since: float, **subject: Any) -> Condition:
    return Condition(rule, {"cluster": "c", **subject}, since, "warning", f"{rule} now", "act", nodes=["n1"])


def test_replay_fires_after_for_s_resolves_and_forgets_one_shot_events() -> None:
    r = Replay("s")

    def at(now: float, *conditions: Condition) -> None:
        r.settle("c", decide("c", list(conditions), r.records, r.rules, now), now + 15)

    held = cond("idle_held", 1000.0, node="n1", gpu=2)
    layout = cond("mig_layout", 1050.0, node="n1", gpu=0, changed_at=1050)
    at(1100.0, held, layout)  # idle_held pending (for_s 300); the layout change fires at once
    at(1200.0, held, layout)
    at(1300.0, held)  # idle_held fires; the event leaves the window: forgotten, never resolved
    at(1400.0)  # idle_held is gone, for less than its hold-down (keep_firing_for_s 120): still firing
    at(1420.0)  # gone 120 s: idle_held resolves
    assert [(a.rule, a.published, a.since, a.resolved) for a in r.alarms] == [
        ("mig_layout", 1115.0, 1050.0, None),
        ("idle_held", 1315.0, 1000.0, 1435.0),
    ]
    assert r.records == {}


@pytest.mark.skipif(not TRACE.exists(), reason="the shared trace is not on this machine")
@pytest.mark.parametrize("hold", [False, True])
def test_the_real_trace_becomes_valid_batches_of_one_gpu(hold: bool) -> None:
    batches, first, last = trace_batches(TRACE, hold=hold)
    ts = [t for d in batches for t in d.doc["timestamps"]]
    gaps = {round(b - a) for a, b in itertools.pairwise(ts)}
    assert (ts[0], ts[-1]) == (first, last)
    assert len(ts) == (len(ts) if hold else 1639)
    assert gaps == ({1} if hold else {15})
    assert (len(batches[0].doc["timestamps"]), batches[0].doc["gpus"][0]["metrics"]["mem_used"][0]) == (
        30 if hold else 2,
        17092 * (1 << 20),
    )
    for d in batches[:: max(1, len(batches) // 50)]:
        parse(json.dumps(d.doc).encode(), now=d.at)


def test_the_command_lists_the_scenarios_and_refuses_an_unknown_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--quick", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [s.name for s in suite(quick=True)]
    with pytest.raises(SystemExit):
        main(["--quick", "--only", "no-such-scenario"])


# -- the quick suite over the catalogue as registered -----------------------------------------------


@cache
def quick_results() -> tuple[ScenarioResult, ...]:
    return tuple(run_all(suite(quick=True), workers=2))


def test_quick_suite_detects_every_fault_of_every_registered_rule() -> None:
    results = list(quick_results())
    rules = sorted({t.rule for r in results for t in r.truths} & set(CATALOGUE))
    assert rules  # the quick suite has faults for registered rules
    scores = score(results, rules)
    low = {
        rule: (s.recall, s.precision, [a.summary for a in unmatched(results) if a.rule == rule])
        for rule, s in scores.items()
        if s.recall != 1.0 or (s.precision or 0.0) < 0.95
    }
    assert low == {}


def test_quick_healthy_scenarios_raise_no_alarm() -> None:
    healthy = [r for r in quick_results() if r.healthy]
    assert healthy
    assert {r.name: [f"{a.rule}: {a.summary}" for a in r.alarms] for r in healthy} == {
        r.name: [] for r in healthy
    }
