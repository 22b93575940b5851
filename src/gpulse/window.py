"""Turn one cluster's decoded chunks into a `detect.base.Window`: (nodes × bins), (GPUs × bins).

Every metric is averaged into bins of `step` seconds. A decoded chunk carries its whole series
matrix and its `codec.Layout`: chunks of one layout are binned 16 at a time as one stacked matrix,
each row placed by a plan kept per (node, layout), with one `np.bincount` per device family; a
chunk without them (built by hand, or cut by `readable`) is binned series by series, to the same
sums. The window ends at the last bin every recently-reporting node has completed, so
the trailing bins are never half-empty just because a batch is still on its way.
The GPU series no rule reads (`UNREAD_GPU`) are not binned: only whether they had a sample.

Nothing a chunk holds can make this raise: a chunk stored before ingest bounded its input (or
written by a buggy shipper) may carry any number the codec can hold. `readable` and `_amount`
read each field the honest way (see there): what is not a plausible reading is "no sample".
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gpulse.codec import Chunk, GpuSeries, MigSeries, count_scale
from gpulse.detect.base import (
    THROTTLE_CAUSE_BITS,
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_POWER_BITS,
    THROTTLE_THERMAL_BITS,
    MigInstance,
    NodeSeen,
    ProcessSeen,
    Window,
    shared,
)
from gpulse.wire.metrics import BY_KIND

STALE_S = 90.0  # a node quieter than this (behind the freshest) no longer holds the window's end back

# What a reading may be. Past these a number is a fault on the wire, not a measurement: it becomes
# "no sample" (NaN), never a clipped value, which would look like a real reading at the limit.
MIN_TIME_S = 1e9  # Batch v1's minimum timestamp (2001): earlier is not a sample time
# Ingest refuses batches more than 5 minutes ahead; an hour leaves room for a fake clock in a
# scenario. One node's timestamp far in the future would otherwise hold the window's end for
# every node of its cluster, and blind every rule there.
MAX_FUTURE_S = 3600.0
# No series gpulse reads comes near 2**62 (4.6e18: bytes, counts, bytes/s); a bin sums up to 3600
# samples per series, which stays finite in float64 only below ~1e304, and a throttle bitmask
# must fit an int64.
MAX_ABS = 2.0**62
MAX_DEVICE_INDEX = 1 << 20  # a GPU index or NUMA node / CPU id is a small integer
MAX_CPUS = 1 << 20  # no host has a million CPUs; 0 is no count (and would divide by zero)
MAX_HOST_BYTES = float(1 << 60)  # 1 EiB of host memory
MAX_GPU_BYTES = float(1 << 50)  # 1 PiB of device memory
MAX_POWER_W = 1e5  # 100 kW for one board
MAX_TEMP_C = 300.0  # a slowdown temperature past this is no sensor's


def _amount(value: object, lo: float, hi: float) -> float:
    """A static field as a float, NaN when it is not a number in [lo, hi] (a bool, a string, an
    integer beyond float64 — OverflowError in numpy — NaN, ±inf, or just absurd)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        x = float(value)
    except OverflowError:
        return math.nan
    return x if lo <= x <= hi else math.nan


def _small_int(value: object, hi: int = MAX_DEVICE_INDEX) -> bool:
    return type(value) is int and 0 <= value < hi


def readable(chunk: Chunk, now: float = math.nan, *, future_s: float = MAX_FUTURE_S) -> Chunk | None:
    """The chunk as analyze may read it, or None when no sample of it is left.

    Dropped, each with what hangs on it: samples whose timestamp is not a sample time (not
    finite, before MIN_TIME_S, more than MAX_FUTURE_S past a finite `now`) with every value at that
    time; GPUs whose index is not a small integer (nothing can place them), MIG instances of a GPU
    the chunk does not carry, processes without a finite first and last seen, events without a
    finite time. A process's absurd `mem_used` or CPU list becomes unknown (None). Series values
    and static fields are read in `build_window` (`_Binned.add`, `_amount`). The usual chunk comes
    back as it is.
    """
    ts = chunk.timestamps
    changes: dict[str, Any] = {}
    # The usual chunk: every timestamp in range (two reductions; a NaN fails both comparisons).
    lo, hi = (float(ts.min()), float(ts.max())) if ts.size else (math.nan, math.nan)
    if not (lo >= MIN_TIME_S and hi < math.inf and (math.isnan(now) or hi <= now + future_s)):
        changes = _cut_samples(chunk, now, future_s)
        if not changes:
            return None
    gpus: list[GpuSeries] = changes.get("gpus", chunk.gpus)
    if not all(_small_int(g.index) for g in gpus):
        changes["gpus"] = gpus = [g for g in gpus if _small_int(g.index)]
    indexes = {g.index for g in gpus}
    mig: list[MigSeries] = changes.get("mig", chunk.mig)
    if not all(m.gpu_index in indexes for m in mig):
        changes["mig"] = [m for m in mig if m.gpu_index in indexes]
    if changes:  # the series were cut: the matrix no longer says which rows are left
        changes.update(values=None, layout=None)
    processes = [_process(p) for p in chunk.processes]
    if any(p is not q for p, q in zip(processes, chunk.processes, strict=True)):
        changes["processes"] = [p for p in processes if p is not None]
    events = [
        e for e in chunk.events if isinstance(e, dict) and not math.isnan(_amount(e.get("ts"), 0, math.inf))
    ]
    if len(events) != len(chunk.events):
        changes["events"] = events
    return replace(chunk, **changes) if changes else chunk


def _cut_samples(chunk: Chunk, now: float, future_s: float) -> dict[str, Any]:
    """The chunk's fields without the samples `readable` drops; empty when none is left."""
    ts = chunk.timestamps
    ok = np.isfinite(ts) & (ts >= MIN_TIME_S)
    if not math.isnan(now):
        ok &= ts <= now + future_s
    if not ok.any():
        return {}
    keep = np.flatnonzero(ok)

    def cut(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: values[keep] for name, values in metrics.items()}

    return {
        "timestamps": ts[keep],
        "host": cut(chunk.host),
        "gpus": [replace(g, metrics=cut(g.metrics)) for g in chunk.gpus],
        "mig": [replace(m, metrics=cut(m.metrics)) for m in chunk.mig],
    }


