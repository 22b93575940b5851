"""Golden tests of the throttling detector: hand-built windows, exact conditions out."""

from __future__ import annotations

import numpy as np
import pytest

from gpulse import codec
from gpulse.detect.base import Condition, Window
from gpulse.detect.throttling import POWER_ACTION, THERMAL_ACTION, ThrottlingDetector
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from node_shipper.simulate import Scenario, simulate_batches
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
GPUS = 8
DETECTOR = ThrottlingDetector()


def busy_node() -> dict[str, np.ndarray]:
    """Eight H100s training at 95 %, 70 °C, full SM clock, no throttle reason: (GPUs × bins) each."""
    return {
        "util_gpu": np.full((GPUS, BINS), 95.0),
        "temp_c": np.full((GPUS, BINS), 70.0),
        "sm_clock_mhz": np.full((GPUS, BINS), 1980.0),
        "throttle_thermal": np.zeros((GPUS, BINS)),
        "throttle_power": np.zeros((GPUS, BINS)),
    }


def make_window(gpu: dict[str, np.ndarray], *, slowdown: float | np.ndarray = 87.0) -> Window:
    """A one-node window (node-03) whose GPU i has device index i."""
    g, t = gpu["util_gpu"].shape
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=["node-03"],
        node_groups=[None],
        node_last_seen=np.array([T0 + STEP * t]),
        host={},
        cpu_count=np.array([224.0]),
        host_mem_total=np.array([2.0 * 2**40]),
        gpu_node=np.zeros(g, dtype=int),
        gpu_index=np.arange(g),
        gpu=gpu,
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=np.ones((g, t), dtype=bool),
        gpu_processes=[[] for _ in range(g)],
        gpu_temp_slowdown=np.broadcast_to(np.asarray(slowdown, dtype=float), (g,)).copy(),
    )


def detect(window: Window, **overrides: object) -> list[Condition]:
    return DETECTOR.detect(window, {**ThrottlingDetector.defaults, **overrides})


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


# --- it fires --------------------------------------------------------------------------------


def test_a_gpu_throttled_for_heat_at_its_slowdown_temperature() -> None:
    gpu = busy_node()
    gpu["temp_c"][5, 72:] = 86.0  # from bin 72 GPU 5 runs hot, in HW slowdown, its clock down
    gpu["throttle_thermal"][5, 72:] = 1.0
    gpu["sm_clock_mhz"][5, 72:] = 1410.0

    [cond] = detect(make_window(gpu))

    assert cond == Condition(
        rule="throttling",
        subject={"cluster": "demo", "node": "node-03", "gpu": 5},
        since=at(72),
        severity="warning",
        summary=(
            "node-03 GPU 5: thermal throttling (100 % of the time) and within 3 °C of its slowdown "
            "temperature for 4m — 86 °C against a slowdown temperature of 87 °C, SM clock 1410 MHz, "
            "95 % busy"
        ),
        action=THERMAL_ACTION,
        nodes=["node-03"],
        gpus=["node-03/5"],
        values={
            "util": 95.0,
            "duration_s": 240.0,
            "min_fraction": 0.5,
            "temp_margin_c": 3.0,
            "temp_c": 86.0,
            "sm_clock_mhz": 1410.0,
            "throttle_thermal": 1.0,
            "throttle_power": 0.0,
            "temp_slowdown_c": 87.0,
        },
        evidence=Evidence(
            title="node-03/5: temperature (°C) and time throttled (%), last 10m",
            unit="",
            rows=[
                EvidenceRow(
                    "temperature °C",
                    [*[70.0] * 18, *[86.0] * 12],
                    86.0,
                    True,
                    "gpu.temp_c",
                    "node-03/5",
                    "mean",
                ),
                EvidenceRow(
                    "throttled %",
                    [*[0.0] * 18, *[100.0] * 12],
                    100.0,
                    True,
                    "gpu.throttled_pct",
                    "node-03/5",
                    "mean",
                ),
            ],
            reference=87.0,
            reference_label="slowdown °C",
            scale_max=97.0,
        ),
    )


def test_near_the_slowdown_temperature_counts_before_any_reason_is_raised() -> None:
    gpu = busy_node()
    gpu["temp_c"][1, 60:] = 85.0  # 2 °C under slowdown, clocks not yet cut

    [cond] = detect(make_window(gpu))

    assert cond.since == at(60)
    assert cond.summary == (
        "node-03 GPU 1: within 3 °C of its slowdown temperature for 5m — 85 °C against a slowdown "
        "temperature of 87 °C, SM clock 1980 MHz, 95 % busy"
    )
    assert cond.action == THERMAL_ACTION
    assert [(r.label, r.flagged) for r in cond.evidence.rows] == [  # type: ignore[union-attr]
        ("temperature °C", True),
        ("throttled %", False),
    ]
    assert detect(make_window(gpu), temp_margin_c=1) == []  # the margin is a parameter


