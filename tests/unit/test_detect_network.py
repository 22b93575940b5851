"""Golden tests of the network-collapse detector: hand-built windows, exact conditions out."""

from __future__ import annotations

import numpy as np
import pytest

from gpulse import codec
from gpulse.detect.base import Condition, Window
from gpulse.detect.network import ACTION, NetworkDetector
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from node_shipper.simulate import Scenario, simulate_batches
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
GBPS = 1e9  # bytes/s
MBPS = 1e6
QUIET = 5e4  # ssh, monitoring and the shipper itself: what an idle node moves
DETECTOR = NetworkDetector()


def make_window(
    levels: np.ndarray, *, groups: list[str | None] | None = None, rx_share: float = 0.8
) -> Window:
    """A window whose node n moves levels[n] bytes/s (in + out, split rx_share : rest); NaN = silent."""
    levels = np.asarray(levels, dtype=float)
    n, t = levels.shape
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=[f"node-{i + 1:02d}" for i in range(n)],
        node_groups=list(groups) if groups is not None else [None] * n,
        node_last_seen=np.full(n, T0 + STEP * t),
        host={"net_rx_bps": levels * rx_share, "net_tx_bps": levels * (1 - rx_share)},
        cpu_count=np.full(n, 224.0),
        host_mem_total=np.full(n, 2.0 * 2**40),
        gpu_node=np.arange(n),
        gpu_index=np.zeros(n, dtype=int),
        gpu={"util_gpu": np.full((n, t), 90.0)},
        gpu_mem_total=np.full(n, 80.0 * 2**30),
        gpu_has_process=np.ones((n, t), dtype=bool),
        gpu_processes=[[] for _ in range(n)],
    )


def detect(levels: np.ndarray, **overrides: object) -> list[Condition]:
    groups = overrides.pop("groups", None)
    return DETECTOR.detect(make_window(levels, groups=groups), {**NetworkDetector.defaults, **overrides})  # type: ignore[arg-type]


def detect_window(window: Window) -> list[Condition]:
    return DETECTOR.detect(window, dict(NetworkDetector.defaults))


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def uneven(lo: float, hi: float, nodes: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, (nodes, BINS))


# --- it fires --------------------------------------------------------------------------------


def test_two_of_eight_nodes_fall_silent_on_the_wire() -> None:
    levels = np.full((8, BINS), 2.4 * GBPS)
    levels[2, 80:] = 0.1 * MBPS  # node-03's link went down at bin 80: only the management traffic left
    levels[5, 90:] = 3 * MBPS  # node-06 fell back to a slow path at bin 90

    [cond] = detect(levels)

    flat: list[float | None] = [2400.0] * 30
    assert cond == Condition(
        rule="network",
        subject={"cluster": "demo", "node_group": None},
        since=at(80),
        severity="warning",
        summary=(
            "2 of 8 nodes in demo at 0.1–3.0 MB/s network traffic (in + out) while their peers move "
            "2.4 GB/s (median) — node-03, node-06"
        ),
        action=ACTION,
        nodes=["node-03", "node-06"],
        values={
            "nodes_out": 2.0,
            "nodes_reporting": 8.0,
            "worst_bps": 1e5,
            "group_median_bps": 2.4e9,
            "ratio": 0.0,
            "level_ratio": 0.2,
            "bps:node-03": 1e5,
            "bps:node-06": 3e6,
        },
        evidence=Evidence(
            title="Network traffic (in + out) per node in demo, last 10 min",
            unit="MB/s",
            rows=[
                EvidenceRow("node-01", flat, 2400.0, False, "node.net_mbps", "node-01", "median"),
                EvidenceRow("node-02", flat, 2400.0, False, "node.net_mbps", "node-02", "median"),
                EvidenceRow(
                    "node-03", [*[2400.0] * 20, *[0.1] * 10], 0.1, True, "node.net_mbps", "node-03", "median"
                ),
                EvidenceRow("node-04", flat, 2400.0, False, "node.net_mbps", "node-04", "median"),
                EvidenceRow("node-05", flat, 2400.0, False, "node.net_mbps", "node-05", "median"),
                EvidenceRow(
                    "node-06",
                    [*[2400.0] * 22, 1201.5, *[3.0] * 7],
                    3.0,
                    True,
                    "node.net_mbps",
                    "node-06",
                    "median",
                ),
                EvidenceRow("node-07", flat, 2400.0, False, "node.net_mbps", "node-07", "median"),
                EvidenceRow("node-08", flat, 2400.0, False, "node.net_mbps", "node-08", "median"),
            ],
            reference=2400.0,
            reference_label="group median",
            reference_of="peers",
            scale_max=2400.0,
        ),
    )


