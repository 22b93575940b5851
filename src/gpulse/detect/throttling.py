"""GPU throttling: a busy GPU slowed for heat, or held back by the HW power brake.

A GPU protects itself: near its slowdown temperature NVML reports thermal clocks-event reasons
(HW slowdown, SW thermal, HW thermal) and the clocks drop; the HW power brake is asserted from
outside the GPU (the system's power supplies or cooling). Either costs a job real throughput,
and both point at the node, not the job. The window builder folds the reason bitmask into two
series, the fraction of each bin a GPU spent throttled for heat (`throttle_thermal`) and by the
power brake (`throttle_power`). The SW power cap is deliberately in neither: a busy GPU at its
power limit is working as designed.

A GPU is throttled in a bin when it is busy (util_gpu ≥ `min_util`: an idle GPU's clocks cost
nothing) and either throttle fraction reaches `min_fraction`, or its temperature is within
`temp_margin_c` of its own slowdown threshold (when the shipper knows it). One vectorised pass
over (GPUs × bins); one condition per GPU.

Defaults: `for_s` 120 s, because fans catch up with a load step within about a minute and two
minutes of throttling is a cooling fault, not a transient; `min_fraction` 0.5, so a one-second
flicker (0.2 of a 5 s bin) at the edge of a fan curve never counts; `temp_margin_c` 3 °C of the
GPU's own NVML slowdown threshold, one load spike short of HW slowdown, while busy healthy GPUs
sit well below it; `min_util` 10 %, under which a GPU is idle or nearly and its clocks are parked
anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample, trailing_run_start

# the same "3m 10s" wording as the held-but-idle detector; belongs in a shared helper (see report)
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30

THERMAL_ACTION = (
    "Check the node's cooling: airflow and fan speeds, the inlet temperature against the server's "
    "specification, blocked or dusty intakes and heatsinks, a failed fan; compare with the GPU's "
    "neighbours. `nvidia-smi -q -d PERFORMANCE,TEMPERATURE` on the node shows the active throttle "
    "reasons and the thresholds."
)
POWER_ACTION = (
    "The HW power brake is asserted from outside the GPU: check the node's power supplies (a failed "
    "or unplugged PSU), the rack's power budget and the BMC's event log, and its cooling; "
    "`nvidia-smi -q -d PERFORMANCE` on the node shows the active throttle reasons."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    min_fraction: float
    temp_margin_c: float
    min_util: float


class ThrottlingDetector:
    """Busy GPUs throttled for heat, running at their slowdown temperature, or braked for power."""

    name: ClassVar[str] = "throttling"
    title: ClassVar[str] = "GPU throttling"
    description: ClassVar[str] = (
        "A busy GPU throttled for heat (HW slowdown, SW or HW thermal), running within a few degrees "
        "of its slowdown temperature, or held back by the HW power brake: a cooling or power fault "
        "of the node that slows the job on it."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = (
        "gpu.util_gpu",
        "gpu.temp_c",
        "gpu.throttle_reasons",
        "gpu.sm_clock_mhz",
    )
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 120,
        "severity": "warning",
        "min_fraction": 0.5,
        "temp_margin_c": 3.0,
        "min_util": 10.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per busy GPU throttled in every bin of its trailing run up to `window.end`.

        A bin without utilisation data is not busy, and one without throttle or temperature data
        shows no throttling: either breaks the run.
        """
        p = _parse(params)
        util = window.gpu.get("util_gpu")
        if util is None or util.size == 0:
            return []
        nan = np.full(util.shape, np.nan)
        temp = window.gpu.get("temp_c", nan)
        slowdown = _per_gpu(window.gpu_temp_slowdown, util.shape[0])
        with np.errstate(invalid="ignore"):  # NaN compares False: unknown is never throttled
            busy = util >= p.min_util
            thermal = window.gpu.get("throttle_thermal", nan) >= p.min_fraction
            near = temp >= (slowdown - p.temp_margin_c)[:, None]
            brake = window.gpu.get("throttle_power", nan) >= p.min_fraction
        throttled = busy & (thermal | near | brake)
        starts = trailing_run_start(throttled, window.times)
        return [
            _condition(
                window, int(g), float(starts[g]), temp[g], slowdown[g], thermal[g], near[g], brake[g], p
            )
            for g in np.flatnonzero(np.isfinite(starts))  # only the GPUs in a run, not every GPU
        ]


