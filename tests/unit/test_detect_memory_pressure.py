"""Golden tests of the memory-pressure detector: hand-built windows, exact conditions out, and the
real 15 s trace as a false-alarm check."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse.codec import decode, encode
from gpulse.detect.base import Condition, ProcessSeen, Window
from gpulse.detect.memory_pressure import (
    GPU_ACTION,
    HOST_ACTION,
    MemoryPressureDetector,
    rolling_fit,
)
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
GIB = float(1 << 30)
MIB = float(1 << 20)
DETECTOR = MemoryPressureDetector()
TRACE = Path("/work/shared/traces/vector-1gpu-15s.csv")


def make_window(
    gpu_mem: np.ndarray,
    *,
    host_mem: np.ndarray | None = None,
    processes: list[list[ProcessSeen]] | None = None,
    gpu_total: float = 80 * GIB,
    host_total: float = 512 * GIB,
    node: str = "node-03",
    start: float = T0,
    step: float = STEP,
) -> Window:
    """A one-node window: gpu_mem is (GPUs × bins) bytes, GPU i has device index i; host_mem (bins,)."""
    gpu_mem = np.atleast_2d(np.asarray(gpu_mem, dtype=float))
    g, t = gpu_mem.shape
    host = {} if host_mem is None else {"mem_used": np.asarray(host_mem, dtype=float).reshape(1, t)}
    return Window(
        cluster="demo",
        start=start,
        step=step,
        end=start + step * t,
        nodes=[node],
        node_groups=[None],
        node_last_seen=np.array([start + step * t]),
        host=host,
        cpu_count=np.array([64.0]),
        host_mem_total=np.array([host_total]),
        gpu_node=np.zeros(g, dtype=int),
        gpu_index=np.arange(g),
        gpu={"util_gpu": np.full((g, t), 90.0), "mem_used": gpu_mem},
        gpu_mem_total=np.full(g, gpu_total),
        gpu_has_process=np.ones((g, t), dtype=bool),
        gpu_processes=processes if processes is not None else [[] for _ in range(g)],
    )


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def params(**overrides: object) -> dict[str, object]:
    merged = {**DETECTOR.defaults, **overrides}
    DETECTOR.validate(merged)
    return merged


def detect(window: Window, **overrides: object) -> list[Condition]:
    return DETECTOR.detect(window, params(**overrides))


def line(start_gib: float, gib_per_bin: float, bins: int = BINS) -> np.ndarray:
    """Memory on a straight line, each bin's value taken at its centre (exact in binary for these)."""
    return (start_gib + gib_per_bin * (np.arange(bins) + 0.5)) * GIB


def flat(gib: float, bins: int = BINS) -> np.ndarray:
    return np.full(bins, gib * GIB)


def conditions_lasting(series: np.ndarray, for_s: float = 60.0, **window_args: object) -> set[float]:
    """Evaluate at every bin as the window grows; the `since` of each condition held for `for_s`.

    What the alert state machine would ever have announced for this series."""
    gpu = np.atleast_2d(series)
    lasting = set()
    for end in range(1, gpu.shape[1] + 1):
        part = make_window(gpu[:, :end], **window_args)  # type: ignore[arg-type]
        lasting |= {c.since for c in detect(part) if part.end - c.since >= for_s}
    return lasting


# --- it fires --------------------------------------------------------------------------------


def test_a_leak_on_a_straight_line_warns_before_the_oom() -> None:
    mem = np.vstack([flat(30), flat(30), line(40, 0.25), flat(30)])  # GPU 2 leaks 3 GiB/min
    processes: list[list[ProcessSeen]] = [[] for _ in range(4)]
    processes[2] = [ProcessSeen(4242, "carol", "train-7", "python", int(60 * GIB), T0, at(119))]

    [cond] = detect(make_window(mem, processes=processes))

    # the fit needs min_fit_s = 300 s of data: 60 bins, first reached at bin 59. There the line is
    # at 55 GiB at the bin's end, 500 s from full at 0.05 GiB/s: within the 900 s horizon.
    # At the end it is at 70 GiB: 10 GiB, 200 s from full.
    values: list[float | None] = [round(float(v), 1) for v in (40 + 1.0 * (np.arange(30) + 0.5)) / 80 * 100]
    assert cond == Condition(
        rule="memory_pressure",
        subject={"cluster": "demo", "node": "node-03", "gpu": 2},
        since=at(59),
        severity="warning",
        summary=(
            "node-03 GPU 2 memory 69.9 of 80.0 GiB in use (87 %), rising 3.00 GiB/min, "
            "full in about 3m at this rate (told once full is due within 15m)"
        ),
        action=GPU_ACTION,
        nodes=["node-03"],
        gpus=["node-03/2"],
        users=["carol"],
        containers=["train-7"],
        values={
            "mem_used": 69.875 * GIB,
            "mem_total": 80 * GIB,
            "used_pct": 87.3,
            "full_ratio": 0.95,
            "duration_s": 305.0,
            "slope_gib_per_min": 3.0,
            "r2": 1.0,
            "eta_s": 200.0,
        },
        evidence=Evidence(
            title="node-03/2: memory in use (% of 80.0 GiB), last 10m",
            unit="%",
            rows=[EvidenceRow("node-03/2", values, 87.3, True, "gpu.mem_pct", "node-03/2", "last")],
            reference=95.0,
            reference_label="full line",
        ),
    )


