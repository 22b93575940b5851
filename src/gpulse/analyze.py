"""Analyze: for every cluster, read the recent window, run the detector catalogue, move alerts
through their states and publish each transition to the findings queue once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gpulse import codec
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue, settle
from gpulse.alerting.state import Rule
from gpulse.codec import Chunk
from gpulse.detect.base import Condition, NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE
from gpulse.finding import Finding
from gpulse.store import NodeInfo, SeriesStore
from gpulse.window import STALE_S, build_window, window_end

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)
STEP_S = 5.0
REGISTRY_S = 7 * 86400.0  # nodes silent this long leave the registry given to detectors


class ParamSource(Protocol):
    def all(self) -> dict[str, dict[str, Any]]: ...


@dataclass
class ClusterReport:
    cluster: str
    chunks: int = 0
    conditions: int = 0
    published: list[Finding] = field(default_factory=list)
    read_s: float = 0.0
    decode_s: float = 0.0
    detect_s: float = 0.0
    state_s: float = 0.0


class Analyzer:
    def __init__(
        self,
        store: SeriesStore,
        records: AlertRecords,
        queue: FindingsQueue,
        params: ParamSource,
        *,
        window_s: float = 600.0,
        step_s: float = STEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.records, self.queue, self.params = store, records, queue, params
        self.window_s, self.step_s, self.clock = window_s, step_s, clock

    def run(self) -> list[ClusterReport]:
        """One scheduled run over every cluster with a node that reported in the last week (a
        cluster gone wholly silent is still visited: that silence is what it must report)."""
        now = self.clock()
        by_cluster: dict[str, list[NodeInfo]] = defaultdict(list)
        for info in self.store.nodes():
            if now - info.last_seen <= REGISTRY_S:
                by_cluster[info.cluster].append(info)
        params = self.params.all()
        return [self.run_cluster(c, nodes, params, now) for c, nodes in sorted(by_cluster.items())]

    def run_cluster(
        self, cluster: str, nodes: list[NodeInfo], params: dict[str, dict[str, Any]], now: float
    ) -> ClusterReport:
        report = ClusterReport(cluster)
        t0 = time.perf_counter()
        raw = self.store.read_window(cluster, now - self.window_s - STALE_S, now)
        t1 = time.perf_counter()
        chunks = [codec.decode(b) for b in raw]
        t2 = time.perf_counter()
        report.chunks, report.read_s, report.decode_s = len(chunks), t1 - t0, t2 - t1
        registry = [NodeSeen(n.node, n.node_group, n.last_seen) for n in nodes]
        window = window_for(cluster, chunks, registry, now, window_s=self.window_s, step_s=self.step_s)
        conditions = detect_all(window, params)
        t3 = time.perf_counter()
        report.detect_s, report.conditions = t3 - t2, len(conditions)
        rules = {
            name: Rule(name=name, title=det.title, for_s=float(params[name]["for_s"]), one_shot=det.one_shot)
            for name, det in CATALOGUE.items()
        }
        report.published = settle(self.records, self.queue, cluster, conditions, rules, window.end)
        report.state_s = time.perf_counter() - t3
        return report


def bin_step(chunks: list[Chunk], base: float = STEP_S) -> float:
    """The bin width: `base`, or the slowest node's sample interval rounded up to a multiple of
    it. Bins narrower than the samples are mostly empty, and an empty bin breaks every run."""
    intervals = [float(np.median(np.diff(c.timestamps))) for c in chunks if c.timestamps.size > 1]
    slowest = max(intervals, default=base)
    return max(base, math.ceil(slowest / base - 1e-6) * base)


def window_for(
    cluster: str,
    chunks: list[Chunk],
    registry: list[NodeSeen],
    now: float,
    *,
    window_s: float,
    step_s: float = STEP_S,
) -> Window:
    """The window analyze evaluates at `now`: it ends where every fresh node has reported (or at
    `now` when nothing has: empty, but the registry still speaks), in bins of `bin_step`."""
    step = bin_step(chunks, step_s)
    last_seen: dict[str, float] = {}
    for c in chunks:
        last_seen[c.node] = max(last_seen.get(c.node, 0.0), float(c.timestamps[-1]))
    end = window_end(last_seen.values(), step) if chunks else now - now % step
    return build_window(
        cluster,
        chunks,
        end=end,
        span_s=window_s,
        step=step,
        node_groups={n.node: n.node_group for n in registry},
        registry=registry,
        now=now,
    )


def detect_all(window: Window, params: dict[str, dict[str, Any]]) -> list[Condition]:
    """Every detector of the catalogue over one window, with the inhibitions applied."""
    out: list[Condition] = []
    for name, det in CATALOGUE.items():
        out.extend(det.detect(window, params[name]))
    return inhibit(out)


SILENT_RULE = "silent_node"
# (source rule, target rule): a condition of the target rule is dropped when every node it names
# is named by a condition of the source rule, because the source already says what is wrong there.
# None as target: every other rule. A silent node's data is stale, not its GPUs idle; nodes out of
# step in a job also stop exchanging, and the imbalance alert already names them.
INHIBITIONS: tuple[tuple[str, str | None], ...] = ((SILENT_RULE, None), ("imbalance", "network"))


def _nodes_of(c: Condition) -> set[str]:
    node = c.subject.get("node")
    return set(c.nodes) | ({str(node)} if node is not None else set())


def inhibit(conditions: list[Condition]) -> list[Condition]:
    """Drop the conditions that an INHIBITIONS entry mutes. A condition naming several nodes stays
    if any of them is not covered."""
    covered: dict[str, set[str]] = {}
    for c in conditions:
        covered.setdefault(c.rule, set()).update(_nodes_of(c))
    kept = []
    for c in conditions:
        named = _nodes_of(c)
        muted = any(
            c.rule != source and target in (None, c.rule) and named and named <= covered.get(source, set())
            for source, target in INHIBITIONS
        )
        if not muted:
            kept.append(c)
    return kept