def test_the_hw_power_brake_points_at_the_node_s_power() -> None:
    gpu = busy_node()
    gpu["throttle_power"][2, 90:] = 1.0
    gpu["sm_clock_mhz"][2, 90:] = 1110.0
    gpu["temp_c"][2] = 65.0

    [cond] = detect(make_window(gpu))

    assert cond.subject == {"cluster": "demo", "node": "node-03", "gpu": 2}
    assert cond.since == at(90)
    assert cond.summary == (
        "node-03 GPU 2: HW power brake (100 % of the time) for 2m 30s — 65 °C against a slowdown "
        "temperature of 87 °C, SM clock 1110 MHz, 95 % busy"
    )
    assert cond.action == POWER_ACTION
    assert cond.values["throttle_power"] == 1.0
    assert [(r.label, r.level, r.flagged) for r in cond.evidence.rows] == [  # type: ignore[union-attr]
        ("temperature °C", 65.0, False),
        ("throttled %", 100.0, True),
    ]


def test_heat_and_brake_together_give_both_actions() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][0, 100:] = 0.6  # throttled for 3 of every 5 seconds
    gpu["throttle_power"][0, 110:] = 1.0
    gpu["temp_c"][0] = 80.0

    [cond] = detect(make_window(gpu))

    assert cond.since == at(100)
    assert cond.summary == (
        "node-03 GPU 0: thermal throttling (60 % of the time) and HW power brake (50 % of the time) "
        "for 1m 40s — 80 °C against a slowdown temperature of 87 °C, SM clock 1980 MHz, 95 % busy"
    )
    assert cond.action == f"{THERMAL_ACTION} {POWER_ACTION}"
    assert (cond.values["throttle_thermal"], cond.values["throttle_power"]) == (0.6, 0.5)


def test_several_gpus_give_one_condition_each() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][[3, 6], 50:] = 1.0
    assert [(c.subject["gpu"], c.since) for c in detect(make_window(gpu))] == [(3, at(50)), (6, at(50))]


def test_an_unknown_slowdown_threshold_leaves_the_thermal_reasons() -> None:
    gpu = busy_node()
    gpu["temp_c"][4, 80:] = 95.0
    gpu["throttle_thermal"][4, 80:] = 1.0
    del gpu["sm_clock_mhz"]  # an older shipper

    [cond] = detect(make_window(gpu, slowdown=np.nan))

    assert (
        cond.summary == "node-03 GPU 4: thermal throttling (100 % of the time) for 3m 20s — 95 °C, 95 % busy"
    )
    assert "temp_slowdown_c" not in cond.values and "sm_clock_mhz" not in cond.values
    assert cond.evidence is not None
    assert (cond.evidence.reference, cond.evidence.reference_label, cond.evidence.scale_max) == (
        None,
        None,
        100.0,
    )


def test_without_a_temperature_series_only_the_throttled_row_is_shown() -> None:
    gpu = busy_node()
    del gpu["temp_c"]
    gpu["throttle_thermal"][4, 80:] = 1.0

    [cond] = detect(make_window(gpu))

    assert cond.summary == (
        "node-03 GPU 4: thermal throttling (100 % of the time) for 3m 20s — SM clock 1980 MHz, 95 % busy"
    )
    assert [r.label for r in cond.evidence.rows] == ["throttled %"]  # type: ignore[union-attr]


# --- it stays quiet --------------------------------------------------------------------------


def test_a_hot_gpu_ten_degrees_below_its_limit_and_unthrottled_is_fine() -> None:
    gpu = busy_node()
    gpu["temp_c"][:] = 77.0
    assert detect(make_window(gpu)) == []


def test_a_busy_gpu_at_its_power_limit_is_fine() -> None:
    # the SW power cap (0x04) is how a busy GPU holds its limit: the window builder keeps it out
    # of throttle_power, so a capped GPU shows only a slightly lower clock
    gpu = busy_node()
    gpu["sm_clock_mhz"][:] = 1935.0
    assert detect(make_window(gpu)) == []


def test_brief_throttle_blips_do_not_make_a_run() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][5, [30, 60, 90, 118]] = 1.0
    gpu["throttle_power"][6, [40, 41]] = 1.0
    assert detect(make_window(gpu)) == []


def test_a_blip_in_the_last_bin_is_only_five_seconds_old() -> None:
    # the state machine holds it pending for for_s (120 s): a single bin never fires
    gpu = busy_node()
    gpu["throttle_thermal"][5, -1] = 1.0
    [cond] = detect(make_window(gpu))
    assert (cond.since, cond.values["duration_s"]) == (at(119), 5.0)


def test_throttled_under_min_fraction_of_each_bin_is_not_counted() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][5] = 0.4
    gpu["throttle_power"][5] = 0.2
    assert detect(make_window(gpu)) == []
    [cond] = detect(make_window(gpu), min_fraction=0.4)
    assert cond.since == T0


