"""Memory nearly full: a GPU's or a host's memory at the brim, or climbing steadily towards it.

Two kinds, one alert per subject (a GPU, or a node's host memory):

- **full**: the level in the last bin (memory in use / total) is at least `full_ratio`. Always
  critical: the next allocation may fail now.
- **trend**: a least-squares line fitted over the last `fit_s` rises, fits well (r² ≥ `min_r2`),
  rests on at least `min_fit_s` of data, and reaches the total within `horizon_s`. Severity from
  the rule's `severity` parameter (warning by default): there is still time to act before the OOM.
  The same kind, sooner: a line over the last `rise_s` only, for a leak in a running job — from a
  level that held (no fall in the `fit_s` before), climbing steadily (in each sixth of the span),
  in a job past its warm-up (its processes all older than `fit_s`). A run it opens began where
  its fit began, so a leak is told within about two minutes of its start, not five.

`since` is the start of the trailing run of bins where either kind held, judged bin by bin: the
line is refitted at every bin over the `fit_s` that ends there. The fits of all rows and all bins
come from one set of cumulative sums (a rolling window costs the same as one fit), so the run
reflects what the detector would have said at each bin, not a guess from the last fit alone.

Why the line must fit well: memory that steps up at a job's start and then stays flat is a step,
and a straight line fitted over a single step explains at most 3p(1−p) ≤ 0.75 of its variance
(p: where the step falls in the span), under `min_r2`; once the plateau fills the span, the slope
is zero. A ramp of a minute or two (weights loading) fits a line better, so the rise must also go
on to the end: over the last quarter of the fit the level must still climb at least half as fast
as over the whole fit. A caching allocator's sawtooth has near-zero slope and little fit over
several teeth. Only a tooth about as long as `fit_s` looks like a leak until it drops, and a
ramp that climbs for five minutes stays pending about 90 s after it levels off.

Defaults: 95 % full (past it the next step's allocation can fail), a 10-minute fit (many training
steps: a per-step leak is a line, a per-step sawtooth averages out) resting on at least 5 minutes,
a 15-minute horizon (time to checkpoint or stop the job), r² ≥ 0.8 (above the 0.75 of a single
step), for_s 60 s (an OOM does not wait). The `severity` parameter applies to the trend kind only;
a full GPU or host is always critical.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample, rolling_mean, trailing_run_start
from gpulse.finding import Evidence, EvidenceRow, Severity

GIB = 1 << 30
EVIDENCE_POINTS = 30
HOST = "host"  # the `gpu` label of a node's host memory: distinct fingerprint, simple labels
# ratio² per bin: a series whose variance over the fit is below this is flat (1e-5 of the total is
# under one MiB on an 80 GiB GPU, the codec's resolution), so its fit says nothing
_FLAT_VAR = 1e-10
# The rise must go on to the end: over the last quarter of the fit (150 s by default) the level must
# still climb at least half as fast as over the whole fit. A ramp that reaches its plateau (weights
# loading, optimiser state created) fits a line well for a while after it stops; this drops it
# within a fraction of the quarter, while a leak, steady by nature, keeps its pace. A quarter, not
# less: over fewer bins the recent slope of a noisy leak wavers and would break the run.
RECENT_SHARE = 0.25
KEEP_PACE = 0.5
# The quick fit over `rise_s` speaks for a rise from a level that held: no fall in the `fit_s` before
# it larger than this share of its own rise. A sawtooth falls by a whole tooth every period, and
# noise on a leaking device is MiB against GiB.
DROP_SHARE = 0.25
# ... and climbs steadily: from each sixth of it to the next by at least this share of a fifth of
# the whole rise (a line: all of it)
SEGMENTS = 6
STEADY_SHARE = 0.25
# and rests on at least this many bins, whatever their width: fewer cannot tell a line from a step
# or two (15 s samples: a 3-minute fit)
QUICK_BINS = 12
# a process first seen this soon after the window's start was already running before it
FIRST_MINUTE_S = 60.0

GPU_ACTION = (
    "Reduce the batch size, or trade compute for memory with activation checkpointing and gradient "
    "accumulation; if usage grows step after step, look for a leak: tensors kept across steps (a loss "
    "summed without .item(), growing caches or lists of outputs) — compare torch.cuda.memory_allocated() "
    "between steps, or record a snapshot with torch.cuda.memory._record_memory_history()."
)
HOST_ACTION = (
    "Find what grows: `ps aux --sort=-rss` on the node. DataLoader workers each hold their own copy of "
    "a Python-object dataset (copy-on-access): use fewer workers, numpy/Arrow or memory-mapped datasets. "
    "Shared memory (/dev/shm) from worker tensors counts as used, page cache does not (it is reclaimable; "
    "`free -g` shows both). If usage grows step after step, look for a leak in the training loop."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    full_ratio: float
    fit_s: float
    min_fit_s: float
    horizon_s: float
    min_r2: float
    rise_s: float


@dataclass(frozen=True)
class RollingFit:
    """Least-squares lines fitted over the trailing bins ending at each bin, all (rows × T).

    slope: change of the level per bin; r2: the fit's coefficient of determination (0 where the
    series is flat); at_end: the line's value at the end of the bin; points: bins with data.
    """

    slope: np.ndarray
    r2: np.ndarray
    at_end: np.ndarray
    points: np.ndarray


def rolling_fit(y: np.ndarray, w: int) -> RollingFit:
    """Fit y ≈ a + b·t over the trailing `w` bins ending at each bin of each row of (rows × T) `y`,
    ignoring NaN. Each bin's value stands at its centre; `at_end` is the line half a bin later.

    Six cumulative sums make it one pass whatever `w` is; rows are centred first so that the sums
    do not cancel. Where fewer than two bins have data, slope and at_end are NaN and r2 is 0.
    """
    return _fit(_running_sums(y), w)


@dataclass(frozen=True)
class _RunningSums:
    """What every rolling fit of one (rows × T) series reads, whatever its width: each row's offset
    (its mean: rows are centred so that the sums do not cancel) and the running sums, along each
    row, of the bins with data, x, y, x², y² and x·y (a zero column first)."""

    offset: np.ndarray  # (rows, 1)
    x: np.ndarray  # (T,) bin centres, centred on the window
    n: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    sxx: np.ndarray
    syy: np.ndarray
    sxy: np.ndarray

    def rows(self, take: np.ndarray) -> _RunningSums:
        """The same sums for the rows `take` only (each row's sums are its own)."""
        return _RunningSums(
            self.offset[take],
            self.x,
            *(a[take] for a in (self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy)),
        )


def _running_sums(y: np.ndarray) -> _RunningSums:
    rows, t = y.shape
    valid = np.isfinite(y)
    count = valid.sum(axis=1, keepdims=True)
    y0 = np.where(valid, y, 0.0)
    offset = y0.sum(axis=1, keepdims=True) / np.maximum(count, 1)
    yc = np.where(valid, y0 - offset, 0.0)
    x = np.arange(t, dtype=np.float64) - (t - 1) / 2  # bin centres, centred on the window
    xv = np.where(valid, x[None, :], 0.0)

    def running(a: np.ndarray) -> np.ndarray:
        out = np.zeros((rows, t + 1))
        np.cumsum(a, axis=1, out=out[:, 1:])
        return out

    return _RunningSums(
        offset,
        x,
        running(valid.astype(np.float64)),
        running(xv),
        running(yc),
        running(xv * xv),
        running(yc * yc),
        running(xv * yc),
    )


def _fit(sums: _RunningSums, w: int, cols: np.ndarray | None = None) -> RollingFit:
    """The rolling fit of width `w` from `sums`, at the bins `cols` (all bins when None): the same
    figures at a bin whichever bins are asked for."""
    t = sums.x.shape[0]
    right = np.arange(1, t + 1) if cols is None else np.arange(1, t + 1)[cols]
    left = np.maximum(right - w, 0)
    x = sums.x[None, :] if cols is None else sums.x[None, cols]

    def wsum(cs: np.ndarray) -> np.ndarray:
        return cs[:, right] - cs[:, left]

    n = wsum(sums.n)
    safe = np.maximum(n, 1)
    sx, sy = wsum(sums.sx), wsum(sums.sy)
    sxx = np.maximum(wsum(sums.sxx) - sx * sx / safe, 0.0)
    syy = np.maximum(wsum(sums.syy) - sy * sy / safe, 0.0)
    sxy = wsum(sums.sxy) - sx * sy / safe
    fits = (n >= 2) & (sxx > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(fits, sxy / np.where(fits, sxx, 1.0), np.nan)
        shaped = fits & (syy / safe >= _FLAT_VAR)  # a flat series has no trend to explain
        r2 = np.where(shaped, sxy * sxy / np.where(shaped, sxx * syy, 1.0), 0.0)
        at_end = sums.offset + sy / safe + slope * (x + 0.5 - sx / safe)
    return RollingFit(slope=slope, r2=np.clip(r2, 0.0, 1.0), at_end=at_end, points=n)


class MemoryPressureDetector:
    """GPU or host memory at or above `full_ratio`, or rising on a straight line that reaches the
    total within `horizon_s`."""

    name: ClassVar[str] = "memory_pressure"
    title: ClassVar[str] = "Memory nearly full"
    description: ClassVar[str] = (
        "GPU or host memory in use at the brim (critical), or rising steadily towards full within the "
        "horizon (warning): the OOM before it happens, and the leak that leads to it."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("gpu.mem_used", "host.mem_used", "processes")
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 60,
        "severity": "warning",
        "full_ratio": 0.95,
        "fit_s": 600,
        "min_fit_s": 300,
        "horizon_s": 900,
        "min_r2": 0.8,
        "rise_s": 90,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per GPU, and per node's host memory, full or heading there at `window.end`.

        GPUs come first (in window order), then host memory (in node order). A bin without data,
        or a device whose total is unknown, is neither full nor rising.
        """
        return judge(window, _parse(params))


def judge(window: Window, p: _Params, *, every_row: bool = False) -> list[Condition]:
    """The detector's conditions. `every_row`: judge every bin of every row, not only of the rows
    that could hold at the last bin (the plain path, which the fast one must equal)."""
    t = window.bins
    g_rows, n_rows = window.gpu_node.shape[0], len(window.nodes)
    if t == 0 or g_rows + n_rows == 0:
        return []
    used = np.concatenate(
        [_matrix(window.gpu.get("mem_used"), g_rows, t), _matrix(window.host.get("mem_used"), n_rows, t)]
    )
    total = np.concatenate([_vector(window.gpu_mem_total, g_rows), _vector(window.host_mem_total, n_rows)])
    known = np.isfinite(total) & (total > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(known[:, None], used / np.where(known, total, 1.0)[:, None], np.nan)

    w = max(2, round(p.fit_s / window.step))
    wr = max(3, round(w * RECENT_SHARE))
    ws = max(QUICK_BINS, round(p.rise_s / window.step))
    sums = _running_sums(level)
    # Only a row in a run at the last bin can be told, and a row's figures are its own: judge
    # every bin only of the rows that could hold at the last one (full, or a rising fit there)
    last = np.array([t - 1])
    long_last, quick_last = _fit(sums, w, last), _fit(sums, ws, last)
    with np.errstate(invalid="ignore"):  # NaN compares False: no data, no alert
        could = (
            (level[:, -1] >= p.full_ratio)
            | ((long_last.slope[:, 0] > 0) & (long_last.r2[:, 0] >= p.min_r2))
            | ((quick_last.slope[:, 0] > 0) & (quick_last.r2[:, 0] >= p.min_r2))
        )
    rows = np.arange(level.shape[0]) if every_row else np.flatnonzero(could)
    if not rows.size:
        return []
    sums, level, used, total = sums.rows(rows), level[rows], used[rows], total[rows]
    settled = _settled_from(window, g_rows, n_rows, p.fit_s)[rows]

    fit = _fit(sums, w)
    recent = _fit(sums, wr)
    slope_s = fit.slope / window.step  # ratio per second
    quick = _fit(sums, ws)
    quick_s = quick.slope / window.step
    # NaN compares False: no data, no alert; a vanishing slope gives an infinite ETA, not an error
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        full = level >= p.full_ratio
        seen = np.isfinite(level) & (fit.points * window.step >= p.min_fit_s)
        eta = (1.0 - fit.at_end) / slope_s
        rising = (
            seen
            & (slope_s > 0)
            & (fit.r2 >= p.min_r2)
            & (eta <= p.horizon_s)
            & (recent.slope >= KEEP_PACE * fit.slope)  # still climbing: not a ramp that levelled off
        )
        quick_eta = (1.0 - quick.at_end) / quick_s
        quick_rise = (
            seen
            & (quick.points >= ws)
            & (quick_s > 0)
            & (quick.r2 >= p.min_r2)
            & (quick_eta <= p.horizon_s)
            # from a level that held: a fall in the lookback is a sawtooth or a job's end
            & (rolling_max(falls(level), w) <= DROP_SHARE * quick.slope * ws)
            & _steady(level, ws)
            # a running job past its warm-up: its first minutes fill memory by design
            & (window.times[None, :] >= settled[:, None])
        )
    quick_only = quick_rise & ~(full | rising)
    starts = trailing_run_start(full | rising | quick_rise, window.times)
    out = []
    for r in np.flatnonzero(np.isfinite(starts)):  # only the rows in a run
        first = round((starts[r] - window.start) / window.step)
        since = float(starts[r])
        if quick_only[r, first]:  # a run the quick fit opened began where that fit's rise began
            since = float(window.times[max(first - ws + 1, 0)])
        trend = None
        if rising[r, -1]:
            trend = _Trend(float(slope_s[r, -1]), float(fit.r2[r, -1]), float(eta[r, -1]))
        elif quick_rise[r, -1]:
            trend = _Trend(float(quick_s[r, -1]), float(quick.r2[r, -1]), float(quick_eta[r, -1]))
        now = _Now(float(used[r, -1]), float(total[r]), bool(full[r, -1]), trend)
        out.append(_condition(window, int(rows[r]), since, level[r], now, p))
    return out


def _steady(level: np.ndarray, w: int) -> np.ndarray:
    """(rows × T) the trailing `w` bins climb from each of their sixths to the next, each step by at
    least STEADY_SHARE of a fair share of the whole: a leak's line, not a step or two that a line
    happens to fit (a staircase has sixths that stay level)."""
    k = max(w // SEGMENTS, 1)
    last = rolling_mean(level, k)

    def before(j: int) -> np.ndarray:  # the mean over the k bins that ended j bins earlier
        out = np.full_like(last, np.nan)
        if j < last.shape[1]:
            out[:, j:] = last[:, : last.shape[1] - j]
        return out

    means = [before(j * k) for j in range(SEGMENTS - 1, 0, -1)] + [last]  # oldest first
    with np.errstate(invalid="ignore"):
        need = STEADY_SHARE * (means[-1] - means[0]) / (SEGMENTS - 1)
        ok = need > 0
        for a, b in itertools.pairwise(means):  # six segments, not samples
            ok &= b - a >= need
    return ok


def falls(level: np.ndarray) -> np.ndarray:
    """(rows × T) how far the level fell into each bin from either of the two before it (0 if it
    did not): a drop spreads over two bins when it happens inside one. NaN counts as no fall."""
    out = np.zeros_like(level)
    with np.errstate(invalid="ignore"):
        for k in (1, 2):
            drop = level[:, :-k] - level[:, k:]
            out[:, k:] = np.fmax(out[:, k:], np.where(np.isfinite(drop), drop, 0.0))
    return out


def rolling_max(a: np.ndarray, w: int) -> np.ndarray:
    """(rows × T) max of the trailing `w` bins ending at each bin: maxima over doubling spans, then
    two overlapping spans cover `w` (log2(w) passes, no (T × w) array)."""

    def widen(m: np.ndarray, k: int) -> np.ndarray:  # max of each bin and the one k bins before it
        out = m.copy()
        if 0 < k < m.shape[1]:
            out[:, k:] = np.maximum(m[:, k:], m[:, :-k])
        return out

    out, span = a, 1
    while span * 2 <= w:
        out, span = widen(out, span), span * 2
    return widen(out, w - span)


def _settled_from(window: Window, g_rows: int, n_rows: int, warm_s: float) -> np.ndarray:
    """Per row (GPUs, then hosts): from when the quick fit may speak: `warm_s` after the latest start
    of a process on the GPU (on any of the node's GPUs for its host memory); never for a row with no
    process (a job's memory, not a device's). A process seen from the window's first minute started
    before it: the window shows no start."""
    started = np.full(g_rows + n_rows, np.inf)
    for g, procs in enumerate(window.gpu_processes[:g_rows]):  # a few processes per GPU, not samples
        if not procs:
            continue
        starts = [q.first_seen if q.first_seen > window.start + FIRST_MINUTE_S else -np.inf for q in procs]
        node = g_rows + int(window.gpu_node[g])
        started[g] = max(starts)
        started[node] = started[g] if started[node] == np.inf else max(started[node], started[g])
    return started + warm_s


@dataclass(frozen=True)
class _Trend:
    slope_s: float  # ratio of the total per second
    r2: float
    eta_s: float  # seconds until the line reaches the total (≤ 0: it already has)


@dataclass(frozen=True)
class _Now:
    """One row's state in the last bin: its level, and its trend when it is heading for full."""

    used: float
    total: float
    full: bool
    trend: _Trend | None


def _condition(window: Window, r: int, since: float, level: np.ndarray, now: _Now, p: _Params) -> Condition:
    g_rows = window.gpu_node.shape[0]
    on_gpu = r < g_rows
    node_row = int(window.gpu_node[r]) if on_gpu else r - g_rows
    node = window.nodes[node_row]
    subject_gpu: str | int
    if on_gpu:
        subject_gpu = int(window.gpu_index[r])
        what, label = f"{node} GPU {subject_gpu}", window.gpu_label(r)
        procs = [q for q in window.gpu_processes[r] if q.last_seen >= since]
        gpus = [label]
    else:
        subject_gpu = HOST
        what, label = f"{node} host", f"{node} host"
        # the node's GPU jobs: the likeliest owners of its host memory, and who can act on it
        rows = np.flatnonzero(window.gpu_node == node_row)
        procs = [q for g in rows for q in window.gpu_processes[int(g)] if q.last_seen >= since]
        gpus = []

    used, total, trend = now.used, now.total, now.trend
    pct = used / total * 100
    parts = [f"{what} memory {used / GIB:.1f} of {total / GIB:.1f} GiB in use ({pct:.0f} %)"]
    if now.full:
        parts[0] += ": nearly full"
    values: dict[str, float] = {
        "mem_used": used,
        "mem_total": total,
        "used_pct": round(pct, 1),
        "full_ratio": p.full_ratio,
        "duration_s": round(float(window.end - since), 1),
    }
    if trend is not None:  # only then: a step's slope or a flat series' fit would mislead
        gib_per_min = trend.slope_s * total * 60 / GIB
        # a slow leak is told only once it is due to fill within the horizon: the text says so, as
        # the alert comes later than the leak's start by design (docs/detectors.md)
        parts.append(
            f"rising {gib_per_min:.2f} GiB/min, full {_eta(trend.eta_s)} at this rate "
            f"(told once full is due within {text.duration(p.horizon_s)})"
        )
        values["slope_gib_per_min"] = round(gib_per_min, 3)
        values["r2"] = round(trend.r2, 3)
        values["eta_s"] = round(max(trend.eta_s, 0.0), 1)
    span = text.duration(window.end - window.start)
    evidence = Evidence(
        title=f"{label}: memory in use (% of {total / GIB:.1f} GiB), last {span}",
        unit="%",
        rows=[  # series, subject, reduce: how a resolve draws it again (gpulse.analyze.recovery)
            EvidenceRow(
                label,
                downsample(level * 100, EVIDENCE_POINTS),
                round(pct, 1),
                True,
                "gpu.mem_pct" if on_gpu else "host.mem_pct",
                label if on_gpu else node,
                "last",
            )
        ],
        reference=round(p.full_ratio * 100, 1),
        reference_label="full line",
    )
    return Condition(
        rule=MemoryPressureDetector.name,
        subject={"cluster": window.cluster, "node": node, "gpu": subject_gpu},
        since=since,
        severity="critical" if now.full else p.severity,
        summary=", ".join(parts),
        action=GPU_ACTION if on_gpu else HOST_ACTION,
        nodes=[node],
        gpus=gpus,
        users=_distinct(q.user for q in procs),
        containers=_distinct(q.container for q in procs),
        values=values,
        evidence=evidence,
    )


def _matrix(m: np.ndarray | None, rows: int, t: int) -> np.ndarray:
    """The metric's (rows × T) matrix as floats, or all NaN when it was not reported."""
    if m is None or m.shape != (rows, t):
        return np.full((rows, t), np.nan)
    return np.asarray(m, dtype=np.float64)


def _vector(v: np.ndarray, rows: int) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) if v.shape == (rows,) else np.full(rows, np.nan)


def _distinct(items: Any) -> list[str]:
    return sorted({i for i in items if i})


def _eta(seconds: float) -> str:
    if seconds < 60:
        return "within a minute"
    return f"in about {text.duration(round(seconds / 60) * 60)}"


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("memory_pressure", params, MemoryPressureDetector.defaults)
    parsed = _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        full_ratio=r.number("full_ratio", 0.5, 1),
        fit_s=r.number("fit_s", 60, 86_400),
        min_fit_s=r.number("min_fit_s", 10, 86_400),
        horizon_s=r.number("horizon_s", 0, 604_800),
        min_r2=r.number("min_r2", 0, 1),
        rise_s=r.number("rise_s", 10, 86_400),
    )
    if parsed.rise_s > parsed.fit_s:  # the quick fit looks back over fit_s for what came before the rise
        limit = f"must not exceed fit_s ({parsed.fit_s:g})"
        raise ValueError(f"memory_pressure: rise_s {limit}, not {params['rise_s']!r}")
    if parsed.min_fit_s > parsed.fit_s:  # the fit could never rest on enough data: the trend kind is off
        limit = f"must not exceed fit_s ({parsed.fit_s:g})"
        raise ValueError(f"memory_pressure: min_fit_s {limit}, not {params['min_fit_s']!r}")
    return parsed