def test_memory_at_the_brim_is_critical_whatever_the_severity_parameter() -> None:
    mem = np.concatenate([flat(60, 30), flat(77, 90)])  # a bigger batch from bin 30: 96 % and flat

    [cond] = detect(make_window(mem), severity="info")

    assert cond.since == at(30)
    assert cond.severity == "critical"
    assert cond.summary == "node-03 GPU 0 memory 77.0 of 80.0 GiB in use (96 %): nearly full"
    assert cond.values == {
        "mem_used": 77 * GIB,
        "mem_total": 80 * GIB,
        "used_pct": 96.2,
        "full_ratio": 0.95,
        "duration_s": 450.0,
    }


def test_a_leak_that_reaches_the_brim_keeps_its_start() -> None:
    # rising from bin 0, predicted full from bin 59, at 95 % from bin 80, flat at 78 GiB from bin 88:
    # one run, since the prediction began; critical now, and no longer rising
    mem = np.minimum(line(56, 0.25), 78 * GIB)

    [cond] = detect(make_window(mem))

    assert (cond.since, cond.severity) == (at(59), "critical")
    assert cond.summary == "node-03 GPU 0 memory 78.0 of 80.0 GiB in use (98 %): nearly full"
    assert "eta_s" not in cond.values


def test_full_and_still_rising_says_both() -> None:
    mem = line(41.5, 0.3)  # 3.6 GiB/min, at 95 % from bin 115; the line is 2.5 GiB from full at the end

    [cond] = detect(make_window(mem))

    assert cond.severity == "critical"
    assert cond.summary == (
        "node-03 GPU 0 memory 77.3 of 80.0 GiB in use (97 %): nearly full, rising 3.60 GiB/min, "
        "full within a minute at this rate (told once full is due within 15m)"
    )
    assert cond.since == at(59)
    assert cond.values["eta_s"] == pytest.approx(2.5 / 0.06, abs=0.1)


def test_host_memory_has_its_own_subject_and_advice() -> None:
    host = line(300, 1.5)  # 18 GiB/min on a 512 GiB host: 480 GiB at the end, 107 s from full
    processes = [[ProcessSeen(7, "dave", None, "python", None, T0, at(119))]]

    [cond] = detect(make_window(flat(30), host_mem=host, processes=processes))

    assert cond.subject == {"cluster": "demo", "node": "node-03", "gpu": "host"}
    assert (cond.since, cond.severity, cond.action) == (at(59), "warning", HOST_ACTION)
    assert (cond.nodes, cond.gpus, cond.users) == (["node-03"], [], ["dave"])
    assert cond.summary == (
        "node-03 host memory 479.2 of 512.0 GiB in use (94 %), rising 18.00 GiB/min, "
        "full in about 2m at this rate (told once full is due within 15m)"
    )
    assert cond.evidence is not None
    assert cond.evidence.title == "node-03 host: memory in use (% of 512.0 GiB), last 10m"


def test_gpus_come_before_host_memory() -> None:
    window = make_window(np.vstack([flat(79), flat(79)]), host_mem=flat(500))
    assert [c.subject["gpu"] for c in detect(window)] == [0, 1, "host"]


def test_gaps_in_the_middle_do_not_hide_a_leak() -> None:
    mem = line(40, 0.25)
    mem[30:50] = np.nan  # a shipper restart: 100 s lost
    [cond] = detect(make_window(mem))
    # 60 bins with data first at bin 79; the gap breaks nothing after it
    assert (cond.since, cond.severity) == (at(79), "warning")


def running(first_seen: float = T0 - 3600) -> list[list[ProcessSeen]]:
    """GPU 0's process, running since `first_seen` (an hour before the window by default)."""
    return [[ProcessSeen(4242, "carol", "serve-7", "python", int(40 * GIB), first_seen, at(119))]]


