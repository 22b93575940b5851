"""Turn one cluster's decoded chunks into a `detect.base.Window`: (nodes × bins), (GPUs × bins).

Every metric is averaged into bins of `step` seconds with one `np.bincount` per metric over all
chunks at once. The window ends at the last bin every recently-reporting node has completed, so
the trailing bins are never half-empty just because a batch is still on its way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from gpulse.codec import Chunk
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
        ok = np.isfinite(values)
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
        known = np.isfinite(reasons)
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
    """Bin `chunks` (any order, any overlap) into the window (end - span_s, end]."""
    bins = max(round(span_s / step), 1)
    start = end - bins * step
    chunks = sorted(chunks, key=lambda c: float(c.timestamps[0]))  # layouts and events in time order
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
        t_first = float(c.timestamps[0])
        b = np.floor((c.timestamps - start) / step).astype(np.int64)
        inside = (b >= 0) & (b < bins)
        last_seen[r] = np.fmax(last_seen[r], c.timestamps[-1])
        cpu_count[r] = c.host_static.cpu_count
        host_mem_total[r] = c.host_static.mem_total
        for g in c.gpus:
            gr = gpu_row[(c.node, g.index)]
            for key, value in (
                ("mem_total", g.mem_total),
                ("numa", g.numa_node),
                ("power_limit", g.power_limit_w),
                ("temp_slowdown", g.temp_slowdown_c),
            ):
                if value is not None:
                    gpu_static[key][gr] = value
        layout_of: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
        for m in c.mig:
            gr = gpu_row[(c.node, m.gpu_index)]
            mig_info[mig_row[(c.node, m.gpu_index, m.uuid)]] = MigInstance(
                gr, m.uuid, m.profile, m.gi_id, m.ci_id, float(m.mem_total)
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
        bi = b[inside]
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
