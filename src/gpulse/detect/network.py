"""Network traffic collapsed on some nodes: a busy group's nodes whose traffic falls far below it.

The ranks of a multi-node job exchange gradients or activations all the time, so every node of
the group moves about as many bytes as its peers. A node whose traffic collapses while its peers
keep exchanging is the stalled or straggling rank: a NIC or InfiniBand link down or degraded
(NCCL fell back to a slow path), a switch port dropping packets, a rank stuck before a
collective.

A node's throughput X(n, t) is net_rx_bps + net_tx_bps (loopback excluded by the shipper), plus
ib_rx_bps + ib_tx_bps where the node has InfiniBand/RoCE (`node_throughput`). Each
job (gpulse.detect.jobs: the scheduler's, the processes', else the node group) is judged against
its own median,
as in the imbalance detector whose helpers this reuses; a node is out in a bin when the group is
busy (median ≥ `min_group_bps`) and the node moves less than `level_ratio` × the median. One
vectorised pass over (nodes × bins) per group; one condition per group.

Defaults: `for_s` 60 s, as for imbalance: a minute outlasts a rank's checkpoint write or a data
reload and still alerts within about two minutes; `min_group_bps` 100 MB/s, far above the tens of
kB/s an idle node moves (ssh, monitoring, the shipper) and well below what a multi-node job
exchanges (GB/s per node); `level_ratio` 0.2, because ranks of one job differ by stage and role
(pipeline ends, parameter servers) but not by a factor of five; `min_nodes` 3, because with two
nodes there is no telling which one is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect.base import Condition, ParamReader, Window, downsample

# `medians` is imbalance's public helper; the others are its wording and span means, shared so the
# two group detectors read alike (they belong in a shared helper module, see report)
from gpulse.detect.imbalance import medians, minutes, nanmean, nanmedian_last, node_list, nodes_out
from gpulse.detect.jobs import Job, JobsMode, find_jobs, job_place, job_subject, label_of, parse_mode, who
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30
MB = 1e6
GB = 1e9

ACTION = (
    "Check the flagged nodes' network: the InfiniBand or RoCE link (`ibstat`, `ibv_devinfo`: port "
    "state and rate), the Ethernet NIC (`ethtool <dev>` for link speed, `ethtool -S` for errors), "
    "the switch port's error counters; then the job's logs on those nodes for NCCL timeouts or a "
    "rank stuck before a collective (NCCL_DEBUG=INFO names the transport and link it uses). "
    "Compare with a healthy peer."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    min_nodes: int
    min_group_bps: float
    level_ratio: float
    jobs: JobsMode


class NetworkDetector:
    """Nodes of a group busy on the network whose own traffic falls far below the group median."""

    name: ClassVar[str] = "network"
    title: ClassVar[str] = "Network traffic collapsed on some nodes"
    description: ClassVar[str] = (
        "Within each node group, nodes whose network throughput (in + out) collapses to a small "
        "fraction of the group median while their peers keep exchanging: a stalled or straggling rank."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = (
        "host.net_rx_bps",
        "host.net_tx_bps",
        "host.ib_rx_bps",
        "host.ib_tx_bps",
    )
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 60,
        "severity": "warning",
        "min_nodes": 3,
        "min_group_bps": 100_000_000,  # 100 MB/s
        "level_ratio": 0.2,
        "jobs": "auto",
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per node group that has nodes whose traffic collapsed at `window.end`."""
        p = _parse(params)
        throughput = node_throughput(window)
        if throughput is None or len(window.nodes) == 0 or window.bins == 0:
            return []
        conditions = []
        for job in find_jobs(window, p.jobs):  # a handful of jobs, not bins
            if len(job.rows) < p.min_nodes:  # a 1-node job exchanges with nobody
                continue
            cond = _judge_group(window, job, list(job.rows), throughput[list(job.rows)], p)
            if cond is not None:
                conditions.append(cond)
        return conditions