def first_alert(series: np.ndarray, **window_args: object) -> tuple[int, float] | None:
    """(the window's last bin, the condition's since in bins) at the first window ending in a
    condition held for 60 s, growing the window one bin at a time; None if there is none."""
    for end in range(1, series.size + 1):
        part = make_window(series[:end], **window_args)  # type: ignore[arg-type]
        for c in detect(part):
            if part.end - c.since >= 60:
                return end - 1, (c.since - T0) / STEP
    return None


def test_a_leak_in_a_running_job_is_told_from_its_first_minute_and_a_half() -> None:
    # 40 GiB held for 400 s, then 3 GiB/min from bin 80: the quick fit (18 bins) of a steady climb
    # from a level that held, in a process running for an hour
    mem = np.concatenate([flat(40, 80), line(40, 0.25, 40)])

    # first predicted at bin 93, 14 bins (70 s) into the rise; its fit began at bin 76, so the
    # condition has held for 90 s and the alert fires at once
    assert first_alert(mem, processes=running()) == (93, 76.0)
    [cond] = detect(make_window(mem, processes=running()))
    assert (cond.since, cond.severity) == (at(76), "warning")
    assert cond.summary == (
        "node-03 GPU 0 memory 49.9 of 80.0 GiB in use (62 %), rising 3.00 GiB/min, "
        "full in about 10m at this rate (told once full is due within 15m)"
    )
    assert (cond.values["r2"], cond.values["eta_s"]) == (1.0, 600.0)
    # without a process, or in a job started in the window (warming up), only the long fit speaks:
    # first at bin 147, 67 bins (335 s) into the rise, and the alert a minute later
    assert first_alert(mem) is None
    assert first_alert(mem, processes=running(at(40))) is None
    longer = np.concatenate([flat(40, 80), line(40, 0.25, 100)])
    assert first_alert(longer) == first_alert(longer, processes=running(at(40))) == (158, 147.0)


# --- it stays quiet --------------------------------------------------------------------------


def test_memory_that_steps_up_at_job_start_then_stays_flat() -> None:
    # a straight line through a single step explains at most 75 % of its variance
    mem = np.concatenate([flat(1, 40), flat(70, 200)])
    assert conditions_lasting(mem, for_s=0) == set()


def test_a_two_minute_loading_ramp_then_flat() -> None:
    # weights loading for two minutes fits a line well (r² up to 0.84) once the plateau begins,
    # but the last quarter of the fit no longer climbs
    mem = np.concatenate([flat(1, 60), np.linspace(1, 68, 24) * GIB, flat(68, 156)])
    assert conditions_lasting(mem, for_s=0) == set()


def test_two_allocation_steps_at_job_start() -> None:
    # model, then optimiser state 150 s later: pending for a few bins at most, never for for_s
    mem = np.concatenate([flat(1, 60), flat(40, 30), flat(68, 150)])
    assert conditions_lasting(mem) == set()


def test_a_caching_allocator_sawtooth() -> None:
    for period in (24, 60):  # 2 and 5 minutes: grows, then released
        mem = (40 + 28 * (np.arange(360) % period) / period) * GIB
        assert conditions_lasting(mem) == set(), period
        # in a job running for an hour, the quick fit sees each tooth's fall in the lookback
        assert conditions_lasting(mem, processes=running()) == set(), period


def test_steps_in_a_running_job_are_not_a_line() -> None:
    # an evaluation pass allocating twice, 20 s apart: 12 bins of a line would fit it, but two of
    # the fit's thirds hold the whole rise
    mem = np.concatenate([flat(30, 100), flat(45, 4), flat(60, 100)])
    assert conditions_lasting(mem, processes=running()) == set()
    job_start = np.concatenate([flat(1, 60), flat(40, 30), flat(68, 150)])
    assert conditions_lasting(job_start, processes=running()) == set()


def test_steady_ninety_percent_with_noise() -> None:
    mem = (72 + np.random.default_rng(11).normal(0, 0.25, 240)) * GIB
    assert conditions_lasting(mem, for_s=0) == set()


def test_a_slow_leak_far_from_full_is_not_yet_news() -> None:
    mem = line(20, 0.05)  # 0.6 GiB/min at 26 GiB: 90 minutes from full
    assert detect(make_window(mem)) == []


def test_too_little_data_to_fit() -> None:
    mem = np.full(BINS, np.nan)
    mem[-50:] = line(50, 0.4, 50)  # a steep rise seen for only 250 s: the GPU appeared late
    assert detect(make_window(mem)) == []


def test_no_data_in_the_last_bin() -> None:
    mem = line(40, 0.25)
    mem[-1] = np.nan
    assert detect(make_window(mem)) == []
    full = flat(79)
    full[-1] = np.nan
    assert detect(make_window(full)) == []


