"""Golden tests of the silent-node detector: registries and windows built by hand, exact conditions."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulse.analyze import inhibit
from gpulse.detect.base import Condition, NodeSeen, Window
from gpulse.detect.silent_node import ACTION, CLUSTER_ACTION, SilentNodeDetector
from gpulse.finding import Evidence, EvidenceRow

END = dt.datetime(2026, 2, 2, 12, 10, 20, tzinfo=dt.UTC).timestamp()
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
START = END - STEP * BINS
DETECTOR = SilentNodeDetector()


def last_sample(util: np.ndarray) -> float:
    """The time of a node's last sample in the window: the end of its last bin with data."""
    bins = np.flatnonzero(np.isfinite(util).any(axis=0))
    return START + (int(bins[-1]) + 1) * STEP - 1 if bins.size else math.nan


def make_window(registry: list[NodeSeen], util: dict[str, np.ndarray] | None = None) -> Window:
    """A window whose data holds the nodes of `util` (node -> (4 GPUs × bins)), and the given registry."""
    util = util or {}
    nodes = sorted(util)
    g = 4 * len(nodes)
    matrix = np.concatenate([util[n] for n in nodes]) if nodes else np.zeros((0, BINS))
    return Window(
        cluster="demo",
        start=START,
        step=STEP,
        end=END,
        nodes=nodes,
        node_groups=[None] * len(nodes),
        node_last_seen=np.array([last_sample(util[n]) for n in nodes]),
        host={},
        cpu_count=np.full(len(nodes), 64.0),
        host_mem_total=np.full(len(nodes), 2.0 * 2**40),
        gpu_node=np.repeat(np.arange(len(nodes)), 4),
        gpu_index=np.tile(np.arange(4), len(nodes)),
        gpu={"util_gpu": matrix, "mem_used": np.full((g, BINS), 40.0 * 2**30)},
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=np.ones((g, BINS), dtype=bool),
        gpu_processes=[[] for _ in range(g)],
        registry=registry,
    )


def detect(window: Window, **overrides: object) -> list[Condition]:
    return DETECTOR.detect(window, {**DETECTOR.defaults, **overrides})


def busy(until_bin: int = BINS) -> np.ndarray:
    util = np.full((4, BINS), np.nan)
    util[:, :until_bin] = 80.0
    return util


# --- it fires --------------------------------------------------------------------------------


def test_a_node_that_stopped_reporting_six_minutes_ago() -> None:
    registry = [
        NodeSeen("node-03", "a100", END - 4),
        NodeSeen("node-04", "a100", END - 370),  # 12:04:10, the start of bin 46
        NodeSeen("node-05", "a100", END - 1),
    ]
    window = make_window(registry, {"node-03": busy(), "node-04": busy(46), "node-05": busy()})

    assert detect(window) == [
        Condition(
            rule="silent_node",
            subject={"cluster": "demo", "node": "node-04"},
            since=END - 370,
            severity="critical",
            summary="node-04 has sent nothing for 6m 10s (last report 12:04:10 UTC)",
            action=ACTION,
            nodes=["node-04"],
            values={"silent_for_s": 370.0, "last_seen": END - 370, "for_s": 180.0, "forget_s": 86_400.0},
            evidence=Evidence(
                title="node-04: mean GPU utilisation (%), last 10m",
                unit="%",
                rows=[
                    EvidenceRow(
                        "node-04",
                        [*[80.0] * 12, *[None] * 18],
                        80.0,
                        True,
                        "node.util_gpu",
                        "node-04",
                        "last",
                    )
                ],
            ),
        )
    ]


def test_a_node_absent_from_the_window_is_named_without_evidence() -> None:
    registry = [NodeSeen("node-01", None, END - 2), NodeSeen("node-09", None, END - 1200)]

    [cond] = detect(make_window(registry, {"node-01": busy()}))

    assert cond.subject == {"cluster": "demo", "node": "node-09"}
    assert cond.since == END - 1200
    assert cond.summary == "node-09 has sent nothing for 20m (last report 11:50:20 UTC)"
    assert cond.evidence is None


def test_a_node_silent_since_yesterday_shows_the_date() -> None:
    [cond] = detect(make_window([NodeSeen("node-02", None, END - 13 * 3600)]))
    assert cond.summary == "node-02 has sent nothing for 13h 0m (last report 2026-02-01 23:10:20 UTC)"


def test_every_silent_node_is_its_own_condition() -> None:
    registry = [NodeSeen(f"node-{i:02d}", None, END - 300 - i) for i in range(1, 4)]
    registry += [NodeSeen(f"node-{i:02d}", None, END - 5) for i in range(4, 8)]  # 3 of 7: not most
    conds = detect(make_window(registry))
    assert [(c.subject["node"], c.since) for c in conds] == [
        ("node-01", END - 301),
        ("node-02", END - 302),
        ("node-03", END - 303),
    ]


def test_a_node_listed_twice_counts_its_latest_report() -> None:
    registry = [NodeSeen("node-04", None, END - 900), NodeSeen("node-04", None, END - 500)]
    [cond] = detect(make_window(registry))
    assert cond.since == END - 500


