"""Turn one cluster's decoded chunks into a `detect.base.Window`: (nodes × bins), (GPUs × bins).

Every metric is averaged into bins of `step` seconds with one `np.bincount` per metric over all
chunks at once. The window ends at the last bin every recently-reporting node has completed, so
the trailing bins are never half-empty just because a batch is still on its way.

Nothing a chunk holds can make this raise: a chunk stored before ingest bounded its input (or
written by a buggy shipper) may carry any number the codec can hold. `readable` and `_amount`
read each field the honest way (see there): what is not a plausible reading is "no sample".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from gpulse.codec import Chunk, GpuSeries, MigSeries
from gpulse.detect.base import (
    THROTTLE_CAUSE_BITS,
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_POWER_BITS,
    THROTTLE_THERMAL_BITS,
    MigInstance,
    NodeSeen,
    ProcessSeen,
    Window,
)

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


def readable(chunk: Chunk, now: float = math.nan) -> Chunk | None:
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
    ok = np.isfinite(ts) & (ts >= MIN_TIME_S)
    if not math.isnan(now):
        ok &= ts <= now + MAX_FUTURE_S
    if not ok.any():
        return None
    changes: dict[str, Any] = {}
    if not ok.all():
        keep = np.flatnonzero(ok)

        def cut(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: values[keep] for name, values in metrics.items()}

        changes["timestamps"] = ts[keep]
        changes["host"] = cut(chunk.host)
        changes["gpus"] = [replace(g, metrics=cut(g.metrics)) for g in chunk.gpus]
        changes["mig"] = [replace(m, metrics=cut(m.metrics)) for m in chunk.mig]
    gpus: list[GpuSeries] = changes.get("gpus", chunk.gpus)
    if not all(_small_int(g.index) for g in gpus):
        changes["gpus"] = gpus = [g for g in gpus if _small_int(g.index)]
    indexes = {g.index for g in gpus}
    mig: list[MigSeries] = changes.get("mig", chunk.mig)
    if not all(m.gpu_index in indexes for m in mig):
        changes["mig"] = [m for m in mig if m.gpu_index in indexes]
    processes = [_process(p) for p in chunk.processes]
    if any(p is not q for p, q in zip(processes, chunk.processes, strict=True)):
        changes["processes"] = [p for p in processes if p is not None]
    events = [
        e for e in chunk.events if isinstance(e, dict) and not math.isnan(_amount(e.get("ts"), 0, math.inf))
    ]
    if len(events) != len(chunk.events):
        changes["events"] = events
    return replace(chunk, **changes) if changes else chunk


def _process(p: Any) -> dict[str, Any] | None:
    """The process as it is when every field is readable; a copy with unknown (None) `mem_used`
    or CPU lists where they are not; None when it cannot be placed (pid, GPU, first/last seen)."""
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
        if ids is not None and not (isinstance(ids, list | tuple) and all(_small_int(i) for i in ids)):
            fixed[key] = None
    return {**p, **fixed} if fixed else p


def window_end(last_seen: Iterable[float], step: float) -> float:
    """The end of the window: the floor, to a bin edge, of the slowest fresh node's last sample.

    `last_seen` holds one time per node (its latest sample), not one per chunk."""
    seen = np.asarray(list(last_seen), dtype=float)
    if seen.size == 0:
        return 0.0
    fresh = seen[seen >= seen.max() - STALE_S]
    return float(np.floor((fresh.min() + 1e-6) / step) * step)


class _Binned:
    """Accumulates (row, bin, value) triples per metric and averages them in one pass."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)

    def add(self, metric: str, flat_index: np.ndarray, values: np.ndarray) -> None:
        ok = np.abs(values) <= MAX_ABS  # NaN and ±inf compare false: no sample
        self.parts[metric].append((flat_index[ok], values[ok]))

    def add_rows(
        self, metrics: dict[str, tuple[list[int], list[np.ndarray]]], bi: np.ndarray, inside: np.ndarray
    ) -> None:
        """Add, per metric, several rows' series of one chunk in one call."""
        for name, (rows, series) in metrics.items():
            flat = (np.asarray(rows)[:, None] * self.bins + bi[None, :]).ravel()
            self.add(name, flat, np.stack(series)[:, inside].ravel())

    def matrices(self, rows: int) -> dict[str, np.ndarray]:
        size = rows * self.bins
        out = {}
        for metric, parts in self.parts.items():
            idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            val = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
            sums = np.bincount(idx, weights=val, minlength=size)
            counts = np.bincount(idx, minlength=size)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[metric] = (sums / counts).reshape(rows, self.bins)
        return out