def test_an_unknown_total_gives_no_level() -> None:
    assert detect(make_window(flat(79), gpu_total=np.nan)) == []
    assert detect(make_window(flat(79), gpu_total=0.0)) == []


def test_empty_and_all_nan_windows() -> None:
    nan = np.full((4, BINS), np.nan)
    assert detect(make_window(nan, host_mem=np.full(BINS, np.nan))) == []
    assert detect(make_window(np.empty((4, 0)))) == []
    assert detect(make_window(np.empty((0, BINS)))) == []


def test_the_window_is_not_written_to_and_the_answer_repeats() -> None:
    window = make_window(np.vstack([line(40, 0.25), flat(79)]), host_mem=line(300, 1.5))
    before = window.gpu["mem_used"].copy()
    first = detect(window)
    assert detect(window) == first
    np.testing.assert_array_equal(window.gpu["mem_used"], before)


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"full_ratio": 1.2}, "full_ratio"),
        ({"full_ratio": "0.9"}, "full_ratio"),
        ({"fit_s": 10}, "fit_s"),
        ({"min_fit_s": 700}, "min_fit_s"),  # more than fit_s: the trend kind could never fire
        ({"horizon_s": -1}, "horizon_s"),
        ({"min_r2": 2}, "min_r2"),
        ({"rise_s": 5}, "rise_s"),
        ({"rise_s": 900}, "rise_s"),  # more than fit_s: the lookback before the rise is fit_s
        ({"severity": "page"}, "severity"),
        ({"full_pct": 95}, "full_pct"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DETECTOR.detect(make_window(np.zeros((1, 4))), {**DETECTOR.defaults, **overrides})


def test_thresholds_are_parameters() -> None:
    window = make_window(flat(72))  # 90 %
    assert detect(window) == []
    [cond] = detect(window, full_ratio=0.9)
    assert cond.severity == "critical"
    slow = make_window(line(20, 0.05))
    assert detect(slow) == []
    [cond] = detect(slow, horizon_s=7200, severity="info")
    assert cond.severity == "info"
    assert cond.values["eta_s"] == pytest.approx(54 * GIB / (0.01 * GIB), abs=0.1)


# --- the rolling fit against plain numpy -----------------------------------------------------


def test_rolling_fit_matches_polyfit() -> None:
    rng = np.random.default_rng(5)
    y = rng.uniform(0, 1, (3, 50))
    y[0, 5] = np.nan
    y[1, :10] = np.nan
    w = 12
    fit = rolling_fit(y, w)
    for r in range(3):
        for j in (11, 20, 33, 49):
            x = np.arange(max(0, j - w + 1), j + 1)
            ok = np.isfinite(y[r, x])
            slope, intercept = np.polyfit(x[ok], y[r, x][ok], 1)
            assert fit.points[r, j] == ok.sum()
            assert fit.slope[r, j] == pytest.approx(slope)
            assert fit.r2[r, j] == pytest.approx(np.corrcoef(x[ok], y[r, x][ok])[0, 1] ** 2)
            assert fit.at_end[r, j] == pytest.approx(intercept + slope * (j + 0.5))


def test_rolling_fit_of_a_flat_or_single_point_series() -> None:
    y = np.array([[0.9] * 20, [np.nan] * 19 + [0.5]])
    fit = rolling_fit(y, 10)
    assert (fit.r2 == 0).all()
    np.testing.assert_allclose(fit.slope[0, 1:], 0.0, atol=1e-15)
    assert np.isnan(fit.slope[1]).all()


# --- the real trace --------------------------------------------------------------------------


def _utc(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.skipif(not TRACE.exists(), reason="the shared trace is not on this machine")
def test_seven_hours_of_a_real_gpu_never_raise_it() -> None:
    # Fine-tuning and inference stepping between 1 and 69.5 GiB on an 80 GiB GPU, 15 s samples:
    # steps and plateaus, never a steady climb to full. Evaluated at every bin with a 10-minute window.
    rows = [line.split(", ") for line in TRACE.read_text().splitlines()[1:]]
    ts = np.array([_utc(r[0]) for r in rows])
    step = 15.0
    idx = np.floor((ts - ts[0]) / step).astype(int)
    mem = np.full(idx.max() + 1, np.nan)
    mem[idx] = [float(r[1].removesuffix(" MiB")) * MIB for r in rows]
    bins = 40
    # and as if one process had held the GPU all along: the quick fit may speak from the start
    job = [[ProcessSeen(1, "vector", None, "python", None, ts[0] - 3600, ts[-1])]]
    for end in range(1, mem.size + 1):
        lo = max(0, end - bins)
        window = make_window(mem[lo:end], start=ts[0] + lo * step, step=step, node="vector-gpu")
        assert detect(window) == [], end
        assert detect(replace(window, gpu_processes=job)) == [], end


# --- properties ------------------------------------------------------------------------------

SMALL = {"fit_s": 60, "min_fit_s": 30, "horizon_s": 120, "rise_s": 30}  # 12-bin fits: short windows hold them


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    """One GPU's memory in GiB: a noisy line, a step, or anything, with NaN anywhere; and its total."""
    t = draw(st.integers(0, 40))
    kind = draw(st.sampled_from(["line", "step", "any"]))
    if kind == "line":
        base = np.linspace(draw(st.floats(0, 80)), draw(st.floats(0, 80)), t)
        noise = draw(hnp.arrays(np.float64, t, elements=st.floats(-0.5, 0.5)))
        gib = base + noise
    elif kind == "step":
        gib = np.where(
            np.arange(t) < draw(st.integers(0, 40)), draw(st.floats(0, 80)), draw(st.floats(0, 80))
        )
    else:
        gib = draw(hnp.arrays(np.float64, t, elements=st.floats(0, 80)))
    holes = draw(hnp.arrays(np.bool_, t))
    return np.where(holes & draw(st.booleans()), np.nan, gib), draw(st.sampled_from([80.0, 40.0, np.nan]))


def reference(level: np.ndarray, p: dict[str, Any]) -> float | None:
    """The rule written plainly with np.polyfit, bin by bin: the `since` of the run at the end."""
    w, q = round(p["fit_s"] / STEP), max(3, round(p["fit_s"] / STEP * 0.25))
    since = None
    # a vanishing slope gives an infinite ETA, as in the detector
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for b in range(level.size):
            held = bool(level[b] >= p["full_ratio"])
            x = np.arange(max(0, b - w + 1), b + 1)
            ok = np.isfinite(level[x])
            xr = np.arange(max(0, b - q + 1), b + 1)
            okr = np.isfinite(level[xr])
            if np.isfinite(level[b]) and ok.sum() * STEP >= p["min_fit_s"] and okr.sum() >= 2:
                slope, intercept = np.polyfit(x[ok], level[x][ok], 1)
                recent = np.polyfit(xr[okr], level[xr][okr], 1)[0]
                resid = level[x][ok] - (intercept + slope * x[ok])
                var = level[x][ok].var()
                r2 = 1 - resid.var() / var if var >= 1e-10 else 0.0
                # a bin's value stands at its index, its end half a bin later
                eta = (1 - (intercept + slope * (b + 0.5))) / (slope / STEP) if slope > 0 else np.inf
                held |= bool(
                    slope > 0 and r2 >= p["min_r2"] and eta <= p["horizon_s"] and recent >= 0.5 * slope
                )
            since = (since if since is not None else T0 + b * STEP) if held else None
    return since


@settings(max_examples=300, deadline=None)
@given(drawn=series())
def test_any_series_matches_the_plain_rule_and_is_json_safe(drawn: tuple[np.ndarray, float]) -> None:
    gib, total = drawn
    window = make_window(gib * GIB, gpu_total=total * GIB)
    p = params(**SMALL)
    found = DETECTOR.detect(window, p)
    assert DETECTOR.detect(window, p) == found
    assert [c.since for c in found] == [s for s in [reference(gib / total, p)] if s is not None]
    for cond in found:
        json.dumps(asdict(cond), allow_nan=False)
        assert window.start <= cond.since < window.end


# --- through the codec and the window builder ------------------------------------------------


def test_a_shipped_batch_reaches_the_detector_intact() -> None:
    # ten minutes of 1 Hz samples, GPU 0 leaking 3 GiB/min: the MiB-resolution codec and the 5 s
    # bins keep the line (each bin's mean sits at its centre)
    t0, n = 1_763_800_000.0, 600
    leak = [(40 + 0.05 * i) * GIB for i in range(n)]
    doc = batch_doc(t0=t0, n=n, mem_used=[leak, [30 * GIB] * n])
    window = build_window("c1", [decode(encode(doc))], end=t0 + n, span_s=600, step=STEP)

    [cond] = detect(window)

    assert (cond.subject, cond.since) == ({"cluster": "c1", "node": "node-01", "gpu": 0}, window.start + 295)
    assert cond.summary == (
        "node-01 GPU 0 memory 69.8 of 80.0 GiB in use (87 %), rising 3.00 GiB/min, "
        "full in about 3m at this rate (told once full is due within 15m)"
    )
