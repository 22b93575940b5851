"""Silent node: a node the cluster's registry knows whose shipper has stopped reporting.

A node that goes quiet is the one failure every other detector misses: with no data, nothing
is idle, nothing is hot, nothing is out of step (missing data is never evidence elsewhere).
This detector alone reads the registry, which lists every node that ever reported, with the
time of its latest sample, whether or not it appears in the window's data.

A node is silent when its latest sample is more than `for_s` older than the wall clock, and no
more than `forget_s` older: a node decommissioned without being removed from the registry stops
alerting after a day. The rule times itself (the silence is measured from the last report, which
the state machine cannot see), so its `for_s` is the silence that alerts, and the state machine
gets a `for` of 0 (`gpulse.detect.catalogue.state_for_s`).

When most of the cluster is silent at once (`cluster_share` of the registry's nodes, at least
`cluster_min_nodes`), the cause is what they share — the site's uplink, the API, the shipper
secret — so one cluster-wide condition names them all, and analyze mutes the per-node ones
under it (`gpulse.analyze.inhibit`), as it mutes every other condition about a silent node.
"""

from __future__ import annotations

import datetime as dt
import math
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

CLUSTER_ACTION = (
    "Most of the cluster stopped at once, so look at what its nodes share before any one node: the "
    "site's uplink, proxy or DNS for the API (`curl -sI` the API's URL from a node); the API itself "
    "(the ingest function's errors and 4xx in CloudWatch: a 401 for every node means the shipper "
    "secret was rotated without the nodes); a power or network event in the room. The per-node "
    "silent alerts are held back while this one fires."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    forget_s: float
    cluster_share: float
    cluster_min_nodes: int


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
        "for_s": 180,
        "severity": "critical",
        "forget_s": 86_400,
        "cluster_share": 0.5,
        "cluster_min_nodes": 3,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per registered node whose last report is more than `for_s` and at most
        `forget_s` before `window.clock` (the wall clock); since = that last report. Plus one for
        the cluster when the silent nodes are `cluster_share` of those known and at least
        `cluster_min_nodes`."""
        p = _parse(params)
        if not window.registry:
            return []
        last: dict[str, float] = {}
        for entry in window.registry:  # one entry per node; keep the latest if a node appears twice
            seen = float(entry.last_seen)
            if np.isfinite(seen) and seen >= last.get(entry.node, -np.inf):
                last[entry.node] = seen
        # ingest rewrites a registry entry only every few minutes (gpulse.store.REGISTRY_REFRESH_S):
        # the window's own data is fresher where it has the node
        for node, seen in zip(window.nodes, window.node_last_seen.tolist(), strict=True):
            if node in last and seen > last[node]:
                last[node] = seen
        names = sorted(last)
        seen_at = np.array([last[n] for n in names], dtype=float)
        age = window.clock - seen_at
        known = age <= p.forget_s
        silent = (age > p.for_s) & known
        out = [_condition(window, names[i], float(seen_at[i]), p) for i in np.flatnonzero(silent)]
        needed = max(p.cluster_min_nodes, math.ceil(p.cluster_share * int(known.sum())))
        if int(silent.sum()) >= needed:
            quiet = np.flatnonzero(silent)
            named = [names[i] for i in quiet]
            out.append(_cluster_condition(window, named, seen_at[quiet], int(known.sum()), needed, p))
        return out


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
            "for_s": p.for_s,
            "forget_s": p.forget_s,
        },
        evidence=_evidence(window, node, last_seen),
    )


def _cluster_condition(
    window: Window, nodes: list[str], seen_at: np.ndarray, known: int, needed: int, p: _Params
) -> Condition:
    """Most of the cluster silent: since = the moment the `needed`-th node went quiet (from then
    on enough of them were), the nodes named in the order they stopped."""
    order = np.argsort(seen_at, kind="stable")
    since = float(seen_at[order][needed - 1])
    first, last = float(seen_at.min()), float(seen_at.max())
    stopped = (
        f"at {_clock(first, window.clock)}"
        if last - first < 60
        else f"between {_clock(first, window.clock)} and {_clock(last, window.clock)}"
    )
    named = [nodes[i] for i in order]
    shown = ", ".join(named[:8]) + (f" and {len(named) - 8} more" if len(named) > 8 else "")
    summary = (
        f"{len(nodes)} of {known} nodes of {window.cluster} have sent nothing for "
        f"{text.duration(window.clock - last)} or more (they stopped {stopped}): {shown}"
    )
    return Condition(
        rule=SilentNodeDetector.name,
        subject={"cluster": window.cluster},
        since=since,
        severity=p.severity,
        summary=summary,
        action=CLUSTER_ACTION,
        nodes=sorted(nodes),
        values={
            "silent_nodes": float(len(nodes)),
            "known_nodes": float(known),
            "first_stopped": first,
            "last_stopped": last,
            "for_s": p.for_s,
            "cluster_share": p.cluster_share,
        },
        evidence=_reporting(window),
    )


def _reporting(window: Window) -> Evidence | None:
    """How many nodes reported in each bin of the window: the drop shows when, and how many."""
    util = window.gpu.get("util_gpu")
    if util is None or util.shape[1] == 0 or not window.nodes:
        return None
    per_node = np.zeros((len(window.nodes), util.shape[1]), dtype=bool)
    np.logical_or.at(per_node, window.gpu_node, np.isfinite(util))
    count = per_node.sum(axis=0).astype(float)
    return Evidence(
        title=f"{window.cluster}: nodes reporting, last {text.duration(window.end - window.start)}",
        unit="nodes",
        rows=[EvidenceRow("reporting", downsample(count, EVIDENCE_POINTS), float(count[-1]), True)],
        scale_max=float(len(window.nodes)),
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
        # series, subject, reduce: how a resolve (the node is back) draws it again (analyze.recovery)
        rows=[
            EvidenceRow(
                node,
                downsample(level, EVIDENCE_POINTS),
                round(last_level, 1),
                True,
                "node.util_gpu",
                node,
                "last",
            )
        ],
    )


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader(SilentNodeDetector.name, params, SilentNodeDetector.defaults)
    p = _Params(
        for_s=r.number("for_s", 30, 7 * 86_400),
        severity=r.severity(),
        forget_s=r.number("forget_s", 60, 365 * 86_400),
        cluster_share=r.number("cluster_share", 0.05, 1.0),
        cluster_min_nodes=int(r.number("cluster_min_nodes", 2, 100_000, integer=True)),
    )
    if p.forget_s <= p.for_s:
        raise ValueError(f"silent_node: forget_s must be above for_s ({p.for_s:g}), not {p.forget_s:g}")
    return p
