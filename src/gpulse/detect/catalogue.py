"""The one place every detector is registered, and the merge of a rule's parameters.

analyze runs `CATALOGUE[name].detect(window, params_for(name, overrides))` for each enabled
rule; the ops CLI and the config table name rules by these keys. docs/detectors.md describes
each one, and a test checks that it documents exactly these names and parameters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gpulse.detect.base import Detector
from gpulse.detect.gpu_imbalance import GpuImbalanceDetector
from gpulse.detect.hardware import HardwareErrorsDetector
from gpulse.detect.idle_held import IdleHeldDetector
from gpulse.detect.imbalance import ImbalanceDetector
from gpulse.detect.input_bound import InputBoundDetector
from gpulse.detect.memory_pressure import MemoryPressureDetector
from gpulse.detect.mig import MigIdleDetector, MigLayoutDetector
from gpulse.detect.network import NetworkDetector
from gpulse.detect.numa import NumaDetector
from gpulse.detect.silent_node import SilentNodeDetector
from gpulse.detect.throttling import ThrottlingDetector

_DETECTORS: tuple[Detector, ...] = (
    ImbalanceDetector(),
    IdleHeldDetector(),
    HardwareErrorsDetector(),
    GpuImbalanceDetector(),
    MigIdleDetector(),
    MigLayoutDetector(),
    SilentNodeDetector(),
    ThrottlingDetector(),
    NumaDetector(),
    NetworkDetector(),
    InputBoundDetector(),
    MemoryPressureDetector(),
)

CATALOGUE: dict[str, Detector] = {d.name: d for d in _DETECTORS}

if len(CATALOGUE) != len(_DETECTORS):  # two detectors under one name: the second would hide the first
    raise RuntimeError("gpulse.detect.catalogue: a detector name is registered twice")


# Rules that apply their `for_s` themselves: a silent node's silence runs from its last report,
# which only the detector sees, so the state machine must not wait for it a second time.
SELF_TIMED = frozenset({SilentNodeDetector.name})


# The hold-down before a firing alert resolves (Prometheus' `keep_firing_for`), per rule: a firing
# alert whose condition stops holding stays firing until it has been absent this long, and if the
# condition comes back meanwhile it is the same alert. Each default and its reason are in
# docs/detectors.md ("Hold-down before resolve"); operators set `keep_firing_for_s` like any param.
KEEP_FIRING_FOR_S: dict[str, float] = {
    "imbalance": 180,
    "idle_held": 120,
    "hardware_errors": 0,
    "gpu_imbalance": 180,
    "mig_idle": 120,
    "mig_layout": 0,
    "silent_node": 0,
    "throttling": 300,
    "numa": 300,
    "network": 120,
    "input_bound": 120,
    "memory_pressure": 180,
}
MAX_KEEP_FIRING_FOR_S = 86_400.0


def keep_firing_for_s(params: dict[str, Any]) -> float:
    """The hold-down the alert state machine applies to a rule with these (merged) params."""
    return float(params.get("keep_firing_for_s", 0))


def state_for_s(name: str, params: dict[str, Any]) -> float:
    """The `for` the alert state machine applies to the rule: its `for_s`, or 0 if it times itself."""
    return 0.0 if name in SELF_TIMED else float(params["for_s"])


def params_for(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detector's defaults with `overrides` laid over them, validated.

    Raises KeyError for an unknown detector name, and ValueError naming the parameter that is
    unknown to the detector or out of its range.
    """
    try:
        detector = CATALOGUE[name]
    except KeyError:
        raise KeyError(f"no detector named {name!r}; known: {', '.join(sorted(CATALOGUE))}") from None
    params = {**detector.defaults, "keep_firing_for_s": KEEP_FIRING_FOR_S.get(name, 0), **(overrides or {})}
    _check_keep_firing_for(name, params["keep_firing_for_s"])
    detector.validate(params)
    return params


def _check_keep_firing_for(name: str, value: Any) -> None:
    is_number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if not is_number or not 0 <= float(value) <= MAX_KEEP_FIRING_FOR_S:
        raise ValueError(
            f"{name}: keep_firing_for_s must be a number in [0, {MAX_KEEP_FIRING_FOR_S:g}], not {value!r}"
        )