def test_a_straggler_at_a_tenth_of_its_peers() -> None:
    levels = uneven(300 * MBPS, 500 * MBPS, 6)
    levels[4, 100:] = 40 * MBPS  # node-05 still talks, at a tenth of the rest

    [cond] = detect(levels)

    assert cond.since == at(100)
    assert cond.nodes == ["node-05"]
    # the peers' level: the median over the last for_s (12 bins) of the per-bin median of the others
    peers = float(np.median(np.median(np.delete(levels, 4, axis=0)[:, -12:], axis=0)))
    assert cond.summary == (
        f"1 of 6 nodes in demo at 40 MB/s network traffic (in + out) while their peers move "
        f"{peers / MBPS:.0f} MB/s (median) — node-05"
    )
    assert cond.values["group_median_bps"] == round(peers)
    assert cond.values["ratio"] == round(40 * MBPS / peers, 3)
    # the busiest node's level: its median over the same 12 bins
    busiest = round(float(np.median(levels[:, -12:], axis=1).max()) / MBPS, 1)
    assert cond.evidence is not None and cond.evidence.scale_max == busiest


def test_node_groups_are_judged_apart() -> None:
    # group a sits quiet between jobs; group b runs one, and node-08's traffic collapses
    levels = np.vstack([np.full((4, BINS), QUIET), np.full((4, BINS), 1.2 * GBPS)])
    levels[7, 90:] = QUIET
    groups: list[str | None] = ["a", "a", "a", "a", "b", "b", "b", "b"]

    [cond] = detect(levels, groups=groups)

    assert cond.subject == {"cluster": "demo", "node_group": "b"}
    assert cond.nodes == ["node-08"]
    assert cond.since == at(90)
    assert cond.summary == (
        "1 of 4 nodes in demo/b at 0.1 MB/s network traffic (in + out) while their peers move 1.2 GB/s "
        "(median) — node-08"
    )
    assert [r.label for r in cond.evidence.rows] == ["node-05", "node-06", "node-07", "node-08"]  # type: ignore[union-attr]
    # judged as one group, the quiet half drags the median down: nothing looks busy
    assert detect(levels) == []


def test_only_one_direction_is_enough() -> None:
    levels = np.full((4, BINS), 2 * GBPS)
    levels[0, 60:] = 1 * MBPS
    window = make_window(levels)
    del window.host["net_tx_bps"]  # an older shipper, or a node that reports only one direction
    [cond] = detect_window(window)
    assert (cond.nodes, cond.values["group_median_bps"]) == (["node-01"], 1.6e9)


def test_two_nodes_are_enough_when_min_nodes_allows() -> None:
    levels = np.vstack([np.full(BINS, 2 * GBPS), np.full(BINS, QUIET)])
    [cond] = detect(levels, min_nodes=2)
    assert cond.nodes == ["node-02"]
    assert cond.values["group_median_bps"] == 2_000_000_000.0  # its peer's, not a median with it


# --- it stays quiet --------------------------------------------------------------------------


def test_all_nodes_quiet_between_jobs() -> None:
    assert detect(uneven(0, 2 * QUIET, 8)) == []


def test_uneven_traffic_above_the_ratio_is_normal() -> None:
    # a pipeline-parallel job: the first and last stages move less than the middle ones
    levels = uneven(1.5 * GBPS, 3 * GBPS, 8)
    levels[0] *= 0.3
    levels[7] *= 0.3
    assert detect(levels) == []


def test_a_group_below_min_group_bps_is_not_judged() -> None:
    levels = np.full((6, BINS), 50 * MBPS)  # a small inference fleet: traffic, but not a job's exchange
    levels[2] = QUIET
    assert detect(levels) == []
    assert detect(levels, min_group_bps=10 * MBPS)[0].nodes == ["node-03"]


def test_a_silent_node_is_not_collapsed() -> None:
    levels = np.full((8, BINS), 2 * GBPS)
    levels[4, 100:] = np.nan  # node-05 stopped reporting: the silent-node rule's business
    assert detect(levels) == []


def test_a_silent_node_is_not_counted() -> None:
    levels = np.full((8, BINS), 2 * GBPS)
    levels[4, 100:] = np.nan
    levels[0, 80:] = QUIET
    [cond] = detect(levels)
    assert cond.summary.startswith("1 of 7 nodes in demo at 0.1 MB/s")
    assert "node-05" not in [r.label for r in cond.evidence.rows]  # type: ignore[union-attr]


def test_fewer_than_min_nodes_reporting_is_skipped() -> None:
    levels = np.full((3, BINS), 2 * GBPS)
    levels[0, 80:] = QUIET
    levels[2, 110:] = np.nan
    assert detect(levels) == []


