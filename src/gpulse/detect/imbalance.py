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

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample, rolling_mean, trailing_run_start
from gpulse.detect.jobs import Job, JobsMode, find_jobs, job_place, job_subject, label_of, parse_mode, who
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30
MAX_NAMED_NODES = 8  # keep the summary one line on a large cluster; the evidence lists them all
# %²: a node series moving less than a point (std < 1) has no shape to correlate, so its correlation
# is 0. NVML reports whole percents: a node held at 75 % reads 75 with a stray 76, and one stray
# reading at a peak of its group's swing correlates 0.4 by chance.
_FLAT_VAR = 1.0
# points: a node of a steady job varies by a few points between its busy bins (NVML noise, data
# batches); a replica serving its own requests swings by tens
STEADY_STD = 10.0

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
    jobs: JobsMode
    slow_ratio: float
    slow_exit_ratio: float
    slow_window_s: float
    sync_corr: float


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
        "jobs": "auto",
        "slow_ratio": 0.7,
        "slow_exit_ratio": 0.8,
        "slow_window_s": 180,
        "sync_corr": 0.5,
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
        # a 1-node job has no peers to be judged against
        jobs = [job for job in find_jobs(window, p.jobs) if len(job.rows) >= p.min_nodes]
        # jobs of one size are judged together, as one (jobs × nodes × bins) array: a large cluster
        # runs many copies of a few shapes of job, and each job's figures are its own whatever else
        # is in the array
        by_size: dict[int, list[int]] = {}
        for j, job in enumerate(jobs):
            by_size.setdefault(len(job.rows), []).append(j)
        found: dict[int, Condition | None] = {}
        for members in by_size.values():
            lv = np.stack([levels[list(jobs[j].rows)] for j in members])
            tests = _tests(lv, window.step, p)
            for k, j in enumerate(members):
                found[j] = _judge_group(window, jobs[j], lv[k], p, tests.of(k))
        return [c for j in range(len(jobs)) if (c := found[j]) is not None]


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
    """NaN-aware medians of the columns of an (n × T) matrix (or of each of a stack of them,
    (... × n × T): every figure of one matrix is what it alone gives).

    Returns (m, loo): m (T,) the median of each column, and loo (n × T) the median of each column
    without row i (the "other nodes"). NaN where no value is left. One sort, no loop: dropping the
    row at rank r shifts every sorted index j ≥ r up by one.
    """
    n = x.shape[-2]
    finite = np.isfinite(x)
    k = finite.sum(axis=-2)  # (T,) values per column
    order = np.argsort(x, axis=-2, kind="stable")  # NaN sorts last
    s = np.take_along_axis(x, order, axis=-2)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n)[:, None], x.shape), axis=-2)

    def at(j: np.ndarray) -> np.ndarray:
        return np.take_along_axis(s, np.clip(j, 0, max(n - 1, 0)), axis=-2)

    kk = k[..., None, :]
    m = ((at((kk - 1) // 2) + at(kk // 2)) / 2)[..., 0, :]
    m[k == 0] = np.nan
    c = kk - finite  # values left without row i (a NaN row removes nothing: its rank is ≥ k)
    lo, hi = (c - 1) // 2, c // 2
    loo = (at(np.where(lo < rank, lo, lo + 1)) + at(np.where(hi < rank, hi, hi + 1))) / 2
    loo[c == 0] = np.nan
    return m, loo


def rolling_corr(x: np.ndarray, y: np.ndarray, w: int, min_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of the rows of x and y over the trailing `w` bins ending at each bin
    (rows along the last axis but one: a stack of matrices is a stack of rows).

    Returns (corr, y_std), both (n × T): NaN where fewer than `min_pairs` bins have both values.
    A row of x that is flat in the window (variance under _FLAT_VAR) has correlation 0 (it follows
    nothing). Cumulative sums make it one pass whatever `w` is.
    """
    t = x.shape[-1]
    valid = np.isfinite(x) & np.isfinite(y)
    count = valid.sum(axis=-1, keepdims=True)
    # centre each row first so the cumulative sums do not cancel catastrophically
    xc = np.where(valid, x, 0.0)
    yc = np.where(valid, y, 0.0)
    xc = np.where(valid, xc - xc.sum(axis=-1, keepdims=True) / np.maximum(count, 1), 0.0)
    yc = np.where(valid, yc - yc.sum(axis=-1, keepdims=True) / np.maximum(count, 1), 0.0)
    right = np.arange(1, t + 1)
    left = np.maximum(right - w, 0)

    def wsum(a: np.ndarray) -> np.ndarray:
        cs = np.concatenate([np.zeros((*a.shape[:-1], 1)), np.cumsum(a, axis=-1)], axis=-1)
        return cs[..., right] - cs[..., left]

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
    others = usable.sum(axis=-2)[..., None, :] - usable
    return np.where(others >= min_others, loo, np.nan)


def latch(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """(n × T) bool: True from each bin where `enter` holds up to the next bin where `leave` holds
    (that bin excluded); False where both hold. Vectorised: the last enter and the last leave seen
    so far in each row, carried forward by a running maximum of their bin indices."""
    idx = np.arange(enter.shape[-1])
    last_enter = np.maximum.accumulate(np.where(enter, idx, -1), axis=-1)
    last_leave = np.maximum.accumulate(np.where(leave, idx, -1), axis=-1)
    return last_enter > last_leave


class _Tests(NamedTuple):
    """What the tests found for each of a stack of jobs of one size (jobs × nodes × bins, jobs × bins)."""

    m: np.ndarray  # the group median per bin (NaN under min_nodes values)
    busy: np.ndarray  # the group median at min_group_util or more
    low: np.ndarray
    slow: np.ndarray
    uncorrelated: np.ndarray  # the correlation test's latch (only a synchronous job reads it)
    corr: np.ndarray
    pace: list[Pace]
    w: int  # bins of the correlation window

    def of(self, k: int) -> _Tests:
        """The k-th job's (nodes × bins) figures; the correlation test's only where it applies."""
        sync = self.pace[k] == "synchronous"
        return _Tests(
            self.m[k],
            self.busy[k],
            self.low[k],
            self.slow[k],
            self.uncorrelated[k] if sync else np.zeros_like(self.low[k]),
            self.corr[k] if sync else np.full(self.low[k].shape, np.nan),
            [self.pace[k]],
            self.w,
        )


def _tests(lv: np.ndarray, step: float, p: _Params) -> _Tests:
    """The level, slow and correlation tests of a stack of jobs (jobs × nodes × bins) of one size."""
    finite = np.isfinite(lv)
    m, _ = medians(lv)
    m = np.where(finite.sum(axis=-2) >= p.min_nodes, m, np.nan)
    with np.errstate(invalid="ignore"):  # NaN compares False: a bin without a reference is not judged
        busy = m >= p.min_group_util
        mm = m[:, None, :]
        low = finite & busy[:, None, :] & (lv < mm * p.level_ratio) & (mm - lv >= p.min_gap)
    pace = _paces(lv, finite, busy, p)
    slow = _slow(lv, finite, busy, step, p)

    # second pass: follow only the peers the level tests left alone. With dropped nodes in it the
    # median of the others steps down when they drop, and healthy nodes, which do not step, look
    # out of step. Bins next to a flagged one go too: a node that drops (or comes back) inside a
    # bin sits half-way there, not low enough to be flagged, and would put a blip in the median.
    near_low = low | slow
    near_low[..., 1:] |= low[..., :-1]
    near_low[..., :-1] |= low[..., 1:]
    w = max(2, round(p.corr_window_s / step))
    uncorrelated = np.zeros_like(low)
    corr = np.full(lv.shape, np.nan)
    if p.min_corr > -1 and "synchronous" in pace:
        ref = peer_reference(lv, finite & ~near_low, p.min_nodes - 1)
        corr, ref_std = rolling_corr(lv, ref, w, min_pairs=max(3, w // 2))
        # the group must be busy over the correlation window, not in each bin: a job whose phases
        # dip below min_group_util for a bin would otherwise restart every run
        busy_w = rolling_mean(m, w) >= p.min_group_util
        with np.errstate(invalid="ignore"):  # NaN (too few pairs) is not judged
            judged = finite & busy_w[:, None, :] & (ref_std >= p.min_group_std)
            enter = judged & (corr < p.min_corr)
            leave = ~judged | (corr >= p.exit_corr)
        # hysteresis: a correlation wandering around min_corr would otherwise fire, resolve, fire again
        uncorrelated = latch(enter, leave)
    return _Tests(m, busy, low, slow, uncorrelated, corr, pace, w)


def _judge_group(
    window: Window, job: Job, lv: np.ndarray, p: _Params, tests: _Tests | None = None
) -> Condition | None:
    """The job's Condition, or None when fewer than min_nodes report or no node is out of step.
    `tests`: the job's (`_tests(...).of(k)`), else they are run on it alone."""
    rows = np.asarray(job.rows)
    n = lv.shape[0]
    finite = np.isfinite(lv)
    reporting = finite[:, -1]  # a node silent in the last bin is excluded, not idle
    if reporting.sum() < p.min_nodes:
        return None
    if tests is None:
        tests = _tests(lv[None], window.step, p).of(0)
    if tests.pace[0] == "independent":  # each node's load is its own: no node is another's measure
        return None
    m, busy, low, slow, uncorrelated, corr, _, w = tests
    out = low | slow | uncorrelated

    judged_out = nodes_out(out, lv, window, p.for_s)
    if judged_out is None:
        return None
    flagged, since, _, _, _ = judged_out
    # the figures: every level a median over the span the rule judged (the flagged run, at most
    # the smoothing window), over the bins the job was busy in; the peers are the unflagged nodes
    times = window.times
    # a slow node was judged on the whole smoothing window, a dropped or shapeless one on its run
    smoothed = bool((slow[:, -1] & flagged & ~low[:, -1] & ~uncorrelated[:, -1]).any())
    span_start = window.end - p.slow_window_s if smoothed else max(since, window.end - p.slow_window_s)
    span = (times >= span_start) & busy
    if not span.any():
        span = times >= times[-1]
    peers, _ = medians(np.where(flagged[:, None], np.nan, lv))
    level = _span_median(lv, span)
    peer_med = float(nanmedian_last(peers[span]))
    peer_level = round(peer_med if np.isfinite(peer_med) else 0.0, 1)
    paused = bool(((times >= span_start) & ~busy).any())

    names = [window.nodes[i] for i in rows]
    out_idx = [i for i in range(n) if flagged[i]]
    by_level = [i for i in out_idx if low[i, -1] or slow[i, -1]]
    rounded = {i: round(float(level[i]), 1) for i in out_idx}
    worst = min(out_idx, key=lambda i: (rounded[i], names[i]))
    rep_levels = level[reporting & np.isfinite(level)]
    mean_rep = float(rep_levels.mean()) if rep_levels.size else 0.0
    values: dict[str, float] = {
        "nodes_out": float(len(out_idx)),
        "nodes_reporting": float(reporting.sum()),
        "worst_level": rounded[worst],
        "group_median": peer_level,
        "gap": round(peer_level - rounded[worst], 1),
        "cv": round(float(rep_levels.std() / mean_rep), 3) if mean_rep > 0 else 0.0,
        "span_s": round(float(window.end - span_start), 1),
        "busy_s": round(float(span.sum() * window.step), 1),
    }
    if peer_level > 0:
        values["ratio"] = round(rounded[worst] / peer_level, 3)
    corr_idx = [i for i in out_idx if uncorrelated[i, -1]]  # elsewhere the correlation means nothing
    if corr_idx:
        values["min_corr"] = round(float(corr[corr_idx, -1].min()), 3)
    for i in out_idx:
        values[f"level:{names[i]}"] = rounded[i]

    where = job_place(window.cluster, job)
    summary = _summary(
        where,
        int(reporting.sum()),
        [(names[i], rounded[i]) for i in by_level],
        [(names[i], rounded[i]) for i in out_idx if i not in by_level],
        peer_level,
        f"the last {text.duration(values['span_s'])}{', pauses left out' if paused else ''}",
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
                level=round(float(level[i]), 1) if np.isfinite(level[i]) else 0.0,
                flagged=bool(flagged[i]),
                series="node.util_gpu",  # how a resolve draws it again (gpulse.analyze.recovery)
                subject=names[i],
                reduce="median",
            )
            for i in range(n)
            if reporting[i]
        ],
        reference=peer_level,
        reference_label="peers' median",
        level_s=values["span_s"],
        reference_of="peers",
    )
    users, containers = who(window, [int(rows[i]) for i in out_idx])
    return Condition(
        rule=ImbalanceDetector.name,
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


def _slow(lv: np.ndarray, finite: np.ndarray, busy: np.ndarray, step: float, p: _Params) -> np.ndarray:
    """(n × T) bool: nodes persistently at a fraction of their peers. Each node's level and its
    peers' are medians over the trailing `slow_window_s` of the bins in which the job was busy
    (a whole-job pause is no one's slowness), so alternating bins and pauses do not move them;
    enter at ≤ slow_ratio of the peers, leave at ≥ slow_exit_ratio over the last for_s (at least
    a quarter of the window), or when the job was busy in under a third of the window."""
    if p.slow_ratio <= 0 or lv.shape[-1] == 0:
        return np.zeros(lv.shape, dtype=bool)
    w = max(1, round(p.slow_window_s / step))
    x = np.where(busy[..., None, :] & finite, lv, np.nan)
    peers = peer_reference(lv, finite & busy[..., None, :], p.min_nodes - 1)
    own, count = _rolling_median(x, w)
    ref, _ = _rolling_median(peers, w)
    # leaving reads the last for_s (at least a quarter of the window): a node that recovered is
    # let go within half a minute or so, while entering takes half the window's bins (a dip of a
    # minute is not a slow node)
    recent, _ = _rolling_median(x, max(1, round(max(p.for_s, p.slow_window_s / 4) / step)))
    enough = count >= max(1, w // 3)
    with np.errstate(invalid="ignore"):
        judged = enough & finite & (ref >= p.min_group_util)
        enter = judged & (own <= p.slow_ratio * ref)
        # a job busy for under a third of the window (it stopped, or most of it went idle) says
        # nothing of anyone's pace: let go
        leave = ~judged | (recent >= p.slow_exit_ratio * ref)
    return latch(enter, leave)


def _rolling_median(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(n × T) NaN-aware median of each row's trailing `w` bins, and how many finite values it took
    (rows along the last axis but one)."""
    padded = np.concatenate([np.full((*x.shape[:-1], w - 1), np.nan), x], axis=-1)
    view = np.lib.stride_tricks.sliding_window_view(padded, w, axis=-1)  # (n, T, w), no copy
    return nanmedian_last(view), np.isfinite(view).sum(axis=-1)


def nanmedian_last(a: np.ndarray) -> np.ndarray:
    """The median of the finite values along the last axis, NaN where there are none. One sort
    (NaN sorts last): numpy's nanmedian falls back to masked arrays and is ~50× slower here."""
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    s = np.sort(a, axis=-1)
    k = np.isfinite(a).sum(axis=-1, keepdims=True)
    lo = np.take_along_axis(s, np.maximum((k - 1) // 2, 0), axis=-1)
    hi = np.take_along_axis(s, np.minimum(k // 2, a.shape[-1] - 1), axis=-1)
    med = ((lo + hi) / 2)[..., 0]
    return np.where(k[..., 0] > 0, med, np.nan)


Pace = Literal["synchronous", "steady", "independent"]


def _paces(lv: np.ndarray, finite: np.ndarray, busy: np.ndarray, p: _Params) -> list[Pace]:
    """`_pace` of each of a stack of jobs (jobs × nodes × bins)."""
    t = lv.shape[-1]
    ref = peer_reference(lv, finite, p.min_nodes - 1)
    corr, _ = rolling_corr(lv, ref, t, min_pairs=max(3, t // 2))
    return [_pace(lv[k], finite[k], busy[k], corr[k, :, -1], p) for k in range(lv.shape[0])]


def _pace(lv: np.ndarray, finite: np.ndarray, busy: np.ndarray, last: np.ndarray, p: _Params) -> Pace:
    """How the job's nodes move over the window, which says which tests mean something there:

    - "synchronous": the median node's correlation with the median of its peers is at least
      `sync_corr` (ranks that wait for each other: a shared swing, shared pauses). Every test.
    - "steady": not so, and the median node varies little over the busy bins (std under
      STEADY_STD points): a training job at a flat level has no shape to follow, so the
      correlation test is off, but a rank that drops is plain to see.
    - "independent": neither (a serving pool behind one balancer, bursty inference): each node's
      load is its own, a replica's lull of minutes is its traffic, and a slower replica is given
      less of it: not judged at all (idle_held, silent_node and memory_pressure still watch it).

    `last`: each node's correlation with the median of its peers over the whole window (`_paces`).
    """
    last = last[np.isfinite(last)]
    if last.size and float(np.median(last)) >= p.sync_corr:
        return "synchronous"
    on = np.where(finite & busy[None, :], lv, np.nan)
    enough = np.isfinite(on).sum(axis=1) >= 3
    if not enough.any():
        return "steady"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = float(np.median(np.nanstd(on[enough], axis=1)))
    return "steady" if spread < STEADY_STD else "independent"


def _span_median(x: np.ndarray, span: np.ndarray) -> np.ndarray:
    """(n,) median of each row over the bins where `span` (T,) holds, ignoring NaN."""
    sub = x[:, span]
    out = np.full(x.shape[0], np.nan)
    ok = np.isfinite(sub).any(axis=1)
    if ok.any():
        out[ok] = nanmedian_last(sub[ok])
    return out


def _summary(
    where: str,
    reporting: int,
    low: list[tuple[str, float]],
    uncorrelated: list[tuple[str, float]],
    median: float,
    over: str,
    min_corr: float | None,
    corr_window_s: float,
    recent_median: np.ndarray,
) -> str:
    parts = []
    if low:
        parts.append(
            f"{len(low)} of {reporting} nodes in {where} at {_levels(low)} % GPU utilisation "
            f"while their peers run at {median:.0f} % (median over {over}) — {node_list(low)}"
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
        jobs=parse_mode("imbalance", r.get("jobs")),
        slow_ratio=r.number("slow_ratio", 0, 1),
        slow_exit_ratio=r.number("slow_exit_ratio", 0, 1),
        slow_window_s=r.number("slow_window_s", 5, 3_600),
        sync_corr=r.number("sync_corr", -1, 1),
    )
    if p.exit_corr <= p.min_corr:  # without a gap between the two levels there is no hysteresis
        raise ValueError(
            f"imbalance: exit_corr must be above min_corr ({p.min_corr:g}), not {params['exit_corr']!r}"
        )
    if p.slow_ratio > 0 and p.slow_exit_ratio <= p.slow_ratio:
        raise ValueError(
            f"imbalance: slow_exit_ratio must be above slow_ratio ({p.slow_ratio:g}), "
            f"not {params['slow_exit_ratio']!r}"
        )
    return p