def _process(p: Any) -> dict[str, Any] | None:
    """The process as it is when every field is readable; a copy with unknown (None) `mem_used`
    or CPU lists where they are not; None when it cannot be placed (pid, GPU, first/last seen)."""
    if type(p) is dict:  # the usual record, as the codec gives it: checked in a few comparisons
        gpu, first, last, mem = p.get("gpu_index"), p.get("first_seen"), p.get("last_seen"), p.get("mem_used")
        if (
            type(gpu) is int
            and 0 <= gpu < MAX_DEVICE_INDEX
            and type(p.get("pid")) is int
            and type(first) is float
            and type(last) is float
            and 0 <= first <= math.inf
            and 0 <= last <= math.inf
            and (mem is None or (type(mem) in (int, float) and 0 <= mem <= MAX_GPU_BYTES))
            and _known_ids(p.get("cpu_affinity"))
            and _known_ids(p.get("cpu_numa_nodes"))
        ):
            return p
    if not isinstance(p, dict) or not _small_int(p.get("gpu_index")) or type(p.get("pid")) is not int:
        return None
    first = _amount(p.get("first_seen"), 0, math.inf)
    last = _amount(p.get("last_seen"), 0, math.inf)
    if math.isnan(first) or math.isnan(last):
        return None
    fixed: dict[str, Any] = {}
    if type(p["first_seen"]) is not float or type(p["last_seen"]) is not float:
        fixed.update(first_seen=first, last_seen=last)
    mem = p.get("mem_used")
    if mem is not None and math.isnan(_amount(mem, 0, MAX_GPU_BYTES)):
        fixed["mem_used"] = None
    for key in ("cpu_affinity", "cpu_numa_nodes"):
        ids = p.get(key)
        if ids is not None and not _cpu_ids(ids):
            fixed[key] = None
    return {**p, **fixed} if fixed else p


def _known_ids(ids: object) -> bool:
    return ids is None or _cpu_ids(ids)


def _cpu_ids(ids: object) -> bool:
    """Whether `ids` is a list or tuple of small integers. The codec gives one shared tuple per
    distinct affinity, so the check runs once per distinct tuple (by identity: hashing a 112-CPU
    tuple again for every process and chunk cost more than the check), not once per process."""
    if isinstance(ids, tuple):
        known = _CHECKED.get(id(ids))
        if known is not None and known[0] is ids:
            return known[1]
        if len(_CHECKED) >= 4096:
            _CHECKED.clear()
        ok = _CHECKED[id(ids)] = (ids, all(_small_int(i) for i in ids))  # holds it: the id stays its
        return ok[1]
    return isinstance(ids, list) and all(_small_int(i) for i in ids)


_CHECKED: dict[int, tuple[tuple[Any, ...], bool]] = {}


def window_end(last_seen: Iterable[float], step: float) -> float:
    """The end of the window: the floor, to a bin edge, of the slowest fresh node's last sample.

    `last_seen` holds one time per node (its latest sample), not one per chunk."""
    seen = np.asarray(list(last_seen), dtype=float)
    if seen.size == 0:
        return 0.0
    fresh = seen[seen >= seen.max() - STALE_S]
    return float(np.floor((fresh.min() + 1e-6) / step) * step)


# Every sample is binned as a whole count of its metric's resolution (the step the codec stores it
# at), and a bin's sum of counts is exact in float64 below 2**53: so a bin's sum does not depend on
# the order its samples came in, and a window kept incrementally between ticks equals one rebuilt
# from the same chunks, bit for bit. A reading past MAX_COUNT counts is no sample (2**40 counts of
# the coarsest step is far past any real reading, and 2**13 such samples in one bin stay exact).
MAX_COUNT = float(1 << 40)
_THROTTLE_ROWS = ("throttle_thermal", "throttle_power")
# GPU series no rule, recovery check or chart reads. They are not binned, nor in the window: only
# whether any of them had a sample in the window's last bin (staleness asks whether a node reported
# anything then), counted per GPU and bin in one row (`WindowState.reported`) and handed on with
# the window under UNREAD_REPORTED (`detect.base.shared`). A rule that comes to read one of them
# takes it off this list (tests/unit/test_window.py checks no rule names one).
UNREAD_GPU = frozenset({"util_mem", "power_w", "ecc_sbe_volatile", "pcie_tx_bps", "pcie_rx_bps"})
UNREAD_REPORTED = "window.unread_reported"  # (nodes,) bool: an UNREAD_GPU sample in the last bin
# Bin sums and sample counts start in the narrowest integer type that usually holds them (a 5 s
# bin of 1 Hz samples: 5 samples; 64 GB/s of PCIe is 6.25e7 counts of 1 KiB/s), and a family
# widens when a cell could overflow: int64 holds MAX_COUNT × 2**13 samples exactly.
_SUM_TYPES: tuple[type[np.signedinteger[Any]], ...] = (np.int32, np.int64)
_N_TYPES: tuple[type[np.unsignedinteger[Any]], ...] = (np.uint8, np.uint16, np.uint32, np.uint64)


@functools.lru_cache(maxsize=256)
def _count_scale(kind: str, name: str) -> float:
    """Counts per unit for a metric: its catalogue resolution; derived 0/1 series count whole units."""
    metric = BY_KIND.get(kind, {}).get(name)
    return count_scale(metric.resolution) if metric is not None else 1.0