def test_one_busy_bin_restarts_the_run() -> None:
    levels = np.full((8, BINS), 2 * GBPS)
    levels[2, 40:] = QUIET
    levels[2, 100] = 2 * GBPS  # it caught up for one bin
    [cond] = detect(levels)
    assert cond.since == at(101)
    assert cond.values["bps:node-03"] == QUIET


def test_the_collapse_must_hold_at_the_last_bin() -> None:
    levels = np.full((8, BINS), 2 * GBPS)
    levels[2, 40:110] = QUIET  # it recovered ten bins ago
    assert detect(levels) == []


def test_empty_and_all_nan_windows() -> None:
    assert detect(np.full((8, BINS), np.nan)) == []
    assert detect(np.empty((8, 0))) == []
    assert detect(np.empty((0, BINS))) == []
    window = make_window(np.full((8, BINS), 2 * GBPS))
    window.host.clear()  # no network series at all
    assert detect_window(window) == []


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"level_ratio": 1.5}, "level_ratio"),
        ({"min_nodes": 1}, "min_nodes"),
        ({"min_nodes": 2.5}, "min_nodes"),
        ({"min_group_bps": -1}, "min_group_bps"),
        ({"min_group_bps": "100MB"}, "min_group_bps"),
        ({"severity": "loud"}, "severity"),
        ({"min_gap": 10}, "min_gap"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        detect(np.full((3, 4), GBPS), **overrides)


def test_a_missing_parameter_is_named() -> None:
    params = dict(NetworkDetector.defaults)
    del params["level_ratio"]
    with pytest.raises(ValueError, match="level_ratio"):
        DETECTOR.validate(params)


# --- windows built from batches --------------------------------------------------------------


def test_throughput_from_batches() -> None:
    n, t0 = 60, 1_763_800_000.0
    docs = []
    for i in range(4):
        doc = batch_doc(node=f"node-{i + 1:02d}", n=n, t0=t0)
        rx = [2e9] * n if i != 1 else [2e9] * 30 + [4e4] * 30  # node-02's link dropped at 30 s
        doc["host"]["metrics"].update(net_rx_bps=rx, net_tx_bps=[r / 4 for r in rx])
        docs.append(doc)
    window = build_window(
        "c1", [codec.decode(codec.encode(d)) for d in docs], end=t0 + n, span_s=n, step=STEP
    )

    [cond] = detect_window(window)

    assert (cond.nodes, cond.since) == (["node-02"], t0 + 30)
    assert cond.summary == (
        "1 of 4 nodes in c1 at 0.1 MB/s network traffic (in + out) while their peers move 2.5 GB/s "
        "(median) — node-02"
    )


def test_a_simulated_fleet_healthy_then_with_two_nodes_dropping_out() -> None:
    t0 = 1_770_000_000.0

    def window_of(scenario: Scenario) -> Window:
        docs = simulate_batches(scenario, t0, 300, 30)
        chunks = [codec.decode(codec.encode(d)) for d in docs]
        return build_window("demo", chunks, end=t0 + 300, span_s=300, step=STEP)

    small = {"nodes": 6, "gpus_per_node": 4}
    assert detect_window(window_of(Scenario.named("healthy", **small))) == []
    # the demo's fault: node-03 and node-06 lose their ranks from 150 s while the others go on
    [cond] = detect_window(window_of(Scenario.named("demo", fault_start_s=150, fault_end_s=900, **small)))
    assert (cond.nodes, cond.since) == (["node-03", "node-06"], t0 + 150)


def test_a_flagged_nodes_level_is_its_median_over_the_span_judged() -> None:
    """Every figure is what the rule judged: over the flagged run (at most for_s = 12 bins), the
    node's median, not its mean (8 bins at 1 MB/s, bursts of 10 and 40 MB/s: mean 6.5 MB/s)."""
    levels = np.full((6, BINS), 2.4 * GBPS)
    levels[2, 100:] = 1 * MBPS
    levels[2, BINS - 4 : BINS - 1] = 10 * MBPS
    levels[2, BINS - 1] = 40 * MBPS
    [c] = detect(levels)
    assert c.values["bps:node-03"] == c.values["worst_bps"] == 1e6
    assert c.values["group_median_bps"] == 2.4e9
    assert c.values["ratio"] == round(1e6 / 2.4e9, 3)
    assert c.summary.startswith(
        "1 of 6 nodes in demo at 1.0 MB/s network traffic (in + out) while their peers"
    )
    assert c.evidence is not None
    assert [(r.label, r.level, r.reduce) for r in c.evidence.rows if r.flagged] == [
        ("node-03", 1.0, "median")
    ]
    assert {r.level for r in c.evidence.rows if not r.flagged} == {2400.0}
