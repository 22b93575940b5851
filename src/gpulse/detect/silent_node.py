"""Silent node: a node the cluster's registry knows whose shipper has stopped reporting.

A node that goes quiet is the one failure every other detector misses: with no data, nothing
is idle, nothing is hot, nothing is out of step (missing data is never evidence elsewhere).
This detector alone reads the registry, which lists every node that ever reported, with the
time of its latest sample, whether or not it appears in the window's data.

A node is silent when its latest sample is more than `silent_s` older than the window's end,
and no more than `forget_s` older: a node decommissioned without being removed from the
registry stops alerting after a day. analyze drops every other condition about a silent node
(`gpulse.analyze.inhibit`); this module does not repeat that.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30

ACTION = (
    "Check the node is up: ping or ssh it, or open its BMC console if it does not answer. If it is up, "
    "check the shipper: `systemctl status gpulse-shipper` and `journalctl -u gpulse-shipper -n 100` "
    "(it keeps unsent batches in its disk spool and sends them once it can). Then its clock "
    "(`timedatectl`: a clock off by more than 5 minutes gets every batch refused) and its network "
    "path to the API (DNS, proxy, firewall: `curl -sI` the API's URL from the node)."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    silent_s: float
    forget_s: float


class SilentNodeDetector:
    """Registered nodes whose latest report is between `silent_s` and `forget_s` old."""

    name: ClassVar[str] = "silent_node"
    title: ClassVar[str] = "Node went silent"
    description: ClassVar[str] = (
        "A node of the cluster's registry that has sent nothing for longer than a few batch "
        "intervals: the node, its shipper, its clock or its network path to the API is down."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("registry",)
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 0,
        "severity": "critical",
        "silent_s": 180,
        "forget_s": 86_400,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per registered node whose last report is more than `silent_s` and at most
        `forget_s` before `window.clock` (the wall clock); since = that last report."""
        p = _parse(params)
        if not window.registry:
            return []
        last: dict[str, float] = {}
        for entry in window.registry:  # one entry per node; keep the latest if a node appears twice
            seen = float(entry.last_seen)
            if np.isfinite(seen) and seen >= last.get(entry.node, -np.inf):
                last[entry.node] = seen
        names = sorted(last)
        seen_at = np.array([last[n] for n in names], dtype=float)
        age = window.clock - seen_at
        silent = (age > p.silent_s) & (age <= p.forget_s)
        return [_condition(window, names[i], float(seen_at[i]), p) for i in np.flatnonzero(silent)]


def _condition(window: Window, node: str, last_seen: float, p: _Params) -> Condition:
    quiet_for = window.clock - last_seen
    last = _clock(last_seen, window.clock)
    summary = f"{node} has sent nothing for {text.duration(quiet_for)} (last report {last})"
    return Condition(
        rule=SilentNodeDetector.name,
        subject={"cluster": window.cluster, "node": node},
        since=last_seen,
        severity=p.severity,
        summary=summary,
        action=ACTION,
        nodes=[node],
        values={
            "silent_for_s": round(quiet_for, 1),
            "last_seen": last_seen,
            "silent_s": p.silent_s,
            "forget_s": p.forget_s,
        },
        evidence=_evidence(window, node, last_seen),
    )


def _clock(t: float, now: float) -> str:
    """'12:04:10 UTC', with the date when it is not `now`'s day."""
    at = dt.datetime.fromtimestamp(t, dt.UTC)
    same_day = at.date() == dt.datetime.fromtimestamp(now, dt.UTC).date()
    return at.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC")


def _evidence(window: Window, node: str, last_seen: float) -> Evidence | None:
    """The node's GPU level over the window, where its last data still lies in the window: it shows
    what it was doing when it stopped. None when the window holds nothing of it."""
    if node not in window.nodes:
        return None
    util = window.gpu.get("util_gpu")
    rows = np.flatnonzero(window.gpu_node == window.nodes.index(node))
    if util is None or rows.size == 0 or util.shape[1] == 0:
        return None
    part = util[rows]
    counts = np.isfinite(part).sum(axis=0)
    if not counts.any():
        return None
    level = np.where(
        counts > 0, np.where(np.isfinite(part), part, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan
    )
    last_level = float(level[np.flatnonzero(counts)[-1]])
    return Evidence(
        title=f"{node}: mean GPU utilisation (%), last {text.duration(window.end - window.start)}",
        unit="%",
        rows=[EvidenceRow(node, downsample(level, EVIDENCE_POINTS), round(last_level, 1), True)],
    )


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader(SilentNodeDetector.name, params, SilentNodeDetector.defaults)
    p = _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        silent_s=r.number("silent_s", 10, 7 * 86_400),
        forget_s=r.number("forget_s", 60, 365 * 86_400),
    )
    if p.forget_s <= p.silent_s:
        raise ValueError(f"silent_node: forget_s must be above silent_s ({p.silent_s:g}), not {p.forget_s:g}")
    return p