class _Family:
    """Sums of counts and numbers of samples per (metric, row, bin), for one kind of device, in
    the narrowest integer types that hold them (`_SUM_TYPES`, `_N_TYPES`; widened when needed).

    Columns form a ring over absolute bin numbers (time // step): bin b lives in column b % cap
    while base <= b < base + cap."""

    def __init__(self, kind: str, cap: int) -> None:
        self.kind = kind
        self.metric: dict[str, int] = {}
        self.scales: list[float] = []
        self.base = 0
        self.cap = cap
        self.rows = 0  # rows allocated (the stride of a metric)
        self.used = 0  # rows named so far: the rest is zero pages the process never touched
        # The narrowest exact types (see `_widen`): 5 bytes a cell, not float64's and int32's 12
        self.sums = np.zeros((0, 0, cap), dtype=_SUM_TYPES[0])
        self.n = np.zeros((0, 0, cap), dtype=_N_TYPES[0])

    def metric_index(self, name: str) -> int:
        m = self.metric.get(name)
        if m is None:
            m = self.metric[name] = len(self.metric)
            self.scales.append(_count_scale(self.kind, name))
        return m

    def ensure(self, rows: int, hi_bin: int) -> None:
        """Room for `rows` rows, every metric named so far, and bins up to `hi_bin`."""
        metrics = len(self.metric)
        cap = max(self.cap, hi_bin - self.base + 1)
        used, self.used = self.used, max(self.used, rows)
        if metrics <= self.sums.shape[0] and rows <= self.sums.shape[1] and cap == self.cap:
            return
        # Four times the rows asked for: np.zeros maps zero pages lazily, so rows not used yet cost
        # no memory, only address space. A cluster's first batch names most of its devices, so its
        # state is then never copied again (a copy holds the old and the new state at once: at
        # 10,000 GPUs that was the peak of a rebuild).
        new_rows = self.sums.shape[1] if rows <= self.sums.shape[1] else max(4 * rows, 64)
        new_cap = cap if cap == self.cap else max(cap, self.cap * 3 // 2)
        sums = np.zeros((metrics, new_rows, new_cap), dtype=self.sums.dtype)
        n = np.zeros((metrics, new_rows, new_cap), dtype=self.n.dtype)
        if self.sums.size:
            old = (self.base + np.arange(self.cap)) % self.cap  # column of each bin base..base+cap-1
            new = (self.base + np.arange(self.cap)) % new_cap
            m0 = self.sums.shape[0]
            sums[:m0, :used, new] = self.sums[:, :used, old]
            n[:m0, :used, new] = self.n[:, :used, old]
        self.sums, self.n, self.rows, self.cap = sums, n, new_rows, new_cap

    def add(
        self, m: np.ndarray, rows: np.ndarray, bins: np.ndarray, values: np.ndarray, keep: np.ndarray
    ) -> None:
        """Add series i (metric m[i], row rows[i]): values[i, k] in absolute bin bins[i, k] where keep."""
        if not m.size or not values.size:
            return
        scale = np.asarray(self.scales)[m][:, None]
        with np.errstate(invalid="ignore", over="ignore"):
            counts = np.rint(values * scale)
        ok = (np.abs(counts) <= MAX_COUNT) & keep  # NaN and ±inf compare false: no sample
        # Sum within each series first (its few bins), then add each (series, bin) sum to the state.
        first = bins.min(axis=1)
        width = int((bins.max(axis=1) - first).max()) + 1
        local = (np.arange(m.size) * width)[:, None] + (bins - first[:, None])
        size = m.size * width
        sums = np.bincount(local[ok], weights=counts[ok], minlength=size)
        n = np.bincount(local[ok], minlength=size)
        hit = np.flatnonzero(n)
        series, col = np.divmod(hit, width)
        flat = (m[series] * self.rows + rows[series]) * self.cap + (first[series] + col) % self.cap
        add_sums, add_n = sums[hit], n[hit]
        if add_n.size:
            self._widen(m * self.rows + rows, flat, add_sums, add_n)
        # several chunks of one device may share a bin: add.at adds repeats (whole numbers: exact)
        np.add.at(self.sums.reshape(-1), flat, add_sums.astype(self.sums.dtype))
        np.add.at(self.n.reshape(-1), flat, add_n.astype(self.n.dtype))

    def _widen(self, series: np.ndarray, flat: np.ndarray, sums: np.ndarray, n: np.ndarray) -> None:
        """Widen `sums` and `n` to the next type that holds every cell `add` is about to reach.

        A cell ends at most at |its value now| + k × |the largest addition|, k the most series one
        call adds to one (metric, row) (chunks of one device sharing a bin): a bound from a gather
        and three reductions, no sort of the cells. Whole counts in an integer type are exact, and
        their mean (float64 sum ÷ float64 n) is the same float whatever the type held them."""
        k = int(np.unique(series, return_counts=True)[1].max()) if series.size > 1 else 1
        for attr, ladder, add in (("sums", _SUM_TYPES, sums), ("n", _N_TYPES, n)):
            held: np.ndarray = getattr(self, attr)
            bound = float(np.abs(held.reshape(-1)[flat]).max()) + k * float(np.abs(add).max())
            if bound <= np.iinfo(held.dtype).max:
                continue
            wide = next((t for t in ladder if np.iinfo(t).max >= bound), ladder[-1])
            setattr(self, attr, held.astype(wide))

    def drop_before(self, bin_: int) -> None:
        """Forget bins before `bin_` (their columns are reused for later bins)."""
        if bin_ <= self.base:
            return
        gone = np.arange(self.base, min(bin_, self.base + self.cap)) % self.cap
        self.sums[:, : self.used, gone] = 0.0  # rows past `used` are zero and never touched
        self.n[:, : self.used, gone] = 0
        self.base = bin_

    def matrices(self, names: set[str], perm: np.ndarray, first_bin: int, bins: int) -> dict[str, np.ndarray]:
        """metric -> (len(perm) × bins) mean per bin (NaN where no sample), for each of `names`."""
        absolute = first_bin + np.arange(bins)
        held = (absolute >= self.base) & (absolute < self.base + self.cap)
        cols = absolute[held] % self.cap
        out = {}
        for name in sorted(names):  # by name: the same whatever order the chunks came in
            m = self.metric[name]
            if not (perm.size and cols.size):
                out[name] = np.full((perm.size, bins), np.nan)
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                if cols.size == bins:  # the usual: all held, in one slice of the ring or two
                    mean = np.empty((perm.size, bins))
                    c0 = int(cols[0])
                    split = min(self.cap - c0, bins)  # columns before the ring wraps
                    for out_cols, ring in (
                        (slice(0, split), slice(c0, c0 + split)),
                        (slice(split, bins), slice(0, bins - split)),
                    ):
                        if out_cols.stop > out_cols.start:
                            np.divide(
                                self.sums[m, :, ring][perm], self.n[m, :, ring][perm], out=mean[:, out_cols]
                            )
                    mean /= self.scales[m]
                else:
                    at = np.ix_(perm, cols)
                    mean = np.full((perm.size, bins), np.nan)
                    mean[:, held] = self.sums[m][at] / self.n[m][at] / self.scales[m]
            out[name] = mean
        return out


_BATCH = 512  # chunks binned together: their series are stacked into one matrix per length
_GROUP = 16  # chunks of one layout binned in one add: its temporaries stay in the CPU cache


class _Series:
    """Series gathered from a batch of chunks: metric, row, chunk (position in the batch), values."""

    def __init__(self) -> None:
        self.m: list[int] = []
        self.r: list[int] = []
        self.j: list[int] = []
        self.v: list[np.ndarray] = []

    def put(self, m: int, r: int, j: int, v: np.ndarray) -> None:
        self.m.append(m)
        self.r.append(r)
        self.j.append(j)
        self.v.append(v)

    def by_length(self) -> dict[int, list[int]]:
        """Series indexes by number of samples (a chunk's series all have its length)."""
        out: dict[int, list[int]] = defaultdict(list)
        for i, v in enumerate(self.v):
            out[v.size].append(i)
        return out


@dataclass(frozen=True, slots=True)
class _Held:
    """What the window keeps of one chunk besides its binned samples."""

    serial: int
    order: tuple[float, float, int]  # (first sample, last sample, crc32 of the key): a total order
    node: str
    t_first: float
    t_last: float
    first_bin: int
    last_bin: int
    interval: float | None  # median sample interval (`bin_step`)
    static: tuple[Any, ...]  # node group, host and device statics, MIG instances (see `_static`)
    metrics: tuple[frozenset[str], frozenset[str], frozenset[str]]  # host, GPU, MIG series names
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where the rows of one node's chunks of one layout go: (matrix row, metric, device row) per
    family, and what `_Held` keeps of the layout."""

    host: tuple[np.ndarray, np.ndarray, np.ndarray]
    gpu: tuple[np.ndarray, np.ndarray, np.ndarray]
    throttle: tuple[np.ndarray, np.ndarray, np.ndarray]  # throttle_reasons rows (two GPU rows each)
    mig: tuple[np.ndarray, np.ndarray, np.ndarray]
    unread: tuple[np.ndarray, np.ndarray, np.ndarray]  # UNREAD_GPU: matrix row, counts per unit, GPU row
    names: tuple[frozenset[str], frozenset[str], frozenset[str]]
    gpu_keys: tuple[int, ...]
    mig_keys: tuple[tuple[int, str], ...]


def _static(c: Chunk) -> tuple[Any, ...]:
    gpus = tuple(
        (g.index, g.mem_total, g.numa_node, g.power_limit_w, g.temp_slowdown_c, bool(g.mig_mode))
        for g in c.gpus
    )
    migs = tuple((m.gpu_index, m.uuid, m.profile, m.gi_id, m.ci_id, m.mem_total) for m in c.mig)
    return (c.node_group, c.host_static.cpu_count, c.host_static.mem_total, gpus, migs)


_PROC_FIELDS = ("serial", "node", "gpu", "pid", "first", "last", "mem", "attrs", "t_first", "t_last", "crc")


class WindowState:
    """One cluster's chunks binned into (metric, row, bin) sums, kept between analyze ticks.

    `add` bins readable chunks (any order, late or not); `drop_before` forgets chunks whose last
    sample is before an instant (a bin edge) and the bins before it; `window` is the `Window` over
    any span of what is held. Adding chunks one tick at a time gives exactly the window that adding
    them all at once gives (sums of whole counts; statics, processes and layouts taken in the
    chunks' time order, not their arrival order)."""

    def __init__(
        self, step: float, *, capacity_s: float = 1200.0, floor: float = -math.inf, ceiling: float = math.inf
    ) -> None:
        self.step = step
        self.floor_bin: int | None = None if floor == -math.inf else math.floor(floor / step + 1e-9)
        # samples at or past `ceiling` are left out (a one-off window has no bin for them)
        self.ceiling_bin: int | None = None if ceiling == math.inf else math.floor(ceiling / step + 1e-9)
        cap = max(math.ceil(capacity_s / step), 8)
        self.host, self.gpu, self.mig = _Family("host", cap), _Family("gpu", cap), _Family("mig", cap)
        # per GPU row and bin: samples of its UNREAD_GPU series (their sums are zero: never read)
        self.reported = _Family("reported", cap)
        self.reported.metric_index("any")
        self.node_row: dict[str, int] = {}
        self.gpu_row: dict[tuple[str, int], int] = {}
        self.mig_row: dict[tuple[str, int, str], int] = {}
        self.held: dict[int, _Held] = {}
        self.gpu_keys_of: dict[int, tuple[int, ...]] = {}
        self.mig_keys_of: dict[int, tuple[tuple[int, str], ...]] = {}
        self._serial = 0
        self._attrs: dict[tuple[Any, ...], int] = {}
        self._attrs_list: list[tuple[Any, ...]] = []
        self._uuid: dict[str, int] = {"": 0}
        self._procs = {
            k: np.zeros(
                0, dtype=np.float64 if k in ("first", "last", "mem", "t_first", "t_last") else np.int64
            )
            for k in _PROC_FIELDS
        }
        self._mem_int = np.zeros(0, dtype=bool)
        # process records of the chunks added since `_procs` was last read: joined to it once
        # then, not at every batch (a rebuild adds a window's worth, a batch at a time)
        self._new_procs: list[list[np.ndarray]] = []
        self._interned: dict[Any, Any] = {}
        self._plans: dict[tuple[str, Any], _Plan] = {}

    def __len__(self) -> int:
        return len(self.held)

    # -- adding -----------------------------------------------------------------------------------

    def add(self, chunks: list[tuple[Chunk, str]]) -> None:
        """Bin chunks that `readable` returned, each with a key naming it (its place in the store)."""
        for at in range(0, len(chunks), _BATCH):  # bounded: a batch's series are stacked at once
            self._add(chunks[at : at + _BATCH])

    def _add(self, chunks: list[tuple[Chunk, str]]) -> None:
        if not chunks:
            return
        # Chunks with their decoded matrix (`Chunk.values`) are binned a layout at a time: one
        # stacked matrix per (layout, length), its rows placed by a plan kept per (node, layout).
        # The others (built by hand, or cut by `readable`) go series by series.
        plans: list[_Plan | None] = []
        groups: dict[tuple[Any, int], list[int]] = defaultdict(list)
        slow: list[int] = []
        for j, (c, _) in enumerate(chunks):
            plan = None
            if c.values is not None and c.layout is not None:
                plan = self._plans.get((c.node, c.layout))
                if plan is None:
                    plan = self._plans[(c.node, c.layout)] = self._plan(c)
                groups[(c.layout, c.timestamps.size)].append(j)
            else:
                self._register(c)
                slow.append(j)
            plans.append(plan)
        # Bins and bounds of each chunk, a group's chunks at once.
        bins_of: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(chunks)
        bounds: list[tuple[float, float, int, int, float | None]] = [(0.0, 0.0, 0, 0, None)] * len(chunks)
        stacked: list[tuple[list[int], np.ndarray]] = []
        for js in [*groups.values(), *([j] for j in slow)]:
            ts = np.stack([chunks[j][0].timestamps for j in js])
            bins = np.floor(ts / self.step).astype(np.int64)
            stacked.append((js, bins))
            for j, b, *rest in zip(
                js,
                bins,
                ts.min(axis=1).tolist(),
                ts.max(axis=1).tolist(),
                bins.min(axis=1).tolist(),
                bins.max(axis=1).tolist(),
                median_steps(ts),
                strict=True,
            ):
                bins_of[j], bounds[j] = b, tuple(rest)
        hi = max(b[3] for b in bounds)
        if self.ceiling_bin is not None:
            hi = min(hi, self.ceiling_bin - 1)
        if self.floor_bin is None:
            self.floor_bin = min(b[2] for b in bounds)
        for fam in (self.host, self.gpu, self.mig, self.reported):
            if not fam.sums.size:
                fam.base = self.floor_bin
        self.host.ensure(len(self.node_row), hi)
        self.gpu.ensure(len(self.gpu_row), hi)
        self.mig.ensure(len(self.mig_row), hi)
        self.reported.ensure(len(self.gpu_row), hi)
        for js, bins in stacked[: len(groups)]:
            for at in range(0, len(js), _GROUP):  # a few MB of temporaries at a time: kept in cache
                part = js[at : at + _GROUP]
                self._add_group(
                    [chunks[j][0] for j in part],
                    [p for j in part if (p := plans[j]) is not None],
                    bins[at : at + _GROUP],
                )
        if slow:
            self._add_series([chunks[j][0] for j in slow], [bins_of[j] for j in slow])
        rows: list[list[Any]] = []
        for j, (c, key) in enumerate(chunks):
            rows.extend(self._hold(c, key, bounds[j], plans[j]))
        if rows:
            cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True))
            arrays: list[np.ndarray] = [
                np.asarray(col, dtype=self._procs[f].dtype)
                for f, col in zip(_PROC_FIELDS, cols, strict=False)
            ]
            self._new_procs.append([*arrays, np.asarray(cols[-1], dtype=bool)])

    def _join_procs(self) -> None:
        """Join the process records added since the last read to `_procs`."""
        if not self._new_procs:
            return
        parts, self._new_procs = self._new_procs, []
        for k, field_name in enumerate(_PROC_FIELDS):
            self._procs[field_name] = np.concatenate([self._procs[field_name], *(c[k] for c in parts)])
        self._mem_int = np.concatenate([self._mem_int, *(c[-1] for c in parts)])

    def _register(self, c: Chunk) -> None:
        """Rows for the chunk's node and devices."""
        self.node_row.setdefault(c.node, len(self.node_row))
        for g in c.gpus:
            self.gpu_row.setdefault((c.node, g.index), len(self.gpu_row))
        for mi in c.mig:
            self.mig_row.setdefault((c.node, mi.gpu_index, mi.uuid), len(self.mig_row))
            self._uuid.setdefault(mi.uuid, len(self._uuid))

    def _plan(self, c: Chunk) -> _Plan:
        """Where each row of a chunk's matrix goes, for every chunk of its node and layout."""
        self._register(c)
        r = self.node_row[c.node]
        host = [(k, self.host.metric_index(name), r) for k, name in enumerate(c.host, start=1)]
        gpu, throttle, unread = [], [], []
        k = 1 + len(c.host)
        for g in c.gpus:
            gr = self.gpu_row[(c.node, g.index)]
            for name in g.metrics:
                if name == "throttle_reasons":
                    throttle.append((k, 0, gr))
                elif name in UNREAD_GPU:
                    unread.append((k, _count_scale("gpu", name), gr))
                else:
                    gpu.append((k, self.gpu.metric_index(name), gr))
                k += 1
        mig = []
        for mi in c.mig:
            mr = self.mig_row[(c.node, mi.gpu_index, mi.uuid)]
            for name in mi.metrics:
                mig.append((k, self.mig.metric_index(name), mr))
                k += 1
        if throttle:
            self.gpu.metric_index(_THROTTLE_ROWS[0])
            self.gpu.metric_index(_THROTTLE_ROWS[1])

        def cols(rows: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            a = np.array(rows, dtype=np.int64).reshape(-1, 3)
            return a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy()

        return _Plan(
            host=cols(host),
            gpu=cols(gpu),
            throttle=cols(throttle),
            mig=cols(mig),
            unread=(
                np.array([u[0] for u in unread], dtype=np.int64),
                np.array([u[1] for u in unread], dtype=np.float64),
                np.array([u[2] for u in unread], dtype=np.int64),
            ),
            names=self._names(c),
            gpu_keys=tuple(g.index for g in c.gpus),
            mig_keys=tuple((mi.gpu_index, mi.uuid) for mi in c.mig),
        )

    def _names(self, c: Chunk) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """The host, GPU and MIG series a chunk holds (throttle reasons as the two rows they bin to)."""
        gpu_names: set[str] = set()
        for g in c.gpus:
            gpu_names.update(g.metrics)
        gpu_names -= UNREAD_GPU
        if "throttle_reasons" in gpu_names:
            gpu_names.discard("throttle_reasons")
            gpu_names.update(_THROTTLE_ROWS)
        return (
            self._intern(frozenset(c.host)),
            self._intern(frozenset(gpu_names)),
            self._intern(frozenset(n for mi in c.mig for n in mi.metrics)),
        )

    def _keep(self, bins: np.ndarray) -> np.ndarray:
        keep = bins >= self.floor_bin
        if self.ceiling_bin is not None:
            keep &= bins < self.ceiling_bin
        return keep

    def _add_group(self, chunks: list[Chunk], plans: list[_Plan], bins: np.ndarray) -> None:
        """Bin chunks of one layout and length (`bins`: chunks × samples): each family's series of
        all of them in one add."""
        values = np.stack([c.values for c in chunks])  # type: ignore[misc]  # (chunks, rows, samples)
        n = values.shape[2]
        keep = self._keep(bins)
        first = plans[0]
        for fam, part in ((self.host, "host"), (self.gpu, "gpu"), (self.mig, "mig")):
            sel, m, _ = getattr(first, part)
            if not sel.size:
                continue
            fam.add(
                np.tile(m, len(chunks)),
                np.concatenate([getattr(p, part)[2] for p in plans]),
                np.repeat(bins, sel.size, axis=0),
                values[:, sel, :].reshape(-1, n),
                np.repeat(keep, sel.size, axis=0),
            )
        sel, scale, _ = first.unread
        if sel.size:
            rows = np.concatenate([p.unread[2] for p in plans])
            self.reported.add(
                np.zeros(rows.size, dtype=np.int64),
                rows,
                np.repeat(bins, sel.size, axis=0),
                _sampled(values[:, sel, :].reshape(-1, n), np.tile(scale, len(chunks))[:, None]),
                np.repeat(keep, sel.size, axis=0),
            )
        sel = first.throttle[0]
        if sel.size:
            hot, capped = _throttle(values[:, sel, :].reshape(-1, n))
            rows = np.concatenate([p.throttle[2] for p in plans])
            b, k = np.repeat(bins, sel.size, axis=0), np.repeat(keep, sel.size, axis=0)
            for name, v in zip(_THROTTLE_ROWS, (hot, capped), strict=True):
                self.gpu.add(np.full(rows.size, self.gpu.metric_index(name), dtype=np.int64), rows, b, v, k)

    def _add_series(self, chunks: list[Chunk], bins_of: list[np.ndarray]) -> None:
        """Bin chunks series by series (those without a decoded matrix)."""
        host, gpu, mig, unread = _Series(), _Series(), _Series(), _Series()
        reasons = _Series()
        for j, c in enumerate(chunks):
            r = self.node_row[c.node]
            for name, values in c.host.items():
                host.put(self.host.metric_index(name), r, j, values)
            for g in c.gpus:
                gr = self.gpu_row[(c.node, g.index)]
                for name, values in g.metrics.items():
                    if name == "throttle_reasons":
                        reasons.put(0, gr, j, values)
                    elif name in UNREAD_GPU:
                        unread.put(0, gr, j, _sampled(values, _count_scale("gpu", name)))
                    else:
                        gpu.put(self.gpu.metric_index(name), gr, j, values)
            for mi in c.mig:
                mr = self.mig_row[(c.node, mi.gpu_index, mi.uuid)]
                for name, values in mi.metrics.items():
                    mig.put(self.mig.metric_index(name), mr, j, values)
        if reasons.m:
            thermal, power = (
                self.gpu.metric_index(_THROTTLE_ROWS[0]),
                self.gpu.metric_index(_THROTTLE_ROWS[1]),
            )
            for sel in reasons.by_length().values():
                hot, capped = _throttle(np.stack([reasons.v[i] for i in sel]))
                for k, i in enumerate(sel):
                    gpu.put(thermal, reasons.r[i], reasons.j[i], hot[k])
                    gpu.put(power, reasons.r[i], reasons.j[i], capped[k])
        # metric_index may have named new metrics: room for them
        self.host.ensure(len(self.node_row), self.host.base)
        self.gpu.ensure(len(self.gpu_row), self.gpu.base)
        self.mig.ensure(len(self.mig_row), self.mig.base)
        self.reported.ensure(len(self.gpu_row), self.reported.base)
        for fam, series in ((self.host, host), (self.gpu, gpu), (self.mig, mig), (self.reported, unread)):
            for sel in series.by_length().values():
                at = sorted({series.j[i] for i in sel})
                place = {j: k for k, j in enumerate(at)}
                bins = np.stack([bins_of[j] for j in at])[[place[series.j[i]] for i in sel]]
                fam.add(
                    np.array([series.m[i] for i in sel], dtype=np.int64),
                    np.array([series.r[i] for i in sel], dtype=np.int64),
                    bins,
                    np.stack([series.v[i] for i in sel]),
                    self._keep(bins),
                )

    def _intern(self, value: Any) -> Any:
        return self._interned.setdefault(value, value)

    def _hold(
        self, c: Chunk, key: str, bounds: tuple[float, float, int, int, float | None], plan: _Plan | None
    ) -> list[list[Any]]:
        serial = self._serial
        self._serial += 1
        crc = zlib.crc32(key.encode("utf-8", "surrogatepass"))
        t_first, t_last, first_bin, last_bin, interval = bounds
        held = _Held(
            serial=serial,
            order=(t_first, t_last, crc),
            node=c.node,
            t_first=t_first,
            t_last=t_last,
            first_bin=first_bin,
            last_bin=last_bin,
            interval=interval,
            static=self._intern(_static(c)),
            metrics=self._names(c) if plan is None else plan.names,
            events=tuple({**e, "node": c.node} for e in c.events),
        )
        self.held[serial] = held
        self.gpu_keys_of[serial] = tuple(g.index for g in c.gpus) if plan is None else plan.gpu_keys
        self.mig_keys_of[serial] = (
            tuple((mi.gpu_index, mi.uuid) for mi in c.mig) if plan is None else plan.mig_keys
        )
        node = self.node_row[c.node]
        rows = []
        for p in c.processes:
            attrs = (
                p.get("user"),
                p.get("container"),
                p.get("name"),
                _ids(p.get("cpu_affinity")),
                _ids(p.get("cpu_numa_nodes")),
                p.get("mig_uuid"),
                p.get("job") if isinstance(p.get("job"), str) else None,
            )
            a = self._attrs.get(attrs)
            if a is None:
                a = self._attrs[attrs] = len(self._attrs_list)
                self._attrs_list.append(attrs)
            mem = p.get("mem_used")
            rows.append(
                [
                    serial,
                    node,
                    p["gpu_index"],
                    int(p["pid"]),
                    p["first_seen"],
                    p["last_seen"],
                    math.nan if mem is None else float(mem),
                    a,
                    t_first,
                    t_last,
                    crc,
                    type(mem) is int,
                ]
            )
        return rows

    # -- forgetting -------------------------------------------------------------------------------

    def drop_before(self, edge: float) -> None:
        """Forget the chunks whose last sample is before `edge` (a bin edge) and every bin before it."""
        bin_ = math.floor(edge / self.step + 1e-9)
        gone = [s for s, h in self.held.items() if h.t_last < edge]
        for s in gone:
            del self.held[s], self.gpu_keys_of[s], self.mig_keys_of[s]
        self._join_procs()
        if gone and self._procs["serial"].size:
            alive = np.isin(
                self._procs["serial"], np.fromiter(self.held, dtype=np.int64, count=len(self.held))
            )
            self._procs = {k: v[alive] for k, v in self._procs.items()}
            self._mem_int = self._mem_int[alive]
        if self.floor_bin is None or bin_ > self.floor_bin:
            self.floor_bin = bin_
            for fam in (self.host, self.gpu, self.mig, self.reported):
                fam.drop_before(bin_)

    # -- reading ----------------------------------------------------------------------------------

    def chunks(self) -> list[_Held]:
        """What is held of each chunk, in the chunks' time order."""
        return sorted(self.held.values(), key=lambda h: h.order)

    def intervals(self, since: float = -math.inf) -> list[float]:
        """The sample interval of each chunk whose last sample is at or after `since`."""
        return [h.interval for h in self.held.values() if h.interval is not None and h.t_last >= since]

    def last_seen(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for h in self.held.values():
            if h.t_last > out.get(h.node, -math.inf):
                out[h.node] = h.t_last
        return out

    def window(
        self,
        cluster: str,
        *,
        end: float,
        span_s: float,
        node_groups: dict[str, str | None] | None = None,
        registry: list[NodeSeen] | None = None,
        now: float = math.nan,
    ) -> Window:
        """The window (end - span_s, end] over what is held (`end` a bin edge)."""
        step = self.step
        bins = max(round(span_s / step), 1)
        start = end - bins * step
        first_bin = round(start / step)
        held = self.chunks()
        nodes = sorted({h.node for h in held})
        node_out = {n: i for i, n in enumerate(nodes)}
        # one (node, devices) pair per node and layout, not one key per device and chunk
        gpu_of = {(h.node, self.gpu_keys_of[h.serial]) for h in held}
        gpu_keys = sorted({(node, i) for node, keys in gpu_of for i in keys})
        gpu_out = {k: i for i, k in enumerate(gpu_keys)}
        mig_of = {(h.node, self.mig_keys_of[h.serial]) for h in held}
        mig_keys = sorted({(node, gi, u) for node, keys in mig_of for gi, u in keys})
        mig_out = {k: i for i, k in enumerate(mig_keys)}
        n_gpu, n_mig = len(gpu_keys), len(mig_keys)

        groups: dict[str, str | None] = dict.fromkeys(nodes)
        groups.update(node_groups or {})
        last_seen = np.full(len(nodes), np.nan)
        cpu_count = np.full(len(nodes), np.nan)
        host_mem_total = np.full(len(nodes), np.nan)
        gpu_static = {
            k: np.full(n_gpu, np.nan) for k in ("mem_total", "numa", "power_limit", "temp_slowdown")
        }
        mig_info: dict[int, MigInstance] = {}
        layouts: dict[int, list[tuple[float, frozenset[tuple[str, int, int]]]]] = defaultdict(list)
        present: set[tuple[frozenset[str], frozenset[str], frozenset[str]]] = set()
        events: list[tuple[Any, str, tuple[float, float, int], int, dict[str, Any]]] = []
        applied: dict[str, tuple[Any, ...]] = {}
        last_bin = first_bin + bins - 1
        seen: dict[str, float] = {}
        for h in held:  # in time order: a later chunk's word on a static field wins
            r = node_out[h.node]
            old = seen.get(h.node)
            if old is None or old != old or h.t_last > old:  # as np.fmax: a NaN never wins
                seen[h.node] = h.t_last
            if h.first_bin <= last_bin and h.last_bin >= first_bin:
                present.add(h.metrics)
            for i, e in enumerate(h.events):
                events.append((e["ts"], h.node, h.order, i, e))
            if applied.get(h.node) is h.static:
                continue  # the same statics as the node's previous chunk: nothing changes
            applied[h.node] = h.static
            group, cpus, mem_total, gpus, migs = h.static
            if group:
                groups[h.node] = group
            cpu_count[r] = _amount(cpus, 1, MAX_CPUS)
            host_mem_total[r] = _amount(mem_total, 1, MAX_HOST_BYTES)
            for index, g_mem, g_numa, g_power, g_temp, _ in gpus:
                gr = gpu_out[(h.node, index)]
                for key, value, lo, hi in (
                    ("mem_total", g_mem, 1, MAX_GPU_BYTES),
                    ("numa", g_numa, 0, MAX_DEVICE_INDEX),
                    ("power_limit", g_power, math.ulp(0), MAX_POWER_W),
                    ("temp_slowdown", g_temp, math.ulp(0), MAX_TEMP_C),
                ):
                    if value is not None:
                        gpu_static[key][gr] = _amount(value, lo, hi)
            layout_of: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
            for gpu_index, uuid, profile, gi, ci, m_mem in migs:
                gr = gpu_out[(h.node, gpu_index)]
                mig_info[mig_out[(h.node, gpu_index, uuid)]] = MigInstance(
                    gr, uuid, profile, gi, ci, _amount(m_mem, 0, MAX_GPU_BYTES)
                )
                layout_of[gr].add((profile or "", gi, ci))
            for index, *_, mig_mode in gpus:  # a GPU in MIG mode with no instance has an empty layout
                gr = gpu_out[(h.node, index)]
                if mig_mode or gr in layout_of:
                    layout = frozenset(layout_of.get(gr, set()))
                    if not layouts[gr] or layouts[gr][-1][1] != layout:
                        layouts[gr].append((h.t_first, layout))

        for node, t in seen.items():
            last_seen[node_out[node]] = t
        names = (
            [set().union(*(p[i] for p in present)) for i in range(3)] if present else [set(), set(), set()]
        )
        node_perm = np.array([self.node_row[n] for n in nodes], dtype=np.int64)
        gpu_perm = np.array([self.gpu_row[k] for k in gpu_keys], dtype=np.int64)
        mig_perm = np.array([self.mig_row[k] for k in mig_keys], dtype=np.int64)
        has_process, mig_has_process, gpu_processes = self._processes(nodes, gpu_keys, mig_keys, start, bins)
        gpu_node = np.array([node_out[n] for n, _ in gpu_keys], dtype=np.int64)
        unread = np.zeros(len(nodes), dtype=bool)
        rep = self.reported
        if gpu_perm.size and rep.base <= last_bin < rep.base + rep.cap and rep.n.shape[1]:
            np.logical_or.at(unread, gpu_node, rep.n[0, gpu_perm, last_bin % rep.cap] > 0)
        window = Window(
            cluster=cluster,
            start=start,
            step=step,
            end=start + bins * step,
            nodes=nodes,
            node_groups=[groups[n] for n in nodes],
            node_last_seen=last_seen,
            host=self.host.matrices(names[0], node_perm, first_bin, bins),
            cpu_count=cpu_count,
            host_mem_total=host_mem_total,
            gpu_node=gpu_node,
            gpu_index=np.array([i for _, i in gpu_keys], dtype=np.int64),
            gpu=self.gpu.matrices(names[1], gpu_perm, first_bin, bins),
            gpu_mem_total=gpu_static["mem_total"],
            gpu_has_process=has_process,
            gpu_processes=gpu_processes,
            gpu_numa=gpu_static["numa"],
            gpu_power_limit=gpu_static["power_limit"],
            gpu_temp_slowdown=gpu_static["temp_slowdown"],
            mig=[mig_info[i] for i in range(n_mig)],
            mig_metrics=self.mig.matrices(names[2], mig_perm, first_bin, bins),
            mig_has_process=mig_has_process,
            mig_layouts=dict(layouts),
            events=[e for *_, e in sorted(events, key=lambda x: x[:4])],
            registry=sorted(registry or [], key=lambda n: n.node),
            now=now,
        )
        shared(window, UNREAD_REPORTED, lambda: unread)
        return window

    def _processes(
        self,
        nodes: list[str],
        gpu_keys: list[tuple[str, int]],
        mig_keys: list[tuple[str, int, str]],
        start: float,
        bins: int,
    ) -> tuple[np.ndarray, np.ndarray, list[list[ProcessSeen]]]:
        """Bins with a process per GPU and MIG instance, and each GPU's processes (one per pid:
        seen from its first to its last record, the rest as its latest chunk says)."""
        n_gpu, n_mig = len(gpu_keys), len(mig_keys)
        has_process = np.zeros((n_gpu, bins), dtype=bool)
        mig_has_process = np.zeros((n_mig, bins), dtype=bool)
        gpu_processes: list[list[ProcessSeen]] = [[] for _ in gpu_keys]
        self._join_procs()
        p = self._procs
        if not p["serial"].size or not n_gpu:
            return has_process, mig_has_process, gpu_processes
        # (node row, GPU index) -> output row, by sorted codes
        codes = np.array([self.node_row[n] * _GPU_SPAN + i for n, i in gpu_keys], dtype=np.int64)
        order = np.argsort(codes)
        rec = p["node"] * _GPU_SPAN + p["gpu"]
        at = np.searchsorted(codes[order], rec).clip(0, n_gpu - 1)
        found = codes[order][at] == rec
        row = np.where(found, order[at], -1)
        sel = np.flatnonzero(found)
        if not sel.size:
            return has_process, mig_has_process, gpu_processes
        row = row[sel]
        first, last = p["first"][sel], p["last"][sel]
        with np.errstate(invalid="ignore", over="ignore"):
            lo = np.maximum(np.floor((first - start) / self.step), 0)
            hi = np.minimum(np.floor((last - start) / self.step), bins - 1)
        on = lo <= hi
        _mark(has_process, row[on], lo[on].astype(np.int64), hi[on].astype(np.int64))
        if n_mig:
            mig_uuid = np.array([self._uuid.get(a[5] or "", -1) for a in self._attrs_list], dtype=np.int64)
            uid = mig_uuid[p["attrs"][sel]]
            mcodes = np.array(
                [(self.node_row[n] * _GPU_SPAN + i) * _UUID_SPAN + self._uuid[u] for n, i, u in mig_keys],
                dtype=np.int64,
            )
            morder = np.argsort(mcodes)
            mrec = (p["node"][sel] * _GPU_SPAN + p["gpu"][sel]) * _UUID_SPAN + uid
            mat = np.searchsorted(mcodes[morder], mrec).clip(0, n_mig - 1)
            mfound = (mcodes[morder][mat] == mrec) & (uid >= 0) & on
            _mark(
                mig_has_process, morder[mat][mfound], lo[mfound].astype(np.int64), hi[mfound].astype(np.int64)
            )
        # one ProcessSeen per (GPU row, pid): the latest record (chunk time order) names it
        pid = p["pid"][sel]
        idx = np.lexsort((p["crc"][sel], p["t_last"][sel], p["t_first"][sel], pid, row))
        r_s, pid_s = row[idx], pid[idx]
        new = np.ones(idx.size, dtype=bool)
        new[1:] = (r_s[1:] != r_s[:-1]) | (pid_s[1:] != pid_s[:-1])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], idx.size) - 1
        firsts = np.minimum.reduceat(first[idx], starts)
        lasts = np.maximum.reduceat(last[idx], starts)
        latest = sel[idx[ends]]
        mem, mem_int = p["mem"][latest], self._mem_int[latest]
        attrs = p["attrs"][latest]
        for k in range(starts.size):
            user, container, name, affinity, numa, mig_uuid, job = self._attrs_list[int(attrs[k])]
            m = float(mem[k])
            gpu_processes[int(r_s[starts[k]])].append(
                ProcessSeen(
                    pid=int(pid_s[starts[k]]),
                    user=user,
                    container=container,
                    name=name,
                    mem_used=None if math.isnan(m) else (int(m) if mem_int[k] else m),  # type: ignore[arg-type]
                    first_seen=float(firsts[k]),
                    last_seen=float(lasts[k]),
                    cpu_affinity=affinity,
                    cpu_numa_nodes=numa,
                    mig_uuid=mig_uuid,
                    job=job,
                )
            )
        return has_process, mig_has_process, gpu_processes


