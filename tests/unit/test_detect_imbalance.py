"""Golden tests of the cross-node imbalance detector, in the manner of `promtool test rules`:
hand-built windows, exact conditions out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from gpulse.detect.base import Condition, Window
from gpulse.detect.catalogue import params_for
from gpulse.detect.imbalance import (
    ACTION,
    ImbalanceDetector,
    latch,
    medians,
    nanmedian_last,
    node_levels,
    peer_reference,
    rolling_corr,
)
from gpulse.finding import Evidence, EvidenceRow

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
DETECTOR = ImbalanceDetector()


def make_window(
    levels: np.ndarray, *, groups: list[str | None] | None = None, gpus_per_node: int = 2
) -> Window:
    """A window whose nodes' GPUs all run at the node's level: levels is (nodes × bins), NaN = silent."""
    levels = np.asarray(levels, dtype=float)
    n, t = levels.shape
    g = n * gpus_per_node
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=[f"node-{i + 1:02d}" for i in range(n)],
        node_groups=list(groups) if groups is not None else [None] * n,
        node_last_seen=np.full(n, T0 + STEP * t),
        host={},
        cpu_count=np.full(n, 64.0),
        host_mem_total=np.full(n, 2.0 * 2**40),
        gpu_node=np.repeat(np.arange(n), gpus_per_node),
        gpu_index=np.tile(np.arange(gpus_per_node), n),
        gpu={"util_gpu": np.repeat(levels, gpus_per_node, axis=0), "mem_used": np.full((g, t), 40.0 * 2**30)},
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=np.isfinite(np.repeat(levels, gpus_per_node, axis=0)),
        gpu_processes=[[] for _ in range(g)],
    )


def detect(levels: np.ndarray, **overrides: object) -> list[Condition]:
    groups = overrides.pop("groups", None)
    return DETECTOR.detect(make_window(levels, groups=groups), params_for("imbalance", overrides))  # type: ignore[arg-type]


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def noisy(level: float, nodes: int, seed: int = 7) -> np.ndarray:
    return level + np.random.default_rng(seed).uniform(-5, 5, (nodes, BINS))


def flat_in_a_swing() -> np.ndarray:
    """Six nodes swinging 46–96 % with a one-minute period; from bin 60 node-04 runs flat near 75 %
    with a wobble of its own (period 35 s) that now and then lifts its correlation above 0.2."""
    t = np.arange(BINS)
    levels = np.tile(71.0 + 25.0 * np.sin(2 * np.pi * t / 12), (6, 1))
    levels[3, 60:] = 75.0 + 8.0 * np.sin(2 * np.pi * t[60:] / 7)
    return levels


# --- it fires --------------------------------------------------------------------------------


def test_two_of_eight_nodes_idle_while_peers_busy() -> None:
    levels = np.full((8, BINS), 92.0)
    levels[2, 40:] = 1.0  # node-03 lost its job at bin 40, node-06 at bin 50
    levels[5, 50:] = 1.0

    [cond] = detect(levels)

    flat: list[float | None] = [*[92.0] * 30]
    dropped: list[float | None] = [*[92.0] * 10, *[1.0] * 20]
    node_06: list[float | None] = [*[92.0] * 12, 46.5, *[1.0] * 17]  # it dropped mid-slice
    assert cond == Condition(
        rule="imbalance",
        subject={"cluster": "demo", "node_group": None},
        since=at(40),
        severity="warning",
        summary=(
            "2 of 8 nodes in demo at 1 % GPU utilisation while their peers run at 92 % "
            "(median over the last 3m) — node-03, node-06"
        ),
        action=ACTION,
        nodes=["node-03", "node-06"],
        values={
            "nodes_out": 2.0,
            "nodes_reporting": 8.0,
            "worst_level": 1.0,
            "group_median": 92.0,
            "gap": 91.0,
            "cv": 0.569,
            "ratio": 0.011,
            "level:node-03": 1.0,
            "level:node-06": 1.0,
            "span_s": 180.0,
            "busy_s": 180.0,
        },
        evidence=Evidence(
            title="GPU utilisation per node in demo, last 10 min",
            unit="%",
            rows=[
                EvidenceRow("node-01", flat, 92.0, False, "node.util_gpu", "node-01", "median"),
                EvidenceRow("node-02", flat, 92.0, False, "node.util_gpu", "node-02", "median"),
                EvidenceRow("node-03", dropped, 1.0, True, "node.util_gpu", "node-03", "median"),
                EvidenceRow("node-04", flat, 92.0, False, "node.util_gpu", "node-04", "median"),
                EvidenceRow("node-05", flat, 92.0, False, "node.util_gpu", "node-05", "median"),
                EvidenceRow("node-06", node_06, 1.0, True, "node.util_gpu", "node-06", "median"),
                EvidenceRow("node-07", flat, 92.0, False, "node.util_gpu", "node-07", "median"),
                EvidenceRow("node-08", flat, 92.0, False, "node.util_gpu", "node-08", "median"),
            ],
            reference=92.0,
            reference_label="peers' median",
            level_s=180.0,
            reference_of="peers",
        ),
    )


def test_a_node_that_stops_following_an_oscillating_group() -> None:
    # the group swings 40–95 % with a one-minute period; node-04 goes flat at 60 % from bin 60:
    # its level stays within reach of the median, only its shape gives it away
    swing = 67.5 + 27.5 * np.sin(2 * np.pi * np.arange(BINS) / 12)
    levels = np.tile(swing, (6, 1))
    levels[3, 60:] = 60.0

    [cond] = detect(levels)

    # the 2-minute correlation window has to slide mostly past the change before it drops under 0.2
    assert cond.since == at(82)
    assert cond.nodes == ["node-04"]
    assert cond.summary == (
        "1 of 6 nodes in demo out of step with their peers (correlation 0.00 over 2 min; "
        "at 60 % while the group median swings 40–95 %) — node-04"
    )
    assert cond.values == {
        "nodes_out": 1.0,
        "nodes_reporting": 6.0,
        "worst_level": 60.0,
        "group_median": 67.5,
        "gap": 7.5,
        "cv": 0.042,
        "ratio": 0.889,
        "min_corr": 0.0,
        "level:node-04": 60.0,
        "span_s": 180.0,
        "busy_s": 180.0,
    }
    assert [(r.label, r.flagged) for r in cond.evidence.rows] == [  # type: ignore[union-attr]
        ("node-01", False),
        ("node-02", False),
        ("node-03", False),
        ("node-04", True),
        ("node-05", False),
        ("node-06", False),
    ]


def test_min_corr_minus_one_turns_the_correlation_test_off() -> None:
    swing = 67.5 + 27.5 * np.sin(2 * np.pi * np.arange(BINS) / 12)
    levels = np.tile(swing, (6, 1))
    levels[3, 60:] = 60.0
    assert detect(levels, min_corr=-1) == []


def test_node_groups_are_judged_apart() -> None:
    # group a sits idle between jobs; group b runs a job with one straggler, node-08
    levels = np.vstack([np.full((4, BINS), 1.0), np.full((4, BINS), 92.0)])
    levels[7, 90:] = 1.0
    groups: list[str | None] = ["a", "a", "a", "a", "b", "b", "b", "b"]

    [cond] = detect(levels, groups=groups)

    assert cond.subject == {"cluster": "demo", "node_group": "b"}
    assert cond.nodes == ["node-08"]
    assert cond.since == at(90)
    assert cond.summary == (
        "1 of 4 nodes in demo/b at 1 % GPU utilisation while their peers run at 92 % "
        "(median over the last 2m 30s) — node-08"
    )
    assert [r.label for r in cond.evidence.rows] == ["node-05", "node-06", "node-07", "node-08"]  # type: ignore[union-attr]
    # judged as one group, the idle half drags the median to 1 %: nothing looks busy
    assert detect(levels) == []


def test_a_level_drop_and_a_lost_correlation_in_one_group() -> None:
    swing = 70.0 + 25.0 * np.sin(2 * np.pi * np.arange(BINS) / 12)
    levels = np.tile(swing, (8, 1))
    levels[1, 30:] = 2.0
    levels[6, 60:] = 60.0

    [cond] = detect(levels)

    assert cond.nodes == ["node-02", "node-07"]
    assert cond.since == at(30)
    assert cond.summary == (
        "1 of 8 nodes in demo at 2 % GPU utilisation while their peers run at 70 % "
        "(median over the last 3m) — node-02; "
        "1 more out of step with their peers (correlation 0.00 over 2 min; "
        "at 60 % while the group median swings 45–95 %) — node-07"
    )


def test_two_nodes_are_enough_when_min_nodes_allows() -> None:
    levels = np.vstack([np.full(BINS, 92.0), np.full(BINS, 1.0)])
    [cond] = detect(levels, min_nodes=2)
    assert cond.nodes == ["node-02"]
    assert cond.values["group_median"] == 92.0  # its peer's level, not a median that includes it


def test_two_of_five_nodes_dropped_names_only_those_two() -> None:
    # the median of the 4 others of a healthy node steps from 92 to 46.5 when two peers drop; a
    # reference built from the nodes the level test left alone stays at 92, so only the two are named
    levels = np.full((5, BINS), 92.0)
    levels[[1, 3], 100:] = 1.0

    [cond] = detect(levels)

    flat: list[float | None] = [*[92.0] * 30]
    dropped: list[float | None] = [*[92.0] * 25, *[1.0] * 5]
    assert cond == Condition(
        rule="imbalance",
        subject={"cluster": "demo", "node_group": None},
        since=at(100),
        severity="warning",
        summary=(
            "2 of 5 nodes in demo at 1 % GPU utilisation while their peers run at 92 % "
            "(median over the last 1m 40s) — node-02, node-04"
        ),
        action=ACTION,
        nodes=["node-02", "node-04"],
        values={
            "nodes_out": 2.0,
            "nodes_reporting": 5.0,
            "worst_level": 1.0,
            "group_median": 92.0,
            "gap": 91.0,
            "cv": 0.802,
            "ratio": 0.011,
            "level:node-02": 1.0,
            "level:node-04": 1.0,
            "span_s": 100.0,
            "busy_s": 100.0,
        },
        evidence=Evidence(
            title="GPU utilisation per node in demo, last 10 min",
            unit="%",
            rows=[
                EvidenceRow("node-01", flat, 92.0, False, "node.util_gpu", "node-01", "median"),
                EvidenceRow("node-02", dropped, 1.0, True, "node.util_gpu", "node-02", "median"),
                EvidenceRow("node-03", flat, 92.0, False, "node.util_gpu", "node-03", "median"),
                EvidenceRow("node-04", dropped, 1.0, True, "node.util_gpu", "node-04", "median"),
                EvidenceRow("node-05", flat, 92.0, False, "node.util_gpu", "node-05", "median"),
            ],
            reference=92.0,
            reference_label="peers' median",
            level_s=100.0,
            reference_of="peers",
        ),
    )


def test_two_of_five_dropped_mid_bin_with_jittery_peers() -> None:
    # each dropped node sits half-way (46 %, not yet "low") in the bin of its drop; left in the
    # healthy nodes' reference, that bin is a 23-point blip their own jitter does not follow
    levels = 92.0 + np.random.default_rng(0).uniform(-3, 3, (5, BINS))
    levels[[1, 3], 100] = 46.0
    levels[[1, 3], 101:] = 1.0

    [cond] = detect(levels)

    assert cond.nodes == ["node-02", "node-04"]
    assert cond.since == at(101)
    assert "min_corr" not in cond.values


def test_a_node_flat_inside_the_swing_stays_out_of_step_while_its_correlation_wanders() -> None:
    # node-04's correlation with its peers falls under min_corr 0.2 at bin 81, then wanders up to
    # 0.27 (bins 86–88) and back: without hysteresis it resolved there and fired again from bin 88
    levels = flat_in_a_swing()

    for end in range(84, BINS + 1, 4):  # every 20 s, as analyze would see it
        [cond] = detect(levels[:, :end])
        assert (cond.nodes, cond.since) == (["node-04"], at(81)), end

    [cond] = detect(levels[:, :88])
    assert cond.summary == (
        "1 of 6 nodes in demo out of step with their peers (correlation 0.27 over 2 min; "
        "at 75 % while the group median swings 46–96 %) — node-04"
    )
    assert cond.values["min_corr"] == 0.273
    # with no room between the two levels the node leaves as soon as it climbs to 0.2 again
    assert detect(levels[:, :88], exit_corr=0.21) == []


def test_a_node_held_at_75_with_stray_readings_is_flat_not_in_step() -> None:
    # NVML reads whole percents: a node held at 75 % reads 76 now and then. Two stray 76s at peaks
    # of the group's swing (bins 99, 111) correlate 0.43 with it: a series that moves less than a
    # point has no shape to follow, and counts as flat (correlation 0) instead of leaving at 0.4
    t = np.arange(BINS)
    levels = np.tile(71.0 + 25.0 * np.sin(2 * np.pi * t / 12), (6, 1))
    levels[3, 60:] = 75.0
    levels[3, [99, 111]] = 76.0

    [cond] = detect(levels)

    assert (cond.nodes, cond.since, cond.values["min_corr"]) == (["node-04"], at(82), 0.0)
    assert cond.summary == (
        "1 of 6 nodes in demo out of step with their peers (correlation 0.00 over 2 min; "
        "at 75 % while the group median swings 46–96 %) — node-04"
    )


def test_a_node_back_in_step_leaves_once_its_correlation_reaches_exit_corr() -> None:
    levels = flat_in_a_swing()
    levels[3, 96:] = levels[0, 96:]  # node-04 follows the swing again from bin 96
    # its correlation climbs: 0.26 at bin 99 (above min_corr, below exit_corr 0.4), 0.41 at bin 100
    [cond] = detect(levels[:, :100])
    assert (cond.nodes, cond.since, cond.values["min_corr"]) == (["node-04"], at(81), 0.264)
    assert detect(levels[:, :101]) == []
    assert detect(levels) == []


# --- it stays quiet --------------------------------------------------------------------------


def test_all_nodes_idle_together_is_not_imbalance() -> None:
    assert detect(np.full((8, BINS), 1.0)) == []


def test_busy_nodes_with_noise_are_balanced() -> None:
    assert detect(noisy(90.0, 8)) == []


def test_a_node_fifteen_points_below_its_peers_is_normal_variation() -> None:
    levels = noisy(90.0, 8)
    levels[3] -= 15.0
    assert detect(levels) == []


def test_fewer_than_min_nodes_is_skipped() -> None:
    assert detect(np.vstack([np.full(BINS, 92.0), np.full(BINS, 1.0)])) == []


def test_a_silent_node_is_not_idle() -> None:
    levels = np.full((8, BINS), 92.0)
    levels[4, 100:] = np.nan  # node-05 stopped reporting: the silent-node rule's business
    assert detect(levels) == []


def test_a_silent_node_is_not_counted() -> None:
    levels = np.full((8, BINS), 92.0)
    levels[4, 100:] = np.nan
    levels[0, 80:] = 3.0
    [cond] = detect(levels)
    assert cond.summary == (
        "1 of 7 nodes in demo at 3 % GPU utilisation while their peers run at 92 % "
        "(median over the last 3m) — node-01"
    )
    assert "node-05" not in [r.label for r in cond.evidence.rows]  # type: ignore[union-attr]


def test_a_group_that_falls_below_min_nodes_reporting_is_skipped() -> None:
    levels = np.full((3, BINS), 92.0)
    levels[0, 80:] = 1.0
    levels[2, 110:] = np.nan
    assert detect(levels) == []


def test_one_busy_bin_does_not_restart_the_run() -> None:
    levels = np.full((8, BINS), 92.0)
    levels[2, 40:] = 1.0
    levels[2, 100] = 92.0  # it caught up for one bin: its median over the last 3 minutes did not
    [cond] = detect(levels)
    assert cond.since == at(40)
    assert cond.values["level:node-03"] == 1.0


def test_the_drop_must_hold_at_the_last_bin() -> None:
    levels = np.full((8, BINS), 92.0)
    levels[2, 40:110] = 1.0  # it recovered ten bins ago
    assert detect(levels) == []


def test_empty_and_all_nan_windows() -> None:
    assert detect(np.full((8, BINS), np.nan)) == []
    assert detect(np.empty((8, 0))) == []
    assert detect(np.empty((0, BINS))) == []


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"level_ratio": 1.5}, "level_ratio"),
        ({"min_nodes": 2.5}, "min_nodes"),
        ({"min_nodes": 1}, "min_nodes"),
        ({"min_corr": "low"}, "min_corr"),
        ({"min_group_util": True}, "min_group_util"),
        ({"corr_window_s": float("nan")}, "corr_window_s"),
        ({"severity": "loud"}, "severity"),
        ({"min_gap_pts": 10}, "min_gap_pts"),
        ({"exit_corr": 1.5}, "exit_corr"),
        ({"exit_corr": 0.2}, "exit_corr"),  # no higher than min_corr: no hysteresis
        ({"min_corr": 0.5}, "exit_corr"),  # raising min_corr past the default exit_corr needs both
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DETECTOR.detect(make_window(np.full((3, 4), 90.0)), {**ImbalanceDetector.defaults, **overrides})


def test_a_missing_parameter_is_named() -> None:
    params = dict(ImbalanceDetector.defaults)
    del params["min_gap"]
    with pytest.raises(ValueError, match="min_gap"):
        DETECTOR.detect(make_window(np.full((3, 4), 90.0)), params)


# --- the vectorised helpers against plain numpy ------------------------------------------------


def test_medians_match_nanmedian_with_and_without_each_row() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 100, (7, 40))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 0] = np.nan  # a bin nobody reported
    x[1:, 1] = np.nan  # a bin only one node reported
    m, loo = medians(x)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(m, np.nanmedian(x, axis=0))
        for i in range(x.shape[0]):
            np.testing.assert_allclose(loo[i], np.nanmedian(np.delete(x, i, axis=0), axis=0))


def test_rolling_corr_matches_corrcoef() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 100, (3, 50))
    y = x + rng.normal(0, 30, x.shape)
    x[0, 10:14] = np.nan
    corr, y_std = rolling_corr(x, y, w=12, min_pairs=6)
    for i in range(3):
        for t in range(50):
            a, b = x[i, max(0, t - 11) : t + 1], y[i, max(0, t - 11) : t + 1]
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() < 6:
                assert np.isnan(corr[i, t])
                continue
            assert corr[i, t] == pytest.approx(np.corrcoef(a[ok], b[ok])[0, 1], abs=1e-9)
            assert y_std[i, t] == pytest.approx(b[ok].std(), abs=1e-9)


def test_node_levels_average_the_gpus_that_reported() -> None:
    util = np.array([[10.0, np.nan], [30.0, np.nan], [50.0, 70.0]])
    expected = np.array([[20.0, np.nan], [50.0, 70.0], [np.nan, np.nan]])  # node 2 has no GPU
    np.testing.assert_array_equal(node_levels(util, np.array([0, 0, 1]), 3), expected)
    np.testing.assert_array_equal(node_levels(util[::-1], np.array([1, 0, 0]), 3), expected)
    assert node_levels(np.empty((0, 2)), np.empty(0, dtype=int), 2).shape == (2, 2)


def test_peer_reference_matches_nanmedian_of_the_other_usable_rows() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 100, (6, 30))
    x[rng.random(x.shape) < 0.2] = np.nan
    usable = np.isfinite(x) & (rng.random(x.shape) < 0.7)
    ref = peer_reference(x, usable, 2)
    for i in range(6):
        for t in range(30):
            others = [x[j, t] for j in range(6) if j != i and usable[j, t]]
            expected = float(np.median(others)) if len(others) >= 2 else np.nan
            np.testing.assert_equal(ref[i, t], expected)


def test_latch_holds_from_enter_until_leave() -> None:
    enter = np.array([[0, 1, 0, 0, 0, 1, 0, 0], [1, 0, 0, 1, 0, 0, 0, 0]], dtype=bool)
    leave = np.array([[1, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1, 0]], dtype=bool)
    expected = np.array([[0, 1, 1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(latch(enter, leave), expected)
    assert latch(np.zeros((2, 0), dtype=bool), np.zeros((2, 0), dtype=bool)).shape == (2, 0)


def test_nanmedian_last_matches_numpy_with_nan_anywhere() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.normal(50, 20, (4, 7, int(rng.integers(1, 9))))
        a[rng.random(a.shape) < 0.4] = np.nan
        empty = np.isnan(a).all(axis=-1).any()
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) if empty else _none():
            expected = np.nanmedian(a, axis=-1)
        np.testing.assert_array_equal(nanmedian_last(a), expected)
    assert nanmedian_last(np.empty((3, 0))).shape == (3,)


@contextlib.contextmanager
def _none() -> Iterator[None]:
    yield