def test_the_other_alerts_of_a_silent_node_are_inhibited_by_analyze() -> None:
    [silent] = detect(make_window([NodeSeen("node-04", None, END - 400)]))
    stale = Condition(
        "idle_held", {"cluster": "demo", "node": "node-04", "gpu": 1}, START, "warning", "s", "a"
    )
    other = Condition(
        "idle_held", {"cluster": "demo", "node": "node-05", "gpu": 1}, START, "warning", "s", "a"
    )
    assert inhibit([silent, stale, other]) == [silent, replace(stale, muted_by="silent_node"), other]


# --- most of the cluster silent --------------------------------------------------------------


def test_most_of_the_cluster_silent_is_one_cluster_alert_over_the_per_node_ones() -> None:
    # 5 of 8 nodes stopped between 12:03:00 and 12:04:10 (the API unreachable from the site)
    quiet = {"node-01": 440, "node-02": 420, "node-03": 400, "node-05": 380, "node-06": 370}
    registry = [NodeSeen(f"node-{i:02d}", None, END - quiet.get(f"node-{i:02d}", 3)) for i in range(1, 9)]
    util = {f"node-{i:02d}": busy(BINS - quiet.get(f"node-{i:02d}", 0) // 5) for i in range(1, 9)}

    conds = detect(make_window(registry, util))

    per_node, [wide] = conds[:-1], conds[-1:]
    assert [c.subject["node"] for c in per_node] == ["node-01", "node-02", "node-03", "node-05", "node-06"]
    assert wide == Condition(
        rule="silent_node",
        subject={"cluster": "demo"},
        since=END - 380,  # the fourth to stop (4 of 8 needed: ceil(0.5 × 8)); from then on, half were
        severity="critical",
        summary=(
            "5 of 8 nodes of demo have sent nothing for 6m 10s or more (they stopped between "
            "12:03:00 UTC and 12:04:10 UTC): node-01, node-02, node-03, node-05, node-06"
        ),
        action=CLUSTER_ACTION,
        nodes=["node-01", "node-02", "node-03", "node-05", "node-06"],
        values={
            "silent_nodes": 5.0,
            "known_nodes": 8.0,
            "first_stopped": END - 440,
            "last_stopped": END - 370,
            "for_s": 180.0,
            "cluster_share": 0.5,
        },
        evidence=Evidence(
            title="demo: nodes reporting, last 10m",
            unit="nodes",
            # 4-bin (20 s) slices: 8 until 12:03:00, one fewer in each of the next three, 3 from 12:04:10
            rows=[EvidenceRow("reporting", [*[8.0] * 8, 7.0, 6.0, 5.0, 3.5, *[3.0] * 18], 3.0, True)],
            scale_max=8.0,
        ),
    )
    # analyze mutes the per-node alerts under it, and every other alert about those nodes
    idle = Condition("idle_held", {"cluster": "demo", "node": "node-02", "gpu": 0}, START, "info", "s", "a")
    marked = inhibit([*conds, idle])
    assert [(c.subject.get("node"), c.muted_by) for c in marked] == [
        *[(c.subject["node"], "silent_node") for c in per_node],
        (None, None),
        ("node-02", "silent_node"),
    ]


def test_a_few_silent_nodes_of_a_large_cluster_stay_per_node() -> None:
    registry = [NodeSeen(f"node-{i:02d}", None, END - (400 if i < 4 else 3)) for i in range(10)]
    conds = detect(make_window(registry))
    assert [c.subject.get("node") for c in conds] == ["node-00", "node-01", "node-02", "node-03"]
    # …and the share and the floor are parameters
    assert detect(make_window(registry), cluster_share=0.4)[-1].subject == {"cluster": "demo"}
    two = [NodeSeen("a", None, END - 400), NodeSeen("b", None, END - 400)]
    assert [c.subject.get("node") for c in detect(make_window(two))] == ["a", "b"]  # under cluster_min_nodes
    assert detect(make_window(two), cluster_min_nodes=2)[-1].subject == {"cluster": "demo"}


def test_nodes_forgotten_do_not_count_towards_the_cluster() -> None:
    # 3 nodes gone for over a day (decommissioned) + 2 of 5 live ones silent: 2 of 5, not most
    registry = [NodeSeen(f"old-{i}", None, END - 90_000) for i in range(3)]
    registry += [NodeSeen(f"node-{i}", None, END - (400 if i < 2 else 3)) for i in range(5)]
    assert [c.subject.get("node") for c in detect(make_window(registry), cluster_min_nodes=2)] == [
        "node-0",
        "node-1",
    ]


# --- it stays quiet --------------------------------------------------------------------------


def test_nodes_that_reported_within_for_s_are_fine() -> None:
    # a shipper batching every 60 s, plus transit, lags the window's end by up to ~90 s
    registry = [
        NodeSeen("node-01", None, END - 95),
        NodeSeen("node-02", None, END - 180),  # exactly for_s: not older than it
        NodeSeen("node-03", None, END + 3),  # a sample after the window's end
    ]
    assert detect(make_window(registry)) == []


def test_a_node_gone_for_more_than_forget_s_is_forgotten() -> None:
    registry = [NodeSeen("node-old", None, END - 86_401), NodeSeen("node-04", None, END - 86_400)]
    [cond] = detect(make_window(registry))
    assert cond.subject["node"] == "node-04"  # exactly forget_s: still remembered
    assert detect(make_window(registry), forget_s=3600) == []


def test_an_empty_registry_gives_nothing() -> None:
    assert detect(make_window([])) == []
    assert detect(make_window([], {"node-01": np.full((4, BINS), np.nan)})) == []


def test_a_node_with_no_finite_data_in_the_window_has_no_evidence() -> None:
    window = make_window([NodeSeen("node-04", None, END - 900)], {"node-04": np.full((4, BINS), np.nan)})
    [cond] = detect(window)
    assert cond.evidence is None


def test_thresholds_are_parameters() -> None:
    window = make_window([NodeSeen("node-04", None, END - 100)])
    assert detect(window) == []
    [cond] = detect(window, for_s=60, severity="warning")
    assert (cond.severity, cond.values["for_s"]) == ("warning", 60.0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"for_s": 10}, "for_s"),
        ({"forget_s": 120}, "forget_s"),  # not above for_s
        ({"cluster_share": 0}, "cluster_share"),
        ({"cluster_min_nodes": 2.5}, "cluster_min_nodes"),
        ({"silent_s": 180}, "silent_s"),  # the wait is for_s now
        ({"forget_s": "1d"}, "forget_s"),
        ({"severity": "page"}, "severity"),
        ({"quiet_s": 60}, "quiet_s"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DETECTOR.validate({**DETECTOR.defaults, **overrides})


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    ages=st.lists(st.one_of(st.just(np.nan), st.floats(-600, 200_000)), max_size=8),
    in_window=st.booleans(),
)
def test_any_registry_gives_pure_json_safe_conditions(ages: list[float], in_window: bool) -> None:
    registry = [NodeSeen(f"node-{i % 5}", None, END - age) for i, age in enumerate(ages)]
    util = {f"node-{i}": busy(i * 20) for i in range(5)} if in_window else None
    window = make_window(registry, util)
    first = detect(window)
    assert detect(window) == first
    for cond in first:
        json.dumps(asdict(cond), allow_nan=False)
        assert 180 < END - cond.since <= 86_400
    per_node = [c for c in first if "node" in c.subject]
    assert len({c.subject["node"] for c in per_node}) == len(per_node)
    wide = [c for c in first if "node" not in c.subject]  # most of the cluster: one more, naming them
    assert len(wide) <= 1
    assert all(c.nodes == sorted(str(c.subject["node"]) for c in per_node) for c in wide)


def test_nodes_with_nothing_in_the_last_bin_are_unseen_and_their_firing_alerts_held() -> None:
    from gpulse.alerting.state import AlertRecord, Rule, decide
    from gpulse.analyze import unseen
    from gpulse.finding import Finding

    window = make_window([], {"node-01": busy(), "node-02": busy(BINS - 12)})
    late = replace(window, node_last_seen=np.array([END - 1, END - 61]))  # node-02's batch is late
    [silent] = detect(make_window([NodeSeen("node-09", None, END - 400)]))
    assert unseen([silent], late) == frozenset({"node-02", "node-09"})
    assert unseen([], replace(window, node_last_seen=np.full(2, END))) == frozenset()  # a later batch in
    # node-02 sent a later batch, but the one covering the last bin is not in yet (a retry after
    # its successor): past the window's end, and still nothing known of now
    hole = {k: v.copy() for k, v in window.gpu.items()}
    for m in hole.values():
        m[4:, -1] = np.nan
    retried = replace(window, gpu=hole, node_last_seen=np.array([END - 1, END + 20]))
    assert unseen([], retried) == frozenset({"node-02"})
    hole["mem_used"][5, -1] = 40.0 * 2**30  # one GPU's memory sample in the bin is enough
    assert unseen([], retried) == frozenset()

    f = Finding(
        "idle_held", "t", "warning", "firing", "fp", "demo", START, START, "s", "a", nodes=["node-02"]
    )
    rec = AlertRecord("demo", "fp", "idle_held", "firing", START, f, version=3)
    rules = {"idle_held": Rule("idle_held", "t", 300.0)}
    assert decide("demo", [], {"fp": rec}, rules, END, unseen=unseen([], late)) == []  # held
    seen = replace(window, node_last_seen=np.full(2, END))
    [resolved] = decide("demo", [], {"fp": rec}, rules, END, unseen=unseen([], seen))
    assert resolved.record.state == "resolved"


def test_a_registry_entry_behind_the_windows_data_is_not_silence() -> None:
    # ingest rewrites the registry every few minutes only: the window's data says the node is live
    registry = [NodeSeen("node-01", None, END - 290)]
    assert detect(make_window(registry, {"node-01": busy()})) == []
    [cond] = detect(make_window(registry))  # no data in the window: the registry's word stands
    assert (cond.subject, cond.since) == ({"cluster": "demo", "node": "node-01"}, END - 290)