def _gpu_series(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The series binned for a GPU: a bitmask is no level, so throttle reasons become two 0/1
    series (thermal, power) whose bin mean is the fraction of the bin spent throttled."""
    out = {k: v for k, v in metrics.items() if k != "throttle_reasons"}
    reasons = metrics.get("throttle_reasons")
    if reasons is not None:
        known = np.abs(reasons) <= MAX_ABS  # a mask must fit an int64
        bits = np.where(known, reasons, 0).astype(np.int64)
        thermal = ((bits & THROTTLE_THERMAL_BITS) != 0) | (
            ((bits & THROTTLE_HW_SLOWDOWN) != 0) & ((bits & THROTTLE_CAUSE_BITS) == 0)
        )
        out["throttle_thermal"] = np.where(known, thermal, np.nan)
        out["throttle_power"] = np.where(known, (bits & THROTTLE_POWER_BITS) != 0, np.nan)
    return out


def _bin_range(first: float, last: float, start: float, step: float, bins: int) -> tuple[int, int]:
    lo = max(int(np.floor((first - start) / step)), 0)
    hi = min(int(np.floor((last - start) / step)), bins - 1)
    return lo, hi


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
    `readable` in them is left out."""
    bins = max(round(span_s / step), 1)
    start = end - bins * step
    chunks = [r for r in (readable(c, now) for c in chunks) if r is not None]
    chunks = sorted(chunks, key=lambda c: float(c.timestamps.min()))  # layouts and events in time order
    nodes = sorted({c.node for c in chunks})
    node_row = {n: i for i, n in enumerate(nodes)}
    groups: dict[str, str | None] = dict.fromkeys(nodes)
    groups.update(node_groups or {})
    for c in chunks:  # the batch's own word on its group wins over the registry's
        if c.node_group:
            groups[c.node] = c.node_group
    gpu_keys = sorted({(c.node, g.index) for c in chunks for g in c.gpus})
    gpu_row = {k: i for i, k in enumerate(gpu_keys)}
    mig_keys = sorted({(c.node, m.gpu_index, m.uuid) for c in chunks for m in c.mig})
    mig_row = {k: i for i, k in enumerate(mig_keys)}
    n_gpu, n_mig = len(gpu_keys), len(mig_keys)

    host, gpu, mig = _Binned(bins), _Binned(bins), _Binned(bins)
    last_seen = np.full(len(nodes), np.nan)
    cpu_count = np.full(len(nodes), np.nan)
    host_mem_total = np.full(len(nodes), np.nan)
    gpu_static = {k: np.full(n_gpu, np.nan) for k in ("mem_total", "numa", "power_limit", "temp_slowdown")}
    has_process = np.zeros((n_gpu, bins), dtype=bool)
    mig_has_process = np.zeros((n_mig, bins), dtype=bool)
    mig_info: dict[int, MigInstance] = {}
    layouts: dict[int, list[tuple[float, frozenset[tuple[str, int, int]]]]] = defaultdict(list)
    procs: dict[tuple[int, int], ProcessSeen] = {}
    events: list[dict[str, Any]] = []

    for c in chunks:
        r = node_row[c.node]
        t_first = float(c.timestamps.min())
        at = (c.timestamps - start) / step  # in float: a far timestamp cannot wrap an int64
        inside = (at >= 0) & (at < bins)
        last_seen[r] = np.fmax(last_seen[r], c.timestamps.max())
        cpu_count[r] = _amount(c.host_static.cpu_count, 1, MAX_CPUS)
        host_mem_total[r] = _amount(c.host_static.mem_total, 1, MAX_HOST_BYTES)
        for g in c.gpus:
            gr = gpu_row[(c.node, g.index)]
            for key, value, lo, hi in (
                ("mem_total", g.mem_total, 1, MAX_GPU_BYTES),
                ("numa", g.numa_node, 0, MAX_DEVICE_INDEX),
                ("power_limit", g.power_limit_w, math.ulp(0), MAX_POWER_W),
                ("temp_slowdown", g.temp_slowdown_c, math.ulp(0), MAX_TEMP_C),
            ):
                if value is not None:
                    gpu_static[key][gr] = _amount(value, lo, hi)
        layout_of: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
        for m in c.mig:
            gr = gpu_row[(c.node, m.gpu_index)]
            mig_info[mig_row[(c.node, m.gpu_index, m.uuid)]] = MigInstance(
                gr, m.uuid, m.profile, m.gi_id, m.ci_id, _amount(m.mem_total, 0, MAX_GPU_BYTES)
            )
            layout_of[gr].add((m.profile or "", m.gi_id, m.ci_id))
        for g in c.gpus:  # a GPU in MIG mode with no instance has an empty layout
            gr = gpu_row[(c.node, g.index)]
            if g.mig_mode or gr in layout_of:
                layout = frozenset(layout_of.get(gr, set()))
                if not layouts[gr] or layouts[gr][-1][1] != layout:
                    layouts[gr].append((t_first, layout))
        for e in c.events:
            events.append({**e, "node": c.node})
        if not inside.any():
            continue
        bi = np.floor(at[inside]).astype(np.int64)
        for name, values in c.host.items():
            host.add(name, r * bins + bi, values[inside])
        # one call per metric for all of the chunk's GPUs (and MIG instances): (rows × samples) at once
        gpu_rows: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for g in c.gpus:
            gr = gpu_row[(c.node, g.index)]
            for name, values in _gpu_series(g.metrics).items():
                gpu_rows[name][0].append(gr)
                gpu_rows[name][1].append(values)
        gpu.add_rows(gpu_rows, bi, inside)
        mig_rows: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for m in c.mig:
            for name, values in m.metrics.items():
                mig_rows[name][0].append(mig_row[(c.node, m.gpu_index, m.uuid)])
                mig_rows[name][1].append(values)
        mig.add_rows(mig_rows, bi, inside)
        for p in c.processes:
            row = gpu_row.get((c.node, p["gpu_index"]))
            if row is None:
                continue
            lo, hi = _bin_range(p["first_seen"], p["last_seen"], start, step, bins)
            if lo <= hi:
                has_process[row, lo : hi + 1] = True
                mr = mig_row.get((c.node, p["gpu_index"], p.get("mig_uuid") or ""))
                if mr is not None:
                    mig_has_process[mr, lo : hi + 1] = True
            pkey = (row, int(p["pid"]))
            seen = procs.get(pkey)
            affinity = p.get("cpu_affinity")
            numa = p.get("cpu_numa_nodes")
            procs[pkey] = ProcessSeen(
                pid=int(p["pid"]),
                user=p.get("user"),
                container=p.get("container"),
                name=p.get("name"),
                mem_used=p.get("mem_used"),
                first_seen=min(p["first_seen"], seen.first_seen) if seen else p["first_seen"],
                last_seen=max(p["last_seen"], seen.last_seen) if seen else p["last_seen"],
                cpu_affinity=tuple(affinity) if affinity is not None else None,
                cpu_numa_nodes=tuple(numa) if numa is not None else None,
                mig_uuid=p.get("mig_uuid"),
            )

    gpu_processes: list[list[ProcessSeen]] = [[] for _ in gpu_keys]
    for (gr, _pid), seen_proc in sorted(procs.items()):
        gpu_processes[gr].append(seen_proc)
    return Window(
        cluster=cluster,
        start=start,
        step=step,
        end=start + bins * step,
        nodes=nodes,
        node_groups=[groups[n] for n in nodes],
        node_last_seen=last_seen,
        host=host.matrices(len(nodes)),
        cpu_count=cpu_count,
        host_mem_total=host_mem_total,
        gpu_node=np.array([node_row[n] for n, _ in gpu_keys], dtype=np.int64),
        gpu_index=np.array([i for _, i in gpu_keys], dtype=np.int64),
        gpu=gpu.matrices(n_gpu),
        gpu_mem_total=gpu_static["mem_total"],
        gpu_has_process=has_process,
        gpu_processes=gpu_processes,
        gpu_numa=gpu_static["numa"],
        gpu_power_limit=gpu_static["power_limit"],
        gpu_temp_slowdown=gpu_static["temp_slowdown"],
        mig=[mig_info[i] for i in range(n_mig)],
        mig_metrics=mig.matrices(n_mig),
        mig_has_process=mig_has_process,
        mig_layouts=dict(layouts),
        events=sorted(events, key=lambda e: (e["ts"], e["node"])),
        registry=sorted(registry or [], key=lambda n: n.node),
        now=now,
    )