def test_an_idle_gpu_s_clocks_do_not_matter() -> None:
    gpu = busy_node()
    gpu["util_gpu"][7] = 0.0  # idle, in a hot corner of the chassis, clocks parked
    gpu["temp_c"][7] = 86.0
    gpu["throttle_thermal"][7] = 1.0
    assert detect(make_window(gpu)) == []


def test_a_lightly_loaded_gpu_counts_only_from_min_util() -> None:
    gpu = busy_node()
    gpu["util_gpu"][7] = 8.0
    gpu["throttle_thermal"][7] = 1.0
    assert detect(make_window(gpu)) == []
    assert [c.subject["gpu"] for c in detect(make_window(gpu), min_util=5)] == [7]


def test_one_cool_bin_restarts_the_run() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][5, 40:] = 1.0
    gpu["throttle_thermal"][5, 100] = 0.0
    [cond] = detect(make_window(gpu))
    assert cond.since == at(101)


def test_a_gpu_without_data_in_its_last_bin_is_not_throttled() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][5, 40:] = 1.0
    for series in gpu.values():
        series[5, -1] = np.nan
    assert detect(make_window(gpu)) == []


def test_empty_and_all_nan_windows() -> None:
    nan = {k: np.full((GPUS, BINS), np.nan) for k in busy_node()}
    assert detect(make_window(nan)) == []
    assert detect(make_window({k: np.empty((GPUS, 0)) for k in nan})) == []
    assert detect(make_window({k: np.empty((0, BINS)) for k in nan}, slowdown=np.empty(0))) == []
    assert detect(make_window({"util_gpu": np.full((GPUS, BINS), 95.0)})) == []  # nothing else known


def test_a_window_without_the_slowdown_context_still_judges_the_reasons() -> None:
    gpu = busy_node()
    gpu["throttle_thermal"][5, 100:] = 1.0
    window = make_window(gpu)
    bare = Window(**{**window.__dict__, "gpu_temp_slowdown": np.zeros(0)})  # the field's default
    [cond] = detect(bare)
    assert cond.subject["gpu"] == 5 and "temp_slowdown_c" not in cond.values


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"min_fraction": 0}, "min_fraction"),
        ({"min_fraction": 1.5}, "min_fraction"),
        ({"temp_margin_c": -1}, "temp_margin_c"),
        ({"min_util": "10"}, "min_util"),
        ({"for_s": None}, "for_s"),
        ({"severity": "page"}, "severity"),
        ({"min_temp_c": 80}, "min_temp_c"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        detect(make_window(busy_node()), **overrides)


def test_a_missing_parameter_is_named() -> None:
    params = dict(ThrottlingDetector.defaults)
    del params["temp_margin_c"]
    with pytest.raises(ValueError, match="temp_margin_c"):
        DETECTOR.validate(params)


# --- windows built from batches --------------------------------------------------------------


def test_reasons_from_batches_sw_power_cap_is_not_throttling() -> None:
    # three GPUs at 90 %, all at their SW power cap (0x04); GPU 1 adds SW thermal slowdown (0x20)
    # at 86 °C from its 20th sample, GPU 2 the HW power brake (0x80) from its 40th
    n, t0 = 60, 1_763_800_000.0
    doc = batch_doc(node="node-03", n=n, gpus=3, t0=t0)
    reasons = [[0x04] * n, [0x04] * 20 + [0x24] * 40, [0x04] * 40 + [0x84] * 20]
    temps = [[75.0] * n, [75.0] * 20 + [86.0] * 40, [75.0] * n]
    for g, entry in enumerate(doc["gpus"]):
        entry["temp_slowdown_c"] = 87.0
        entry["metrics"].update(
            throttle_reasons=[float(r) for r in reasons[g]], temp_c=temps[g], sm_clock_mhz=[1980.0] * n
        )
    chunk = codec.decode(codec.encode(doc))
    window = build_window("c1", [chunk], end=t0 + n, span_s=n, step=STEP)

    conds = detect(window)

    assert [(c.subject["gpu"], c.since - t0, c.action) for c in conds] == [
        (1, 20.0, THERMAL_ACTION),
        (2, 40.0, POWER_ACTION),
    ]
    assert conds[0].summary == (
        "node-03 GPU 1: thermal throttling (100 % of the time) and within 3 °C of its slowdown "
        "temperature for 40s — 86 °C against a slowdown temperature of 87 °C, SM clock 1980 MHz, 90 % busy"
    )


def test_a_simulated_healthy_fleet_is_not_throttled() -> None:
    t0 = 1_770_000_000.0
    docs = simulate_batches(Scenario.named("healthy", nodes=4), t0, 600, 30)
    window = build_window(
        "demo", [codec.decode(codec.encode(d)) for d in docs], end=t0 + 600, span_s=600, step=STEP
    )
    assert np.nanmax(window.gpu["util_gpu"]) > 90  # it works hard
    assert detect(window) == []
