"""GPU starved by the CPU: the data-loading bottleneck.

A training job whose input pipeline (reading, decoding, augmenting, collating) runs on the CPU
keeps its GPUs waiting when the CPU cannot keep up: the GPUs that hold the job's processes sit at
low utilisation while the cores the job may use are saturated. The fix is on the CPU side (more
DataLoader workers, GPU-side decoding, cached preprocessing), so this is worth telling apart from
a job that is merely idle (idle_held) or a GPU nobody uses.

Per node and bin:

- the GPU level is the mean util_gpu over the node's GPUs that hold a compute process in that bin
  (idle GPUs without a process are someone else's or nobody's: they do not count);
- the cores the job may use are the union of the CPU affinity of the processes on those GPUs, or
  the node's cpu_count when any of them has no known affinity; capped by the CPU quota of their
  cgroups (`cpu_quota_cores`, cgroup v2 cpu.max) where the node reports one;
- the CPU is busy by `cpu_busy_cores` (cores' worth of work; `cpu_util` / 100 × cpu_count when it
  is absent), and its load is busy / allowed cores.

Both are judged over the trailing `smooth_s` (a NaN-aware rolling mean): the condition holds in a
bin that has GPU and CPU data where the GPU level's rolling mean is at most `max_gpu_util` and the
rolling mean of busy / allowed cores is at least `cpu_saturation`; `since` is the start of its
trailing run, moved back to where the CPU's saturation began (at most `smooth_s` earlier): the
rolling means cross their lines up to a smoothing window after the fault shows, and `for_s`
counts from when it showed. A bin without GPU or CPU data breaks the run.

Defaults: 40 % GPU (a well-fed training job runs at 80–100 %; under 40 % the GPU waits more than
it computes), 85 % of the allowed cores (a starved loader shows 90–100 % on every core it may use;
the headroom absorbs workers blocked on I/O and sampling jitter), smooth_s 60 s (a starved GPU
works in bursts of a second as batches arrive, so a 5 s bin that catches three of them reads 50 %
and would restart a run judged bin by bin; a minute holds a dozen bins and sees through them,
and delays the onset by well under for_s), for_s 300 s (longer than an epoch boundary, a
validation pass or a checkpoint, which starve GPUs for a minute).

Limits: the busy figure is the whole node's, so on a node shared with CPU work outside the job's
cores a pinned job can look saturated when only its neighbours are; and a CPU quota (a cgroup
limit, e.g. a Kubernetes CPU limit) is seen only where the shipper reports `cpu_quota_cores`
(cgroup v2): elsewhere a job throttled to 4 of 64 cores shows a CPU far from saturated — the
action says to check the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample, rolling_mean, trailing_run_start
from gpulse.detect.imbalance import node_levels
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30

ACTION = (
    "Feed the GPUs faster: raise the DataLoader's num_workers (about one per free core), set "
    "pin_memory=True and prefetch_factor, move decoding and augmentation to the GPU (NVIDIA DALI, "
    "torchvision.io.decode_jpeg on the GPU), cache preprocessed data instead of decoding it every "
    "epoch, and check the job's CPU limit (cgroup quota, taskset/numactl pinning, --cpus-per-task)."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    cpu_saturation: float
    max_gpu_util: float
    smooth_s: float


class InputBoundDetector:
    """Nodes whose GPUs with processes run at low utilisation while the job's CPU cores are saturated."""

    name: ClassVar[str] = "input_bound"
    title: ClassVar[str] = "GPU starved by the CPU"
    description: ClassVar[str] = (
        "On a node, GPUs that hold compute processes run at low utilisation while the CPU cores the job "
        "may use are saturated, sustained: the input pipeline is the bottleneck."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = (
        *("gpu.util_gpu", "host.cpu_busy_cores", "host.cpu_util", "processes"),
        "host.cpu_quota_cores",
    )
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 300,
        "severity": "warning",
        "cpu_saturation": 0.85,
        "max_gpu_util": 40.0,
        "smooth_s": 60,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per node (in window order) whose GPUs are starved by its CPU at `window.end`."""
        p = _parse(params)
        util = window.gpu.get("util_gpu")
        n_nodes, t = len(window.nodes), window.bins
        if util is None or util.shape != window.gpu_has_process.shape or n_nodes == 0 or t == 0:
            return []
        w = max(1, round(p.smooth_s / window.step))  # bins in the rolling mean
        has_process = window.gpu_has_process.astype(bool)
        gpu_level = node_levels(np.where(has_process, util, np.nan), window.gpu_node, n_nodes)
        gpu_smooth = rolling_mean(gpu_level, w)
        busy = cpu_busy(window)
        with np.errstate(invalid="ignore"):
            # only a node starved in the last bin can be in a run now: the others need no core count
            candidates = (gpu_smooth[:, -1] <= p.max_gpu_util) & np.isfinite(busy[:, -1])
        allowed = quota_capped(window, allowed_cores(window, candidates))
        load = busy_share(busy, allowed)
        with np.errstate(invalid="ignore"):  # NaN compares False: no data is neither low nor saturated
            starved = (
                np.isfinite(gpu_level)
                & np.isfinite(load)
                & (gpu_smooth <= p.max_gpu_util)
                & (rolling_mean(load, w) >= p.cpu_saturation)
            )
            plain = np.isfinite(gpu_level) & (gpu_level <= p.max_gpu_util) & (load >= p.cpu_saturation)
        starts = backdated(trailing_run_start(starved, window.times), plain, window, w)
        return [
            _condition(window, int(n), float(starts[n]), gpu_level[n], busy[n], allowed[n], load[n], p)
            for n in np.flatnonzero(np.isfinite(starts))
        ]


def backdated(starts: np.ndarray, plain: np.ndarray, window: Window, w: int) -> np.ndarray:
    """Each run's start moved back over the bins just before it that were starved bin by bin
    (`plain`: GPU low and CPU saturated), at most `w` - 1 bins: the rolling means cross their
    lines up to a smoothing window after the fault shows in the data, and `for_s` counts from when
    it showed (the delay bound, docs/detectors.md). NaN stays NaN."""
    t = window.bins
    idx = np.arange(t)
    # per bin, the first bin of the run of plain bins ending there (the bin itself when not plain)
    last_off = np.maximum.accumulate(np.where(plain, -1, idx), axis=1)
    run_from = np.where(plain, last_off + 1, idx)
    out = starts.copy()
    ok = np.flatnonzero(np.isfinite(starts) & (w > 1))
    if ok.size:
        at = np.clip(np.round((starts[ok] - window.start) / window.step).astype(int), 0, t - 1)
        before = np.maximum(at - 1, 0)
        back = np.where((at > 0) & plain[ok, before], run_from[ok, before], at)
        out[ok] = window.times[np.maximum(back, at - (w - 1))]
    return out


def cpu_busy(window: Window) -> np.ndarray:
    """(nodes × bins) cores' worth of work: cpu_busy_cores, else cpu_util / 100 × cpu_count; NaN unknown."""
    shape = (len(window.nodes), window.bins)
    nan = np.full(shape, np.nan)
    cores = window.host.get("cpu_busy_cores", nan)
    util = window.host.get("cpu_util", nan)
    if cores.shape != shape:
        cores = nan
    if util.shape != shape:
        util = nan
    count = np.asarray(window.cpu_count, dtype=np.float64).reshape(-1, 1)
    return np.where(np.isfinite(cores), cores, util / 100.0 * count)


def quota_capped(window: Window, allowed: np.ndarray) -> np.ndarray:
    """`allowed` (nodes × bins), capped by the node's cpu_quota_cores where it reports one: a job
    held to 4 cores' worth of CPU time is saturated at 4 busy cores, whatever its affinity."""
    quota = window.host.get("cpu_quota_cores")
    if quota is None or quota.shape != allowed.shape:
        return allowed
    with np.errstate(invalid="ignore"):
        limited = np.isfinite(quota) & (quota > 0)
    return np.where(limited, np.fmin(allowed, quota), allowed)


def busy_share(busy: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """busy / allowed cores, bin by bin (1.0: every allowed core busy; above 1 when the node's busy
    figure holds work outside them); NaN where either is unknown or no core is allowed."""
    ok = np.isfinite(busy) & (np.nan_to_num(allowed) > 0)
    return np.where(ok, busy / np.where(ok, allowed, 1.0), np.nan)


def allowed_cores(window: Window, nodes: np.ndarray | None = None) -> np.ndarray:
    """(nodes × bins) how many cores the node's GPU processes may run on in each bin.

    The union of the CPU affinity of the processes on the GPUs that hold one in that bin, capped
    at the node's cpu_count; the cpu_count itself where any of those GPUs has a process of unknown
    affinity (or none listed), or where no GPU holds a process. NaN where neither is known.
    `nodes` (bool, per node) limits the work to those nodes; the others get their cpu_count.
    """
    n_nodes, t = len(window.nodes), window.bins
    count = np.asarray(window.cpu_count, dtype=np.float64)
    out = np.repeat(count[:, None], t, axis=1)
    has_process = window.gpu_has_process.astype(bool)
    gpu_node = np.asarray(window.gpu_node, dtype=int)
    order = np.argsort(gpu_node, kind="stable")
    by_node = np.split(order, np.searchsorted(gpu_node[order], np.arange(1, n_nodes)))
    for n, rows in enumerate(by_node):  # a loop over nodes and their GPUs, each step vectorised over bins
        active = has_process[rows]  # (gpus × T)
        if (nodes is not None and not nodes[n]) or not active.any():
            continue
        affinity = [_affinity(window, int(g)) for g in rows]  # None: unknown
        cores = sorted({c for a in affinity if a is not None for c in a})
        if not cores:
            continue
        known = np.array([a is not None for a in affinity])
        # (gpus × cores) membership: a core is allowed in a bin when an active GPU's processes may use it
        col = {c: i for i, c in enumerate(cores)}
        member = np.zeros((rows.size, len(cores)), dtype=np.int64)
        for i, a in enumerate(affinity):
            if a is not None:
                member[i, [col[c] for c in a]] = 1
        union = ((member.T @ active.astype(np.int64)) > 0).sum(axis=0).astype(np.float64)  # (T,)
        exact = active.any(axis=0) & ~(active & ~known[:, None]).any(axis=0)
        capped = np.fmin(union, count[n]) if np.isfinite(count[n]) else union
        out[n] = np.where(exact & (union > 0), capped, out[n])
    return out


def _affinity(window: Window, g: int) -> set[int] | None:
    """The cores the processes seen on GPU row `g` may use; None when any of them (or all: none
    listed) is of unknown affinity."""
    procs = window.gpu_processes[g]
    if not procs or any(q.cpu_affinity is None for q in procs):
        return None
    return {c for q in procs for c in q.cpu_affinity or ()}


def _condition(
    window: Window,
    n: int,
    since: float,
    gpu_level: np.ndarray,
    busy: np.ndarray,
    allowed: np.ndarray,
    load: np.ndarray,
    p: _Params,
) -> Condition:
    node = window.nodes[n]
    run = window.times >= since
    gpu_mean = float(gpu_level[run].mean())  # every bin of the run has data: NaN breaks a run
    busy_mean = float(busy[run].mean())
    allowed_now = float(allowed[-1])
    pct = load * 100
    pct_mean = float(pct[run].mean())
    rows = np.flatnonzero(np.asarray(window.gpu_node, dtype=int) == n)
    held = [int(g) for g in rows if window.gpu_has_process[g][run].any()]
    procs = [q for g in held for q in window.gpu_processes[g] if q.last_seen >= since]

    cores = f"{allowed_now:g}"
    if busy_mean <= allowed_now:
        cpu_text = f"{busy_mean:.1f} of {cores} allowed CPU cores are saturated"
    else:  # the node's busy figure holds work outside the job's cores too
        cpu_text = f"its {cores} allowed CPU cores are saturated ({busy_mean:.1f} cores busy on the node)"
    summary = f"{node}: GPUs {gpu_mean:.0f} % busy while {cpu_text} — the input pipeline is the bottleneck"

    values = {
        "gpu_util": round(gpu_mean, 1),
        "cpu_busy_cores": round(busy_mean, 2),
        "cpu_allowed_cores": allowed_now,
        "cpu_busy_pct": round(pct_mean, 1),
        "gpus": float(len(held)),
        "max_gpu_util": p.max_gpu_util,
        "cpu_saturation": p.cpu_saturation,
        "smooth_s": p.smooth_s,
        "duration_s": round(float(window.end - since), 1),
    }
    span = text.duration(window.end - window.start)
    evidence = Evidence(
        title=f"{node}: GPU utilisation and CPU busy (% of {cores} allowed cores), last {span}",
        unit="%",
        rows=[
            EvidenceRow("GPU utilisation", downsample(gpu_level, EVIDENCE_POINTS), round(gpu_mean, 1), True),
            EvidenceRow("CPU busy", downsample(pct, EVIDENCE_POINTS), round(pct_mean, 1), True),
        ],
        reference=round(p.cpu_saturation * 100, 1),
        reference_label="CPU saturated",
    )
    return Condition(
        rule=InputBoundDetector.name,
        subject={"cluster": window.cluster, "node": node},
        since=since,
        severity=p.severity,
        summary=summary,
        action=ACTION,
        nodes=[node],
        gpus=[window.gpu_label(g) for g in held],
        users=sorted({q.user for q in procs if q.user}),
        containers=sorted({q.container for q in procs if q.container}),
        values=values,
        evidence=evidence,
    )


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("input_bound", params, InputBoundDetector.defaults)
    return _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        cpu_saturation=r.number("cpu_saturation", 0.1, 1),
        max_gpu_util=r.number("max_gpu_util", 0, 100),
        smooth_s=r.number("smooth_s", 0, 3_600),
    )
