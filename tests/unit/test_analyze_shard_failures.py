"""A sharded cluster's `analysis_failed` alerts belong to the shard that failed: one shard's
success never resolves what another's failure raised (no flapping), a rule that raises on one
shard only is still told, and each shard's failure streak fires once and resolves once."""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpulse.alerting.state import AlertRecord
from gpulse.analyze import Analyzer
from gpulse.analyze.fanout import AnalyzeTask, TickClaims, plan, work
from gpulse.config.live import StaticRules
from gpulse.detect.base import Condition, Window
from gpulse.detect.catalogue import CATALOGUE
from gpulse.finding import Finding, fingerprint
from gpulse.store import NodeInfo
from tests.factories import batch_doc
from tests.unit.analyze_fakes import MemQueue, MemRecords, MemSeries

NOW = 1_763_800_600.0
GROUPS = {"a": ["a-0", "a-1"], "b": ["b-0", "b-1"]}  # two shards of one group each (2 nodes a shard)


class Claims(TickClaims):
    """Every tick is new here: the claim's conditional write is tested against moto elsewhere."""

    def __init__(self) -> None:  # no client: nothing here reaches AWS
        pass

    def claim(self, task: AnalyzeTask) -> bool:
        return True


def cluster() -> tuple[MemSeries, list[AnalyzeTask]]:
    """Cluster c: groups a and b, 60 s of healthy 1 Hz samples each; its two shards' tasks."""
    store = MemSeries()
    for group, nodes in GROUPS.items():
        for node in nodes:
            for t0 in range(int(NOW) - 60, int(NOW), 30):
                store.add(batch_doc(cluster="c", node=node, node_group=group, t0=t0, n=30))
    infos = [NodeInfo("c", n, g, NOW - 1) for g, nodes in GROUPS.items() for n in nodes]
    tasks = plan({"c": infos}, NOW, max_nodes=2)
    assert [(t.shard, t.shards, [n.node for n in t.nodes]) for t in tasks] == [
        (0, 2, ["a-0", "a-1"]),
        (1, 2, ["b-0", "b-1"]),
    ]
    return store, tasks


def analyzer(store: MemSeries) -> tuple[Analyzer, MemQueue]:
    queue = MemQueue()
    return Analyzer(store, MemRecords(), queue, StaticRules(), clock=lambda: NOW), queue


def said(queue: MemQueue) -> list[tuple[str, str, str]]:
    return [(f.rule, f.state, f.summary) for f in queue.take()]


def test_one_shards_success_does_not_resolve_another_shards_failure() -> None:
    store, [first, second] = cluster()
    a, queue = analyzer(store)
    claims = Claims()
    for _ in range(2):  # the second shard's reads keep failing; the first's succeed
        store.broken = {"c"}
        report = work(a, claims, second)
        assert not isinstance(report, str) and report.error == "StoreError: DynamoDB ThrottlingException"
        store.broken = set()
        report = work(a, claims, first)
        assert not isinstance(report, str) and report.error is None
    [(rule, state, summary)] = said(queue)  # fired once, never resolved by the first shard
    assert (rule, state) == ("analysis_failed", "firing")
    assert summary.startswith(
        "gpulse could not analyze cluster c: StoreError: DynamoDB ThrottlingException (at "
    )
    assert summary.endswith(") — shard 2 of 2 (2 nodes: b-0 … b-1)")
    work(a, claims, second)  # the second shard reads again: its failure resolves
    assert [(r, s) for r, s, _ in said(queue)] == [("analysis_failed", "resolved")]


class BrokenOn:
    """A rule that raises on a window holding `node`, and finds nothing elsewhere."""

    name: ClassVar[str] = "broken"
    title: ClassVar[str] = "Broken"
    description: ClassVar[str] = "raises on one node's shard"
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {"for_s": 0, "severity": "warning"}

    def __init__(self, node: str) -> None:
        self.node = node

    def validate(self, params: dict[str, Any]) -> None:
        pass

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        if self.node in window.nodes:
            raise ZeroDivisionError("division by zero")
        return []


def test_a_rule_that_raises_on_one_shard_only_is_told_for_that_shard(monkeypatch: Any) -> None:
    monkeypatch.setitem(CATALOGUE, "broken", BrokenOn("b-1"))
    store, [first, second] = cluster()
    a, queue = analyzer(store)
    claims = Claims()
    reports = [work(a, claims, second), work(a, claims, first)]
    assert [(r.error, r.failed_rules) for r in reports if not isinstance(r, str)] == [
        (None, ["broken"]),
        (None, []),
    ]
    [firing] = queue.take()
    assert (firing.rule, firing.state, firing.severity) == ("analysis_failed", "firing", "warning")
    assert firing.summary.startswith("gpulse could not analyze cluster c with rule broken: ZeroDivisionError")
    assert firing.summary.endswith(" — shard 2 of 2 (2 nodes: b-0 … b-1)")
    assert [work(a, claims, second), work(a, claims, first)] and queue.take() == []  # still firing, once


def brief(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule, f.state) for f in findings]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.booleans()), min_size=1, max_size=8))
def test_each_shards_failure_streak_is_told_once_firing_and_once_resolved(
    runs: list[tuple[int, bool]],
) -> None:
    """Any order of the two shards' runs, each failing or not: the reference model keeps one
    failed-or-not flag per shard, and only a shard's own flip is told."""
    store, tasks = cluster()
    a, queue = analyzer(store)
    claims = Claims()
    failing = {0: False, 1: False}  # the model
    for shard, fails in runs:
        store.broken = {"c"} if fails else set()
        work(a, claims, tasks[shard])
        expected = [] if fails == failing[shard] else [("analysis_failed", "firing" if fails else "resolved")]
        failing[shard] = fails
        got = queue.take()
        assert brief(got) == expected
        assert all(
            f.summary.endswith(f"shard {shard + 1} of 2 (2 nodes: {'ab'[shard]}-0 … {'ab'[shard]}-1)")
            for f in got
            if f.state == "firing"
        )


def failure_record(**subject: str) -> AlertRecord:
    """A stored `analysis_failed` alert of cluster c with `subject` (less the cluster)."""
    fp = fingerprint("analysis_failed", cluster="c", **subject)
    finding = Finding(
        rule="analysis_failed",
        title="gpulse could not analyze a cluster",
        severity="critical",
        state="firing",
        fingerprint=fp,
        cluster="c",
        since=NOW,
        at=NOW,
        summary="",
        action="",
    )
    return AlertRecord("c", fp, "analysis_failed", "firing", NOW, finding)


def test_which_shard_settles_which_analysis_failure() -> None:
    _, [first, second] = cluster()
    records = {
        "mine (2/2)": failure_record(shard="2/2"),
        "a rule on 2/2": failure_record(detector="imbalance", shard="2/2"),
        "first's (1/2)": failure_record(shard="1/2"),
        "from before sharding": failure_record(),
        "of a shard gone (3/3)": failure_record(shard="3/3"),
        "of a rule gone": failure_record(detector="retired", shard="2/2"),
    }
    assert {name: (first.settles(r), second.settles(r)) for name, r in records.items()} == {
        "mine (2/2)": (False, True),
        "a rule on 2/2": (False, True),
        "first's (1/2)": (True, False),
        # what no current shard claims, the first takes (and resolves at its next good run)
        "from before sharding": (True, False),
        "of a shard gone (3/3)": (True, False),
        "of a rule gone": (True, False),
    }
    whole = AnalyzeTask("c", NOW, first.nodes + second.nodes)  # unsharded again: it settles all
    assert all(whole.settles(r) for r in records.values())
