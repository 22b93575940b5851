"""A resolve shows the recovery: its evidence re-drawn from the window of the run that resolved it.

A firing finding's evidence says how to draw each row again (`EvidenceRow.series`, `subject`,
`reduce`, and `Evidence.level_s`, `reference_of`: set by the detectors). When analyze resolves
an alert, `recovered` draws the same rows from the current window: the current values over the
current span, each level the same reduction over the span since the fault ended (at most
`level_s`), the peers' reference re-computed with them, `flagged` kept so the reader sees which
row was at fault, and `Finding.ended` set, so a chart shades the fault span and shows the
recovery after it.

Where that cannot be done truthfully (a row without a recipe, a series the window lacks, or a
flagged row with no data since the fault ended: its node is silent, the window has moved on),
the old picture stays as it was, `recovery` False, `recovery_note` says why ("no_data",
"no_recipe", or "error" when drawing failed), and the message says the picture is from while it
fired (and that no data came since the fault last held only when that is the cause). No figure
is ever made up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gpulse.alerting.state import Decision
from gpulse.detect.base import Window, downsample
from gpulse.detect.network import MB, node_throughput
from gpulse.finding import Evidence, EvidenceRow, Finding

logger = logging.getLogger(__name__)
EVIDENCE_POINTS = 30  # as the detectors draw them
GIB = float(1 << 30)
_GPU = re.compile(r"(?P<node>.+)/(?P<index>\d+)")

Series = Callable[[Window, str], "np.ndarray | None"]


def _node_row(window: Window, subject: str) -> int | None:
    return window.nodes.index(subject) if subject in window.nodes else None


def _gpu_row(window: Window, subject: str) -> int | None:
    """The GPU row of "node/index" in the window, None when the window has no such GPU."""
    m = _GPU.fullmatch(subject)
    node = _node_row(window, m["node"]) if m else None
    if m is None or node is None:
        return None
    hits = np.flatnonzero((window.gpu_node == node) & (window.gpu_index == int(m["index"])))
    return int(hits[0]) if hits.size else None


def _mig_row(window: Window, subject: str) -> int | None:
    return next((i for i, inst in enumerate(window.mig) if inst.uuid == subject), None)


def _gpu(metric: str) -> Series:
    def series(window: Window, subject: str) -> np.ndarray | None:
        g, matrix = _gpu_row(window, subject), window.gpu.get(metric)
        return None if g is None or matrix is None else matrix[g]

    return series


def _ratio(used: np.ndarray | None, total: float, unit: float) -> np.ndarray | None:
    """`used` in % of `total` (unit 100 / total), or in GiB (`unit` GIB) where no total is needed."""
    if used is None:
        return None
    if unit == GIB:
        return used / GIB
    return used / total * 100 if np.isfinite(total) and total > 0 else None


def _gpu_mem(unit: float) -> Series:
    def series(window: Window, subject: str) -> np.ndarray | None:
        g, used = _gpu_row(window, subject), window.gpu.get("mem_used")
        return None if g is None or used is None else _ratio(used[g], float(window.gpu_mem_total[g]), unit)

    return series


def _mig_mem(unit: float) -> Series:
    def series(window: Window, subject: str) -> np.ndarray | None:
        m, used = _mig_row(window, subject), window.mig_metrics.get("mem_used")
        return None if m is None or used is None else _ratio(used[m], float(window.mig[m].mem_total), unit)

    return series


def _mig_util(window: Window, subject: str) -> np.ndarray | None:
    m, util = _mig_row(window, subject), window.mig_metrics.get("util_sm")
    return None if m is None or util is None else util[m]


def _host_mem_pct(window: Window, subject: str) -> np.ndarray | None:
    n, used = _node_row(window, subject), window.host.get("mem_used")
    return None if n is None or used is None else _ratio(used[n], float(window.host_mem_total[n]), 100.0)


def _node_util(window: Window, subject: str) -> np.ndarray | None:
    """The mean of the node's GPUs' utilisation in each bin (NaN where none reported)."""
    n, util = _node_row(window, subject), window.gpu.get("util_gpu")
    if n is None or util is None:
        return None
    part = util[window.gpu_node == n]
    counts = np.isfinite(part).sum(axis=0)
    sums = np.where(np.isfinite(part), part, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _gpu_throttled_pct(window: Window, subject: str) -> np.ndarray | None:
    """% of each bin throttled, heat or power brake, whichever is higher (as throttling draws it)."""
    g = _gpu_row(window, subject)
    if g is None:
        return None
    nan = np.full(window.bins, np.nan)
    thermal, power = window.gpu.get("throttle_thermal"), window.gpu.get("throttle_power")
    return np.fmax(thermal[g] if thermal is not None else nan, power[g] if power is not None else nan) * 100


def _node_net_mbps(window: Window, subject: str) -> np.ndarray | None:
    """The node's traffic as network sums it (`node_throughput`), over that node's row alone."""
    n = _node_row(window, subject)
    if n is None:
        return None
    x = node_throughput(replace(window, host={k: v[n : n + 1] for k, v in window.host.items()}))
    return None if x is None else x[0] / MB


# Every series a detector may name in `EvidenceRow.series`, in the row's unit. A test holds each
# detector's firing picture equal to what these draw from the same window.
SERIES: dict[str, Series] = {
    "gpu.util_gpu": _gpu("util_gpu"),
    "gpu.temp_c": _gpu("temp_c"),
    "gpu.throttled_pct": _gpu_throttled_pct,
    "gpu.mem_pct": _gpu_mem(100.0),
    "gpu.mem_gib": _gpu_mem(GIB),
    "mig.util_sm": _mig_util,
    "mig.mem_pct": _mig_mem(100.0),
    "mig.mem_gib": _mig_mem(GIB),
    "node.util_gpu": _node_util,
    "node.net_mbps": _node_net_mbps,
    "host.mem_pct": _host_mem_pct,
}


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


REDUCE: dict[str, Callable[[np.ndarray], float]] = {  # each on a non-empty array of finite values
    "mean": lambda x: float(x.mean()),
    "median": lambda x: float(np.median(x)),
    "last": lambda x: float(x[-1]),
}


def draw(ev: Evidence, window: Window) -> list[np.ndarray] | None:
    """Each row's series in `window` (its unit, one value per bin), or None when a row cannot be
    drawn from it (no recipe, a series unknown or missing, its subject not in the window)."""
    out = []
    for r in ev.rows:
        fn = SERIES.get(r.series) if r.series is not None else None
        if fn is None or r.subject is None or r.reduce not in REDUCE:
            return None
        x = fn(window, r.subject)
        if x is None:
            return None
        out.append(np.asarray(x, dtype=float))
    return out


def redraw(ev: Evidence, window: Window, ended: float) -> Evidence | None:
    """`ev` drawn again from `window`, the levels taken over the bins that start at or after
    `ended` (and within the last `level_s`); None when that cannot be done truthfully (see the
    module's docstring). Rows not flagged with no data since `ended` are left out."""
    out = _redraw(ev, window, ended)
    return out if isinstance(out, Evidence) else None


def _redraw(ev: Evidence, window: Window, ended: float) -> Evidence | str:
    """`redraw`, or why it cannot be done: an `Evidence.recovery_note`."""
    drawn = draw(ev, window) if ev.rows else None
    if drawn is None:
        return "no_recipe"
    if window.bins == 0:
        return "no_data"
    times = window.times
    lo = ended if ev.level_s is None else max(ended, window.end - ev.level_s)
    span = times >= lo
    rows: list[EvidenceRow] = []
    kept: list[np.ndarray] = []
    for r, x in zip(ev.rows, drawn, strict=True):
        recent = _finite(x[span])
        if recent.size == 0:
            if r.flagged:  # the row the alert was about says nothing since: no recovery to show
                return "no_data"
            continue
        level = round(REDUCE[str(r.reduce)](recent), 1)
        rows.append(replace(r, values=downsample(x, EVIDENCE_POINTS), level=level))
        kept.append(x)
    reference = ev.reference
    if ev.reference_of == "peers":
        reference = _peers([x for r, x in zip(rows, kept, strict=True) if not r.flagged], span)
    top = max([ev.scale_max, *(r.level for r in rows), *([reference] if reference is not None else [])])
    return replace(
        ev, rows=rows, reference=reference, start=window.start, end=window.end, recovery=True, scale_max=top
    )


def _peers(series: list[np.ndarray], span: np.ndarray) -> float | None:
    """The median over `span` of the per-bin median of the rows not flagged (as imbalance and
    network judge peers); None when there are none or they have no data there."""
    if not series:
        return None
    stacked = np.stack(series)[:, span]
    ok = np.isfinite(stacked).any(axis=0)
    if not ok.any():
        return None
    return round(float(np.median(np.nanmedian(stacked[:, ok], axis=0))), 1)


def recovered(finding: Finding, window: Window, ended: float) -> Finding:
    """The resolved `finding` with `ended` set and its evidence re-drawn from `window` where that
    can be done truthfully (else the evidence it fired with, `recovery` False and `recovery_note`
    saying why)."""
    ev = finding.evidence
    if ev is None:
        return replace(finding, ended=ended)
    new = _redraw(ev, window, ended)
    return replace(
        finding, ended=ended, evidence=new if isinstance(new, Evidence) else replace(ev, recovery_note=new)
    )


def redrawer(window: Window) -> Callable[[Decision], Decision]:
    """For `settle`: a decision that resolves an alert gets its resolved finding `recovered` from
    `window`; every other decision passes as it is. The fault ended at the last run where the
    condition held: the record's `finding.at`."""

    def hook(d: Decision) -> Decision:
        out = d.record.outbox
        if d.record.state != "resolved" or out is None or out.state != "resolved" or out.ended is not None:
            return d
        ended = d.record.finding.at
        try:
            told = recovered(out, window, ended)
        except Exception:  # a picture never stands in the way of a resolve: it goes with the old one
            logger.exception("recovery not drawn", extra={"cluster": window.cluster, "rule": out.rule})
            ev = out.evidence
            told = replace(out, ended=ended, evidence=ev and replace(ev, recovery_note="error"))
        return replace(d, record=replace(d.record, outbox=told))

    return hook
