"""Cross-node imbalance: nodes of a busy group that fall far below it or stop following it.

A distributed job runs in step: every rank waits for the others at each collective, so the
nodes' GPU utilisation moves together. A node whose level falls far below its group's, or
whose series stops correlating with the group's, is a straggler, a rank stuck in a collective,
a node fed a smaller shard, or a node that lost its process while its peers wait.

The node level L(n, t) is the mean of util_gpu over the node's GPUs in bin t. Each node group
(nodes without one form the cluster-level group) is judged against its own median, so an idle
group never drags a busy one. Two tests, both vectorised over (nodes × bins) per group: the
level test first, then the correlation test against the median of the peers the level test left
alone, with hysteresis (enter below `min_corr`, leave at `exit_corr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from gpulse.detect.base import Condition, ParamReader, Window, downsample, rolling_mean, trailing_run_start
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30
MAX_NAMED_NODES = 8  # keep the summary one line on a large cluster; the evidence lists them all
# %²: a node series moving less than a point (std < 1) has no shape to correlate, so its correlation
# is 0. NVML reports whole percents: a node held at 75 % reads 75 with a stray 76, and one stray
# reading at a peak of its group's swing correlates 0.4 by chance.
_FLAT_VAR = 1.0

ACTION = (
    "Check the nodes out of step: a straggler (slow disk, throttling, a noisy neighbour), a rank stuck "
    "in a collective (NCCL hang: py-spy dump its ranks), uneven data sharding, or a node whose process "
    "died while its peers wait; compare the job's logs on those nodes with a healthy one."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    min_nodes: int
    min_group_util: float
    level_ratio: float
    min_gap: float
    corr_window_s: float
    min_corr: float
    exit_corr: float
    min_group_std: float


class ImbalanceDetector:
    """Nodes of a busy group whose GPU level falls far below the group median, or whose series
    stops correlating with the median of their peers."""

    name: ClassVar[str] = "imbalance"
    title: ClassVar[str] = "Cross-node imbalance"
    description: ClassVar[str] = (
        "Within each node group, nodes whose mean GPU utilisation falls far below the group median, "
        "or stops correlating with it, while the group is busy: stragglers and stuck ranks."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("gpu.util_gpu",)
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 60,
        "severity": "warning",
        "min_nodes": 3,
        "min_group_util": 40.0,
        "level_ratio": 0.5,
        "min_gap": 25.0,
        "corr_window_s": 120,
        "min_corr": 0.2,
        "exit_corr": 0.4,
        "min_group_std": 5.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per node group that has nodes out of step at `window.end`."""
        p = _parse(params)
        util = window.gpu.get("util_gpu")
        n_nodes, t = len(window.nodes), window.bins
        if util is None or n_nodes == 0 or t == 0:
            return []
        levels = node_levels(util, window.gpu_node, n_nodes)
        groups: dict[str | None, list[int]] = {}
        for i, group in enumerate(window.node_groups):
            groups.setdefault(group, []).append(i)
        conditions = []
        for group, rows in groups.items():  # a handful of groups, not bins
            cond = _judge_group(window, group, np.asarray(rows), levels[rows], p)
            if cond is not None:
                conditions.append(cond)
        return conditions


