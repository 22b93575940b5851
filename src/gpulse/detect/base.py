"""The one small interface every detector implements, and the window it reads.

analyze turns one cluster's stored chunks into a `Window`: matrices of (nodes × bins) and
(GPUs × bins), NaN where nothing was reported. A detector returns the `Condition`s that hold
at the end of the window; the alert state machine (gpulse.alerting.state) decides pending,
firing and resolved from them and from each rule's `for` duration.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeVar, cast

import numpy as np

from gpulse.finding import SEVERITIES, Evidence, Severity

# NVML clocks-event (throttle) reason bits, folded by the window builder into two series:
# the fraction of each bin a GPU spent throttled for heat, and for power.
THROTTLE_THERMAL_BITS = 0x20 | 0x40  # SW thermal, HW thermal
# HW slowdown (0x08) is raised for heat *or* the power brake; newer GPUs add the cause bit (0x40 or
# 0x80). It counts as thermal only alone, as older GPUs report heat.
THROTTLE_HW_SLOWDOWN = 0x08
THROTTLE_CAUSE_BITS = 0x40 | 0x80
# HW power brake only: the SW power cap (0x04) is a busy GPU at its limit, normal under full load
THROTTLE_POWER_BITS = 0x80


@dataclass(frozen=True)
class ProcessSeen:
    """A compute process seen on a GPU during the window (merged across batches by pid)."""

    pid: int
    user: str | None
    container: str | None
    name: str | None
    mem_used: int | None
    first_seen: float
    last_seen: float
    cpu_affinity: tuple[int, ...] | None = None
    cpu_numa_nodes: tuple[int, ...] | None = None
    mig_uuid: str | None = None
    job: str | None = None  # the scheduler's identity of its job (Batch v1 `job`): "slurm:<id>", "pod:<uid>"


@dataclass(frozen=True)
class MigInstance:
    """One MIG instance seen in the window (a row of `Window.mig_metrics`)."""

    gpu_row: int  # row of its GPU in the GPU matrices
    uuid: str
    profile: str | None
    gi_id: int
    ci_id: int
    mem_total: float


@dataclass(frozen=True)
class NodeSeen:
    """A node the registry knows for this cluster, whether or not it reported in the window."""

    node: str
    node_group: str | None
    last_seen: float


@dataclass(frozen=True)
class Window:
    """One cluster's recent samples, averaged into bins of `step` seconds starting at `start`."""

    cluster: str
    start: float
    step: float
    end: float  # evaluation time: the right edge of the last bin
    nodes: list[str]
    node_groups: list[str | None]  # per node
    node_last_seen: np.ndarray  # (N,) last sample time per node
    host: dict[str, np.ndarray]  # metric -> (N, T)
    cpu_count: np.ndarray  # (N,)
    host_mem_total: np.ndarray  # (N,)
    gpu_node: np.ndarray  # (G,) row index into `nodes`
    gpu_index: np.ndarray  # (G,) device index on its node
    gpu: dict[str, np.ndarray]  # metric -> (G, T)
    gpu_mem_total: np.ndarray  # (G,)
    gpu_has_process: np.ndarray  # (G, T) bool: a compute process was seen in that bin
    gpu_processes: list[list[ProcessSeen]]  # per GPU row
    # Below: optional context (defaults keep hand-made test windows short).
    gpu_numa: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,) NUMA node, NaN unknown
    gpu_power_limit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,) W, NaN unknown
    gpu_temp_slowdown: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,) °C, NaN unknown
    mig: list[MigInstance] = field(default_factory=list)
    mig_metrics: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (M, T)
    mig_has_process: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))  # (M, T)
    # per GPU row: each distinct MIG layout in time order, as (first seen, {(profile, gi_id, ci_id)})
    mig_layouts: dict[int, list[tuple[float, frozenset[tuple[str, int, int]]]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # batch events, each with its "node"
    registry: list[NodeSeen] = field(default_factory=list)  # every node the cluster has, silent ones too
    # the wall clock at evaluation (NaN: use `end`). Silence is measured against it: `end` follows
    # the data, and a cluster whose nodes all stopped has no data to follow.
    now: float = float("nan")

    @property
    def clock(self) -> float:
        """`now` when known, else the window's end."""
        return self.now if self.now == self.now else self.end

    @property
    def bins(self) -> int:
        return round((self.end - self.start) / self.step)

    @property
    def times(self) -> np.ndarray:
        """Start time of each bin."""
        return self.start + self.step * np.arange(self.bins)

    def gpu_label(self, g: int) -> str:
        return f"{self.nodes[int(self.gpu_node[g])]}/{int(self.gpu_index[g])}"


_T = TypeVar("_T")
# What several rules derive from one window (its jobs, the processes per node), kept while the
# window lives: by id, with a weak reference that drops the entry when the window goes.
_SHARED: dict[int, tuple[weakref.ref[Window], dict[Hashable, Any]]] = {}


def shared(window: Window, key: Hashable, compute: Callable[[], _T]) -> _T:
    """`compute()`, once per window and `key`: a figure several detectors read from the same
    window is derived once per tick. A window is never changed once built, so neither is it."""
    entry = _SHARED.get(id(window))
    if entry is None or entry[0]() is not window:
        entry = (weakref.ref(window), {})
        _SHARED[id(window)] = entry
        weakref.finalize(window, _SHARED.pop, id(window), None)
    memo = entry[1]
    if key not in memo:
        memo[key] = compute()
    return cast(_T, memo[key])


@dataclass(frozen=True)
class Condition:
    """A detector's word on one subject: the condition holds now, and has held since `since`."""

    rule: str
    subject: dict[str, str | int | None]  # labels that identify it: cluster, node_group, node, gpu, mig
    since: float
    severity: Severity
    summary: str
    action: str
    nodes: list[str] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    evidence: Evidence | None = None
    # set by analyze from the registry and the config, not by detectors; not part of the fingerprint
    node_group: str | None = None
    teams: list[str] = field(default_factory=list)
    # set by analyze's inhibitions: the rule whose alert already says what is wrong here. A muted
    # condition is not announced, but an alert already firing is held, not resolved, while muted.
    muted_by: str | None = None
    # set by analyze (gpulse.detect.jobs): the job every node the condition names runs, when one
    # job holds them all; an incident's `equal` label. Not part of the fingerprint.
    job: str | None = None


class Detector(Protocol):
    """A detector family. Parameters come as a dict already merged with `defaults`."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]  # the metrics it needs, e.g. ("gpu.util_gpu", "gpu.mem_used")
    defaults: ClassVar[dict[str, Any]]  # must include "for_s" and "severity"
    # True for events (a MIG layout change, an XID): announced once, never "resolved"
    one_shot: ClassVar[bool]

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        ...

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]: ...


# Parameters every rule has that the alert state machine applies, not the detector (the catalogue
# gives their defaults and checks them): a detector's reader lets them pass.
STATE_PARAMS = frozenset({"keep_firing_for_s"})


class ParamReader:
    """Reads one detector's parameters, refusing unknown names and out-of-range values by name."""

    def __init__(self, detector: str, params: dict[str, Any], defaults: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(defaults) - STATE_PARAMS)
        if unknown:
            raise ValueError(f"{detector}: unknown parameter {unknown[0]!r}")
        self.detector, self.params = detector, params

    def get(self, key: str) -> Any:
        if key not in self.params:
            raise ValueError(f"{self.detector}: parameter {key!r} is missing")
        return self.params[key]

    def number(self, key: str, lo: float, hi: float, *, integer: bool = False) -> float:
        value = self.get(key)
        # Decimal: numbers read from DynamoDB arrive as Decimal; bool is an int but never a threshold
        is_number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        number = float(value) if is_number else None
        if number is None or not lo <= number <= hi or (integer and not number.is_integer()):
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{self.detector}: {key} must be {kind} in [{lo:g}, {hi:g}], not {value!r}")
        return number

    def severity(self) -> Severity:
        value = self.get("severity")
        if value not in SEVERITIES:
            allowed = ", ".join(SEVERITIES)
            raise ValueError(f"{self.detector}: severity must be one of {allowed}, not {value!r}")
        return cast(Severity, value)


def trailing_run_start(mask: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each row of a (rows, T) bool mask, the time its trailing run of True began; NaN if the
    last bin is False. Vectorised: no loop over bins."""
    rows, t = mask.shape
    if t == 0:
        return np.full(rows, np.nan)
    # index of the last False in each row (-1 if none); the run starts one bin after it
    rev_false = (~mask)[:, ::-1]
    any_false = rev_false.any(axis=1)
    last_false = np.where(any_false, t - 1 - rev_false.argmax(axis=1), -1)
    start_idx = last_false + 1
    out = np.full(rows, np.nan)
    active = mask[:, -1]
    out[active] = times[start_idx[active]]
    return out


def rolling_mean(a: np.ndarray, w: int) -> np.ndarray:
    """(rows × T) mean of the finite values among the trailing `w` bins ending at each bin (fewer at
    the window's start); NaN where there are none. Cumulative sums: one pass whatever `w` is."""
    rows, t = a.shape
    ok = np.isfinite(a)
    zero = np.zeros((rows, 1))
    total = np.concatenate([zero, np.cumsum(np.where(ok, a, 0.0), axis=1)], axis=1)
    count = np.concatenate([zero, np.cumsum(ok, axis=1)], axis=1)
    right = np.arange(1, t + 1)
    left = np.maximum(right - w, 0)
    n = count[:, right] - count[:, left]
    return np.where(n > 0, (total[:, right] - total[:, left]) / np.maximum(n, 1), np.nan)


def downsample(values: np.ndarray, points: int) -> list[float | None]:
    """Mean of `values` in `points` equal slices (NaN-aware) for evidence pictures."""
    if values.ndim != 1 or values.dtype != np.float64:  # the reference path, for any other input
        return _downsample_slices(values, points)
    return downsample_rows(values[None, :], points)[0]


def downsample_rows(values: np.ndarray, points: int) -> list[list[float | None]]:
    """`downsample` of each row of a (rows × T) matrix, in one pass over all rows (float64; any
    other type row by row, as `downsample` takes it).

    Bit for bit what the per-slice means give: the finite values of each slice, in order, are
    summed as one contiguous row (numpy's pairwise sum depends only on their number and order),
    so slices are summed in groups of equal counts."""
    if values.dtype != np.float64:
        return [_downsample_slices(row, points) for row in values]
    rows, n = values.shape
    if n == 0:
        return [[] for _ in range(rows)]
    edges = np.linspace(0, n, min(points, n) + 1).astype(int)
    slices = edges.size - 1
    r, c = np.nonzero(np.isfinite(values))  # row-major: each slice's values stay in order
    seg = r * slices + (np.searchsorted(edges, c, side="right") - 1)
    finite = values[r, c]
    count = np.bincount(seg, minlength=rows * slices)
    per = count[seg]
    means = np.full(rows * slices, np.nan)
    for m in np.unique(per):  # a few distinct slice counts, not slices
        means[count == m] = finite[per == m].reshape(-1, m).sum(axis=1) / m
    # Python's round, as the per-slice mean had: once per distinct mean (by its bits: -0.0 is not 0.0)
    has = count > 0
    bits, inverse = np.unique(means[has].view(np.int64), return_inverse=True)
    near = np.array([round(v, 1) for v in bits.view(np.float64).tolist()], dtype=np.float64)
    rounded = np.full(means.shape, np.nan)
    rounded[has] = near[inverse]
    out: list[list[float | None]] = rounded.reshape(rows, slices).tolist()
    gaps = ~has.reshape(rows, slices)
    for i in np.flatnonzero(gaps.any(axis=1)):  # only the rows with a slice of no data
        out[i] = [None if gap else v for v, gap in zip(out[i], gaps[i].tolist(), strict=True)]
    return out


def _downsample_slices(values: np.ndarray, points: int) -> list[float | None]:
    n = values.shape[-1]
    if n == 0:
        return []
    edges = np.linspace(0, n, min(points, n) + 1).astype(int)
    out: list[float | None] = []
    for a, b in itertools.pairwise(edges):  # a few dozen slices, not samples
        chunk = values[a:b]
        finite = chunk[np.isfinite(chunk)]
        out.append(round(float(finite.mean()), 1) if finite.size else None)
    return out