def _judge_group(window: Window, job: Job, rows: list[int], x: np.ndarray, p: _Params) -> Condition | None:
    """The job's Condition, or None when fewer than min_nodes report or no node collapsed."""
    n = x.shape[0]
    finite = np.isfinite(x)
    reporting = finite[:, -1]  # a node silent in the last bin is excluded, not collapsed
    if reporting.sum() < p.min_nodes:
        return None
    m, _ = medians(x)
    m = np.where(finite.sum(axis=0) >= p.min_nodes, m, np.nan)
    with np.errstate(invalid="ignore"):  # NaN compares False: a bin without a reference is not judged
        busy = m >= p.min_group_bps
        out = finite & busy[None, :] & (x < m * p.level_ratio)
    judged_out = nodes_out(out, x, window, p.for_s)
    if judged_out is None:
        return None
    flagged, since, span, _, mean_level = judged_out
    # every figure over the span the rule judged: the flagged run (at most for_s), busy bins only
    # (a quiet bin judged nobody). The peers' level is the median of the per-bin median of the
    # nodes not flagged; each node's level its own median over those bins (a mean would let the
    # bins before the collapse, or one burst, move it)
    peers, _ = medians(np.where(flagged[:, None], np.nan, x))
    run = (window.times >= max(since, window.times[-span])) & busy
    median_now = float(nanmedian_last(peers[run])) if run.any() else nanmean(m[-span:])
    if not np.isfinite(median_now):
        median_now = nanmean(m[-span:])
    level = nanmedian_last(x[:, run]) if run.any() else mean_level
    level = np.where(np.isfinite(level), level, mean_level)  # a node with no value in the span

    names = [window.nodes[i] for i in rows]
    out_idx = [int(i) for i in np.flatnonzero(flagged)]
    worst = min(out_idx, key=lambda i: (level[i], names[i]))
    values: dict[str, float] = {
        "nodes_out": float(len(out_idx)),
        "nodes_reporting": float(reporting.sum()),
        "worst_bps": float(round(level[worst])),
        "group_median_bps": float(round(median_now)),
        "ratio": round(float(level[worst] / median_now), 3),
        "level_ratio": p.level_ratio,
    }
    for i in out_idx:
        values[f"bps:{names[i]}"] = float(round(level[i]))

    where = job_place(window.cluster, job)
    out_levels = [float(level[i]) for i in out_idx]
    summary = (
        f"{len(out_idx)} of {int(reporting.sum())} nodes in {where} "
        f"at {_rates(min(out_levels), max(out_levels))} "
        f"network traffic (in + out) while their peers move {_rates(median_now, median_now)} (median) — "
        f"{node_list([(names[i], float(level[i])) for i in out_idx])}"
    )
    shown = [i for i in range(n) if reporting[i]]
    users, containers = who(window, [rows[i] for i in out_idx])
    evidence = Evidence(
        title=f"Network traffic (in + out) per node in {where}, last {minutes(window.end - window.start)}",
        unit="MB/s",
        rows=[
            EvidenceRow(
                label=names[i],
                values=downsample(x[i] / MB, EVIDENCE_POINTS),
                level=round(float(level[i]) / MB, 1),
                flagged=bool(flagged[i]),
                series="node.net_mbps",  # how a resolve draws it again (gpulse.analyze.recovery)
                subject=names[i],
                reduce="median",
            )
            for i in shown
        ],
        reference=round(median_now / MB, 1),
        reference_label="group median",
        reference_of="peers",
        # the busiest node fills the bar: traffic has no natural maximum (link speeds vary)
        scale_max=round(max(float(np.nanmax(level[shown])), median_now) / MB, 1),
    )
    return Condition(
        rule=NetworkDetector.name,
        subject=job_subject(window.cluster, job),
        since=since,
        severity=p.severity,
        summary=summary,
        action=ACTION,
        nodes=[names[i] for i in out_idx],
        users=users,
        containers=containers,
        values=values,
        evidence=evidence,
        job=label_of(job),
    )


def _rates(lo: float, hi: float) -> str:
    """'2.4 GB/s', '0.1–12 MB/s': a range in the unit of its top, two significant digits or so."""
    unit, scale = ("GB/s", GB) if hi >= GB else ("MB/s", MB)

    def num(v: float) -> str:
        v /= scale
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"

    a, b = num(lo), num(hi)
    return f"{a} {unit}" if a == b else f"{a}–{b} {unit}"


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("network", params, NetworkDetector.defaults)
    return _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        min_nodes=int(r.number("min_nodes", 2, 100_000, integer=True)),
        min_group_bps=r.number("min_group_bps", 0, 1e13),
        level_ratio=r.number("level_ratio", 0, 1),
        jobs=parse_mode("network", r.get("jobs")),
    )


def node_throughput(window: Window) -> np.ndarray | None:
    """(nodes × bins) bytes/s a node moves: net_rx_bps + net_tx_bps (NaN in either: silent in that
    bin), plus ib_rx_bps + ib_tx_bps where the node has InfiniBand/RoCE. NCCL's RDMA traffic never
    reaches /proc/net/dev, so without them a job exchanging over IB looks idle, and its collapse
    unseen. A node without IB (NaN there) adds nothing; None when no network series is present."""
    parts = [window.host[k] for k in ("net_rx_bps", "net_tx_bps") if k in window.host]
    if not parts:
        return None
    throughput = np.sum(parts, axis=0)
    for k in ("ib_rx_bps", "ib_tx_bps"):
        if k in window.host:
            throughput = throughput + np.nan_to_num(window.host[k], nan=0.0)
    return throughput