def node_levels(util: np.ndarray, gpu_node: np.ndarray, n_nodes: int) -> np.ndarray:
    """(nodes × bins) mean of the (GPUs × bins) `util` over each node's GPUs; NaN where none reported."""
    t = util.shape[1]
    sums = np.zeros((n_nodes, t))
    counts = np.zeros((n_nodes, t))
    if util.shape[0]:
        # sum each node's run of GPU rows at once (reduceat: several times faster than add.at)
        node_of = np.asarray(gpu_node, dtype=int)
        if np.any(node_of[1:] < node_of[:-1]):  # analyze lists GPUs node by node; sort if not
            order = np.argsort(node_of, kind="stable")
            node_of, util = node_of[order], util[order]
        first = np.flatnonzero(np.r_[True, node_of[1:] != node_of[:-1]])
        finite = np.isfinite(util)
        sums[node_of[first]] = np.add.reduceat(np.where(finite, util, 0.0), first, axis=0)
        counts[node_of[first]] = np.add.reduceat(finite.astype(np.float64), first, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def medians(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware medians of the columns of an (n × T) matrix.

    Returns (m, loo): m (T,) the median of each column, and loo (n × T) the median of each column
    without row i (the "other nodes"). NaN where no value is left. One sort, no loop: dropping the
    row at rank r shifts every sorted index j ≥ r up by one.
    """
    n, t = x.shape
    finite = np.isfinite(x)
    k = finite.sum(axis=0)  # (T,) values per column
    order = np.argsort(x, axis=0, kind="stable")  # NaN sorts last
    s = np.take_along_axis(x, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n)[:, None], (n, t)), axis=0)

    def at(j: np.ndarray) -> np.ndarray:
        return np.take_along_axis(s, np.clip(j, 0, max(n - 1, 0)), axis=0)

    kk = k[None, :]
    m = ((at((kk - 1) // 2) + at(kk // 2)) / 2)[0]
    m[k == 0] = np.nan
    c = kk - finite  # values left without row i (a NaN row removes nothing: its rank is ≥ k)
    lo, hi = (c - 1) // 2, c // 2
    loo = (at(np.where(lo < rank, lo, lo + 1)) + at(np.where(hi < rank, hi, hi + 1))) / 2
    loo[c == 0] = np.nan
    return m, loo


def rolling_corr(x: np.ndarray, y: np.ndarray, w: int, min_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of the rows of x and y over the trailing `w` bins ending at each bin.

    Returns (corr, y_std), both (n × T): NaN where fewer than `min_pairs` bins have both values.
    A row of x that is flat in the window (variance under _FLAT_VAR) has correlation 0 (it follows
    nothing). Cumulative sums make it one pass whatever `w` is.
    """
    n, t = x.shape
    valid = np.isfinite(x) & np.isfinite(y)
    count = valid.sum(axis=1, keepdims=True)
    # centre each row first so the cumulative sums do not cancel catastrophically
    xc = np.where(valid, x, 0.0)
    yc = np.where(valid, y, 0.0)
    xc = np.where(valid, xc - xc.sum(axis=1, keepdims=True) / np.maximum(count, 1), 0.0)
    yc = np.where(valid, yc - yc.sum(axis=1, keepdims=True) / np.maximum(count, 1), 0.0)
    right = np.arange(1, t + 1)
    left = np.maximum(right - w, 0)

    def wsum(a: np.ndarray) -> np.ndarray:
        cs = np.concatenate([np.zeros((n, 1)), np.cumsum(a, axis=1)], axis=1)
        return cs[:, right] - cs[:, left]

    npairs = wsum(valid.astype(float))
    safe = np.maximum(npairs, 1)
    sx, sy = wsum(xc), wsum(yc)
    vx = np.maximum(wsum(xc * xc) - sx * sx / safe, 0.0)
    vy = np.maximum(wsum(yc * yc) - sy * sy / safe, 0.0)
    cov = wsum(xc * yc) - sx * sy / safe
    denom = np.sqrt(vx * vy)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)
    corr = np.where(vx / safe < _FLAT_VAR, 0.0, np.clip(corr, -1.0, 1.0))
    enough = npairs >= min_pairs
    return np.where(enough, corr, np.nan), np.where(enough, np.sqrt(vy / safe), np.nan)


def peer_reference(x: np.ndarray, usable: np.ndarray, min_others: int) -> np.ndarray:
    """(n × T) median of the other rows of x where `usable`, in each column; NaN where fewer than
    `min_others` other rows are usable. A row's own value never enters its reference."""
    xr = np.where(usable, x, np.nan)
    _, loo = medians(xr)
    others = usable.sum(axis=0)[None, :] - usable
    return np.where(others >= min_others, loo, np.nan)


def latch(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """(n × T) bool: True from each bin where `enter` holds up to the next bin where `leave` holds
    (that bin excluded); False where both hold. Vectorised: the last enter and the last leave seen
    so far in each row, carried forward by a running maximum of their bin indices."""
    idx = np.arange(enter.shape[1])
    last_enter = np.maximum.accumulate(np.where(enter, idx, -1), axis=1)
    last_leave = np.maximum.accumulate(np.where(leave, idx, -1), axis=1)
    return last_enter > last_leave


def _judge_group(
    window: Window, group: str | None, rows: np.ndarray, lv: np.ndarray, p: _Params
) -> Condition | None:
    """The group's Condition, or None when fewer than min_nodes report or no node is out of step."""
    n = lv.shape[0]
    finite = np.isfinite(lv)
    reporting = finite[:, -1]  # a node silent in the last bin is excluded, not idle
    if reporting.sum() < p.min_nodes:
        return None
    m, _ = medians(lv)
    m = np.where(finite.sum(axis=0) >= p.min_nodes, m, np.nan)
    with np.errstate(invalid="ignore"):  # NaN compares False: a bin without a reference is not judged
        busy = m >= p.min_group_util
        low = finite & busy[None, :] & (lv < m * p.level_ratio) & (m - lv >= p.min_gap)

    # second pass: follow only the peers the level test left alone. With dropped nodes in it the
    # median of the others steps down when they drop, and healthy nodes, which do not step, look
    # out of step. Bins next to a flagged one go too: a node that drops (or comes back) inside a
    # bin sits half-way there, not low enough to be flagged, and would put a blip in the median.
    near_low = low.copy()
    near_low[:, 1:] |= low[:, :-1]
    near_low[:, :-1] |= low[:, 1:]
    ref = peer_reference(lv, finite & ~near_low, p.min_nodes - 1)
    w = max(2, round(p.corr_window_s / window.step))
    corr, ref_std = rolling_corr(lv, ref, w, min_pairs=max(3, w // 2))
    # the group must be busy over the correlation window, not in each bin: a job whose phases dip
    # below min_group_util for a bin would otherwise restart every run
    busy_w = rolling_mean(m[None, :], w)[0] >= p.min_group_util
    with np.errstate(invalid="ignore"):  # NaN (too few pairs) is not judged
        judged = finite & busy_w[None, :] & (ref_std >= p.min_group_std)
        enter = judged & (corr < p.min_corr)
        leave = ~judged | (corr >= p.exit_corr)
    # hysteresis: a correlation wandering around min_corr would otherwise fire, resolve and fire again
    uncorrelated = latch(enter, leave)
    out = low | uncorrelated

    judged_out = nodes_out(out, lv, window, p.for_s)
    if judged_out is None:
        return None
    flagged, since, span, recent, level = judged_out
    median_now = float(nanmean(m[-span:]))

    names = [window.nodes[i] for i in rows]
    out_idx = [i for i in range(n) if flagged[i]]
    by_level = [i for i in out_idx if low[i, -1]]
    worst = min(out_idx, key=lambda i: (level[i], names[i]))
    worst_level = float(level[worst])
    rep_levels = recent[reporting]
    mean_rep = float(rep_levels.mean())
    values: dict[str, float] = {
        "nodes_out": float(len(out_idx)),
        "nodes_reporting": float(reporting.sum()),
        "worst_level": round(worst_level, 1),
        "group_median": round(median_now, 1),
        "gap": round(median_now - worst_level, 1),
        "cv": round(float(rep_levels.std() / mean_rep), 3) if mean_rep > 0 else 0.0,
    }
    if median_now > 0:
        values["ratio"] = round(worst_level / median_now, 3)
    corr_idx = [i for i in out_idx if uncorrelated[i, -1]]  # elsewhere the correlation means nothing
    if corr_idx:
        values["min_corr"] = round(float(corr[corr_idx, -1].min()), 3)
    for i in out_idx:
        values[f"level:{names[i]}"] = round(float(level[i]), 1)

    where = window.cluster if group is None else f"{window.cluster}/{group}"
    summary = _summary(
        where,
        int(reporting.sum()),
        [(names[i], float(level[i])) for i in by_level],
        [(names[i], float(level[i])) for i in out_idx if i not in by_level],
        median_now,
        values.get("min_corr"),
        p.corr_window_s,
        m[-w:],
    )
    evidence = Evidence(
        title=f"GPU utilisation per node in {where}, last {minutes(window.end - window.start)}",
        unit="%",
        rows=[
            EvidenceRow(
                label=names[i],
                values=downsample(lv[i], EVIDENCE_POINTS),
                level=round(float(level[i]), 1),
                flagged=bool(flagged[i]),
            )
            for i in range(n)
            if reporting[i]
        ],
        reference=round(median_now, 1),
        reference_label="group median",
    )
    return Condition(
        rule=ImbalanceDetector.name,
        subject={"cluster": window.cluster, "node_group": group},
        since=since,
        severity=p.severity,
        summary=summary,
        action=ACTION,
        nodes=[names[i] for i in out_idx],
        values=values,
        evidence=evidence,
    )


def _summary(
    where: str,
    reporting: int,
    low: list[tuple[str, float]],
    uncorrelated: list[tuple[str, float]],
    median: float,
    min_corr: float | None,
    corr_window_s: float,
    recent_median: np.ndarray,
) -> str:
    parts = []
    if low:
        parts.append(
            f"{len(low)} of {reporting} nodes in {where} at {_levels(low)} % GPU utilisation "
            f"while their peers run at {median:.0f} % (median) — {node_list(low)}"
        )
    if uncorrelated:
        swing = recent_median[np.isfinite(recent_median)]
        corr_text = f"correlation {min_corr:.2f}" if min_corr is not None else "no correlation"
        head = f"{len(uncorrelated)} more" if low else f"{len(uncorrelated)} of {reporting} nodes in {where}"
        parts.append(
            f"{head} out of step with their peers ({corr_text} over {minutes(corr_window_s)}; "
            f"at {_levels(uncorrelated)} % while the group median swings "
            f"{swing.min():.0f}–{swing.max():.0f} %) — {node_list(uncorrelated)}"
        )
    return "; ".join(parts)


def _levels(nodes: list[tuple[str, float]]) -> str:
    lo, hi = round(min(v for _, v in nodes)), round(max(v for _, v in nodes))
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def node_list(nodes: list[tuple[str, float]]) -> str:
    names = [name for name, _ in nodes]
    if len(names) <= MAX_NAMED_NODES:
        return ", ".join(names)
    return ", ".join(names[:MAX_NAMED_NODES]) + f" and {len(names) - MAX_NAMED_NODES} more"


def minutes(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60} min" if s >= 60 and s % 60 == 0 else f"{s} s"


def nanmean(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else float("nan")


class NodesOut(NamedTuple):
    flagged: np.ndarray  # (n,) out of step in the last bin
    since: float  # the earliest start of a flagged node's trailing run
    span: int  # bins in for_s
    recent: np.ndarray  # (n,) each node's mean over the last for_s
    level: np.ndarray  # (n,) a flagged node's mean over its run, the others' recent mean


def nodes_out(out: np.ndarray, x: np.ndarray, window: Window, for_s: float) -> NodesOut | None:
    """The nodes `out` (n × T) flags in the last bin with the figures a group alert reports of
    them (imbalance and network), or None when none is flagged."""
    flagged = out[:, -1]
    if not flagged.any():
        return None
    times = window.times
    starts = trailing_run_start(out, times)
    span = max(1, int(np.ceil(for_s / window.step)))
    recent = span_mean(x, times >= times[max(x.shape[1] - span, 0)])
    run_level = span_mean(x, times[None, :] >= np.where(flagged, starts, np.inf)[:, None])
    since = float(np.nanmin(starts[flagged]))
    return NodesOut(flagged, since, span, recent, np.where(flagged, run_level, recent))


def span_mean(x: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Row means of x over the bins where `span` (T,) or (n × T) is True, ignoring NaN."""
    take = np.isfinite(x) & span
    count = take.sum(axis=1)
    total = np.where(take, x, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("imbalance", params, ImbalanceDetector.defaults)
    p = _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        min_nodes=int(r.number("min_nodes", 2, 100_000, integer=True)),
        min_group_util=r.number("min_group_util", 0, 100),
        level_ratio=r.number("level_ratio", 0, 1),
        min_gap=r.number("min_gap", 0, 100),
        corr_window_s=r.number("corr_window_s", 1, 3_600),
        min_corr=r.number("min_corr", -1, 1),
        exit_corr=r.number("exit_corr", -1, 1),
        min_group_std=r.number("min_group_std", 0, 100),
    )
    if p.exit_corr <= p.min_corr:  # without a gap between the two levels there is no hysteresis
        raise ValueError(
            f"imbalance: exit_corr must be above min_corr ({p.min_corr:g}), not {params['exit_corr']!r}"
        )
    return p
