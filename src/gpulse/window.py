"""Turn one cluster's decoded chunks into a `detect.base.Window`: (nodes × bins), (GPUs × bins).

Every metric is averaged into bins of `step` seconds with one `np.bincount` per metric over all
chunks at once. The window ends at the last bin every recently-reporting node has completed, so
the trailing bins are never half-empty just because a batch is still on its way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from gpulse.codec import Chunk
from gpulse.detect.base import ProcessSeen, Window

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


def build_window(
    cluster: str,
    chunks: list[Chunk],
    *,
    end: float,
    span_s: float,
    step: float,
    node_groups: dict[str, str | None] | None = None,
) -> Window:
    """Bin `chunks` (any order, any overlap) into the window (end - span_s, end]."""
    bins = max(round(span_s / step), 1)
    start = end - bins * step
    nodes = sorted({c.node for c in chunks})
    node_row = {n: i for i, n in enumerate(nodes)}
    groups = {n: None for n in nodes} | dict(node_groups or {})
    for c in chunks:  # the batch's own word on its group wins over the registry's
        if c.node_group:
            groups[c.node] = c.node_group
    gpu_keys = sorted({(c.node, g.index) for c in chunks for g in c.gpus})
    gpu_row = {k: i for i, k in enumerate(gpu_keys)}

    host = _Binned(bins)
    gpu = _Binned(bins)
    last_seen = np.full(len(nodes), np.nan)
    cpu_count = np.full(len(nodes), np.nan)
    host_mem_total = np.full(len(nodes), np.nan)
    gpu_mem_total = np.full(len(gpu_keys), np.nan)
    has_process = np.zeros((len(gpu_keys), bins), dtype=bool)
    procs: dict[tuple[int, int], ProcessSeen] = {}

    for c in chunks:
        r = node_row[c.node]
        b = np.floor((c.timestamps - start) / step).astype(np.int64)
        inside = (b >= 0) & (b < bins)
        last_seen[r] = np.fmax(last_seen[r], c.timestamps[-1])
        cpu_count[r] = c.host_static.cpu_count
        host_mem_total[r] = c.host_static.mem_total
        if not inside.any():
            continue
        bi = b[inside]
        for name, values in c.host.items():
            host.add(name, r * bins + bi, values[inside])
        # one call per metric for all of the chunk's GPUs: (GPUs × samples) at once
        by_metric: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for g in c.gpus:
            gr = gpu_row[(c.node, g.index)]
            gpu_mem_total[gr] = g.mem_total
            for name, values in g.metrics.items():
                rows_of, values_of = by_metric[name]
                rows_of.append(gr)
                values_of.append(values)
        for name, (rows_of, values_of) in by_metric.items():
            flat = (np.asarray(rows_of)[:, None] * bins + bi[None, :]).ravel()
            gpu.add(name, flat, np.stack(values_of)[:, inside].ravel())
        for p in c.processes:
            row = gpu_row.get((c.node, p["gpu_index"]))
            if row is None:
                continue
            gr = row
            lo = max(int(np.floor((p["first_seen"] - start) / step)), 0)
            hi = min(int(np.floor((p["last_seen"] - start) / step)), bins - 1)
            if lo <= hi:
                has_process[gr, lo : hi + 1] = True
            key = (gr, int(p["pid"]))
            seen = procs.get(key)
            procs[key] = ProcessSeen(
                pid=int(p["pid"]),
                user=p.get("user"),
                container=p.get("container"),
                name=p.get("name"),
                mem_used=p.get("mem_used"),
                first_seen=min(p["first_seen"], seen.first_seen) if seen else p["first_seen"],
                last_seen=max(p["last_seen"], seen.last_seen) if seen else p["last_seen"],
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
        gpu=gpu.matrices(len(gpu_keys)),
        gpu_mem_total=gpu_mem_total,
        gpu_has_process=has_process,
        gpu_processes=gpu_processes,
    )