_GPU_SPAN = MAX_DEVICE_INDEX * 2
_UUID_SPAN = 1 << 22


def median_steps(ts: np.ndarray) -> list[float | None]:
    """`median_step` of each row of a (chunks × samples) matrix of timestamps."""
    if ts.shape[1] < 2:
        return [None] * ts.shape[0]
    d = np.sort(np.diff(ts, axis=1), axis=1)
    k = d.shape[1] // 2
    mid = d[:, k] if d.shape[1] % 2 else (d[:, k - 1] + d[:, k]) / 2
    return mid.tolist()


def median_step(ts: np.ndarray) -> float | None:
    """`np.median(np.diff(ts))` (the same float), at a fraction of its cost on a short array; None
    for fewer than two samples."""
    if ts.size < 2:
        return None
    d = np.sort(np.diff(ts))
    k = d.size // 2
    return float(d[k]) if d.size % 2 else float((d[k - 1] + d[k]) / 2)


def _ids(ids: Any) -> tuple[int, ...] | None:
    return None if ids is None else tuple(ids)


def _mark(out: np.ndarray, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set out[rows[i], lo[i]:hi[i] + 1] for every i, in one pass (a difference array)."""
    if not rows.size:
        return
    diff = np.zeros((out.shape[0], out.shape[1] + 1), dtype=np.int64)
    np.add.at(diff, (rows, lo), 1)
    np.add.at(diff, (rows, hi + 1), -1)
    out |= np.cumsum(diff, axis=1)[:, :-1] > 0


def _sampled(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """0 where a value is a sample (`_Family.add` would bin it), NaN where it is none."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.abs(np.rint(values * scale)) <= MAX_COUNT, 0.0, np.nan)


def _throttle(reasons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Throttle-reason bitmasks as two 0/1 series (thermal, power), NaN where unknown: a bitmask is
    no level, but the bin mean of a 0/1 series is the fraction of the bin spent throttled."""
    known = np.abs(reasons) <= MAX_ABS  # a mask must fit an int64
    bits = np.where(known, reasons, 0).astype(np.int64)
    thermal = ((bits & THROTTLE_THERMAL_BITS) != 0) | (
        ((bits & THROTTLE_HW_SLOWDOWN) != 0) & ((bits & THROTTLE_CAUSE_BITS) == 0)
    )
    return np.where(known, thermal, np.nan), np.where(known, (bits & THROTTLE_POWER_BITS) != 0, np.nan)


def build_window(
    cluster: str,
    chunks: list[Chunk],
    *,
    end: float,
    span_s: float,
    step: float,
    node_groups: dict[str, str | None] | None = None,
    registry: list[NodeSeen] | None = None,
    now: float = float("nan"),
) -> Window:
    """Bin `chunks` (any order, any overlap) into the window (end - span_s, end]; what is not
    `readable` in them is left out. Samples outside the window take no part."""
    bins = max(round(span_s / step), 1)
    start = end - bins * step
    state = WindowState(step, capacity_s=(bins + 1) * step, floor=start, ceiling=start + bins * step)
    readable_chunks = [r for r in (readable(c, now) for c in chunks) if r is not None]
    state.add([(c, str(i)) for i, c in enumerate(readable_chunks)])
    return state.window(cluster, end=end, span_s=span_s, node_groups=node_groups, registry=registry, now=now)