def _condition(
    window: Window,
    g: int,
    since: float,
    temp: np.ndarray,
    slowdown: float,
    thermal: np.ndarray,
    near: np.ndarray,
    brake: np.ndarray,
    p: _Params,
) -> Condition:
    node = window.nodes[int(window.gpu_node[g])]
    index = int(window.gpu_index[g])
    run = window.times >= since  # every bin of the run is busy and throttled
    util_mean = _mean(window.gpu["util_gpu"][g][run]) or 0.0
    temp_mean = _mean(temp[run])
    clock = _mean(_row(window, "sm_clock_mhz", g)[run])
    thermal_frac = _mean(_row(window, "throttle_thermal", g)[run])
    power_frac = _mean(_row(window, "throttle_power", g)[run])
    duration = float(window.end - since)
    is_thermal, is_near, is_brake = bool(thermal[run].any()), bool(near[run].any()), bool(brake[run].any())

    causes = []
    if is_thermal:
        causes.append(f"thermal throttling ({_pct(thermal_frac)} % of the time)")
    if is_near:
        causes.append(f"within {p.temp_margin_c:g} °C of its slowdown temperature")
    if is_brake:
        causes.append(f"HW power brake ({_pct(power_frac)} % of the time)")
    facts = []
    if temp_mean is not None:
        known = np.isfinite(slowdown)
        facts.append(
            f"{temp_mean:.0f} °C" + (f" against a slowdown temperature of {slowdown:.0f} °C" if known else "")
        )
    if clock is not None:
        facts.append(f"SM clock {clock:.0f} MHz")
    facts.append(f"{util_mean:.0f} % busy")
    summary = f"{node} GPU {index}: {' and '.join(causes)} for {text.duration(duration)} — {', '.join(facts)}"
    actions = ([THERMAL_ACTION] if is_thermal or is_near else []) + ([POWER_ACTION] if is_brake else [])

    values: dict[str, float] = {
        "util": round(util_mean, 1),
        "duration_s": round(duration, 1),
        "min_fraction": p.min_fraction,
        "temp_margin_c": p.temp_margin_c,
    }
    for key, value in (
        ("temp_c", temp_mean),
        ("sm_clock_mhz", clock),
        ("throttle_thermal", thermal_frac),
        ("throttle_power", power_frac),
    ):
        if value is not None:
            values[key] = round(value, 3 if key.startswith("throttle") else 1)
    if np.isfinite(slowdown):
        values["temp_slowdown_c"] = float(slowdown)
    return Condition(
        rule=ThrottlingDetector.name,
        subject={"cluster": window.cluster, "node": node, "gpu": index},
        since=since,
        severity=p.severity,
        summary=summary,
        action=" ".join(actions),
        nodes=[node],
        gpus=[window.gpu_label(g)],
        values=values,
        evidence=_evidence(window, g, temp, slowdown, run, is_near, is_thermal or is_brake),
    )


def _evidence(
    window: Window,
    g: int,
    temp: np.ndarray,
    slowdown: float,
    run: np.ndarray,
    flag_temp: bool,
    flag_throttle: bool,
) -> Evidence:
    """Two rows on one scale: the temperature in °C against the slowdown threshold, and the % of
    each bin throttled (heat or power brake, whichever is higher). Their units differ, so the
    evidence carries none and the labels and title name them."""
    # fmax: a NaN on one side leaves the other
    throttled = np.fmax(_row(window, "throttle_thermal", g), _row(window, "throttle_power", g)) * 100
    known = bool(np.isfinite(slowdown))
    return Evidence(
        title=f"{window.gpu_label(g)}: temperature (°C) and time throttled (%), "
        f"last {text.duration(window.end - window.start)}",
        unit="",
        rows=[
            *(  # no temperature row for a GPU that never reported one
                [
                    EvidenceRow(  # series, subject, reduce: how a resolve draws it again (analyze.recovery)
                        "temperature °C",
                        downsample(temp, EVIDENCE_POINTS),
                        _level(temp[run]),
                        flag_temp,
                        "gpu.temp_c",
                        window.gpu_label(g),
                        "mean",
                    )
                ]
                if np.isfinite(temp).any()
                else []
            ),
            EvidenceRow(
                "throttled %",
                downsample(throttled, EVIDENCE_POINTS),
                _level(throttled[run]),
                flag_throttle,
                "gpu.throttled_pct",
                window.gpu_label(g),
                "mean",
            ),
        ],
        reference=float(slowdown) if known else None,
        reference_label="slowdown °C" if known else None,
        scale_max=float(slowdown) + 10.0 if known else 100.0,
    )


def _per_gpu(values: np.ndarray, gpus: int) -> np.ndarray:
    """A per-GPU context array as floats, all NaN (unknown) when the window does not carry it."""
    values = np.asarray(values, dtype=float)
    return values if values.shape == (gpus,) else np.full(gpus, np.nan)


def _row(window: Window, metric: str, g: int) -> np.ndarray:
    """GPU row `g` of a metric, all NaN when the window does not carry the metric."""
    matrix = window.gpu.get(metric)
    return matrix[g] if matrix is not None else np.full(window.bins, np.nan)


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _level(values: np.ndarray) -> float:
    mean = _mean(values)
    return round(mean, 1) if mean is not None else 0.0


def _pct(fraction: float | None) -> str:
    return f"{(fraction or 0.0) * 100:.0f}"


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("throttling", params, ThrottlingDetector.defaults)
    return _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        min_fraction=r.number("min_fraction", 0.01, 1),
        temp_margin_c=r.number("temp_margin_c", 0, 30),
        min_util=r.number("min_util", 0, 100),
    )
