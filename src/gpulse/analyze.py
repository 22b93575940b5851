"""Analyze: for every cluster, read the recent window, run the detector catalogue, move alerts
through their states and publish each transition to the findings queue once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from gpulse import codec
from gpulse.alerting.labels import LabelMap, labels, teams_of
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue, settle
from gpulse.alerting.state import Rule
from gpulse.codec import Chunk
from gpulse.config.flags import Problem
from gpulse.detect.base import Condition, NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE, state_for_s
from gpulse.finding import Finding
from gpulse.store import NodeInfo, SeriesStore
from gpulse.window import STALE_S, build_window, window_end

logger = logging.getLogger(__name__)
STEP_S = 5.0
REGISTRY_S = 7 * 86400.0  # nodes silent this long leave the registry given to detectors


CONFIG_CLUSTER = "gpulse-config"  # where alerts about the config itself live (no real cluster)
BAD_CONFIG = Rule(name="bad_config", title="Config item rejected", for_s=0.0)


class RuleSource(Protocol):
    """What analyze needs of the live config (gpulse.config.live.LiveConfig)."""

    def params(self) -> dict[str, dict[str, Any]]: ...
    def switched_off(self, rule: str) -> bool: ...
    def enabled(self, rule: str, labels: LabelMap) -> bool: ...
    def teams(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]: ...
    def problems(self) -> tuple[Problem, ...]: ...


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
        config: RuleSource,
        *,
        window_s: float = 600.0,
        step_s: float = STEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.records, self.queue, self.config = store, records, queue, config
        self.window_s, self.step_s, self.clock = window_s, step_s, clock

    def run(self) -> list[ClusterReport]:
        """One scheduled run over every cluster with a node that reported in the last week (a
        cluster gone wholly silent is still visited: that silence is what it must report)."""
        now = self.clock()
        params = self.config.params()
        reports = [self.run_cluster(c, nodes, params, now) for c, nodes in self.clusters(now).items()]
        return [*reports, self.report_config(now)]

    def report_config(self, now: float) -> ClusterReport:
        """Alerts about rejected config items (one per item, resolved when it is fixed)."""
        report = ClusterReport(CONFIG_CLUSTER)
        conditions = [config_condition(p, now) for p in self.config.problems()]
        report.conditions = len(conditions)
        report.published = settle(
            self.records, self.queue, CONFIG_CLUSTER, conditions, {BAD_CONFIG.name: BAD_CONFIG}, now
        )
        return report

    def run_cluster(
        self, cluster: str, nodes: list[NodeInfo], params: dict[str, dict[str, Any]], now: float
    ) -> ClusterReport:
        report = ClusterReport(cluster)
        window, conditions = self.evaluate(cluster, nodes, params, now, report)
        t3 = time.perf_counter()
        report.published = settle(
            self.records,
            self.queue,
            cluster,
            conditions,
            self.rules(params),
            window.end,
            unseen=unseen(conditions, window),
        )
        report.state_s = time.perf_counter() - t3
        return report

    def evaluate(
        self,
        cluster: str,
        nodes: list[NodeInfo],
        params: dict[str, dict[str, Any]],
        now: float,
        report: ClusterReport | None = None,
    ) -> tuple[Window, list[Condition]]:
        """The cluster's window at `now` and the conditions the enabled rules find in it (what
        a run would settle; the CLI's dry run shows it without settling)."""
        report = report or ClusterReport(cluster)
        t0 = time.perf_counter()
        raw = self.store.read_window(cluster, now - self.window_s - STALE_S, now)
        t1 = time.perf_counter()
        chunks = [codec.decode(b) for b in raw]
        t2 = time.perf_counter()
        report.chunks, report.read_s, report.decode_s = len(chunks), t1 - t0, t2 - t1
        registry = [NodeSeen(n.node, n.node_group, n.last_seen) for n in nodes]
        window = window_for(cluster, chunks, registry, now, window_s=self.window_s, step_s=self.step_s)
        off = {name for name in CATALOGUE if self.config.switched_off(name)}
        conditions = detect_all(window, params, skip=off, admit=admitter(self.config, window))
        report.detect_s, report.conditions = time.perf_counter() - t2, len(announced(conditions))
        return window, conditions

    @staticmethod
    def rules(params: dict[str, dict[str, Any]]) -> dict[str, Rule]:
        """What the state machine needs of each rule, with the `for` durations configured now."""
        return {
            name: Rule(name, det.title, for_s=state_for_s(name, params[name]), one_shot=det.one_shot)
            for name, det in CATALOGUE.items()
        }

    def clusters(self, now: float) -> dict[str, list[NodeInfo]]:
        """Each cluster with a node that reported in the last week, and its nodes."""
        by_cluster: dict[str, list[NodeInfo]] = defaultdict(list)
        for info in self.store.nodes():
            if now - info.last_seen <= REGISTRY_S:
                by_cluster[info.cluster].append(info)
        return dict(sorted(by_cluster.items()))


def admitter(config: RuleSource, window: Window) -> Callable[[Condition], Condition | None]:
    """Label each condition (node group, owning teams) and ask its rule's flag about it: the
    condition labelled, or None where the rule is switched off for it."""
    teams = config.teams()
    group_of = dict(zip(window.nodes, window.node_groups, strict=True))
    group_of.update({n.node: n.node_group for n in window.registry})

    def admit(c: Condition) -> Condition | None:
        named = _nodes_of(c)
        groups = {g for g in (group_of.get(n) for n in named) if g}
        if c.subject.get("node_group") is not None:
            groups = {str(c.subject["node_group"])}
        c = replace(
            c,
            node_group=next(iter(groups)) if len(groups) == 1 else None,
            teams=teams_of(c.users, groups, teams),
        )
        lm = labels(
            rule=c.rule,
            severity=c.severity,
            cluster=window.cluster,
            node_group=c.node_group,
            nodes=named,
            gpus=c.gpus,
            users=c.users,
            teams=c.teams,
        )
        return c if config.enabled(c.rule, lm) else None

    return admit


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


def config_condition(p: Problem, now: float) -> Condition:
    return Condition(
        rule=BAD_CONFIG.name,
        subject={"cluster": CONFIG_CLUSTER, "kind": p.kind, "name": p.name},
        since=now,
        severity="warning",
        summary=(
            f"{p.kind} {p.name!r} version {p.version} (written by {p.updated_by}) was rejected: {p.reason}. "
            "Its last good version, or the defaults, stay in force."
        ),
        action="Fix it with the gpulse CLI, which checks what it writes (`gpulse config problems` lists it).",
        values={"version": float(p.version)},
    )


def detect_all(
    window: Window,
    params: dict[str, dict[str, Any]],
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    admit: Callable[[Condition], Condition | None] | None = None,
) -> list[Condition]:
    """Every detector of the catalogue but `skip` over one window; what `admit` makes of each
    condition (labelled, or None when its rule's flag says no), the muted ones marked (`inhibit`)."""
    out: list[Condition] = []
    for name, det in CATALOGUE.items():
        if name not in skip:
            out.extend(det.detect(window, params[name]))
    if admit is not None:
        out = [a for a in map(admit, out) if a is not None]
    return inhibit(out)


SILENT_RULE = "silent_node"
# (source rule, target rule): a condition of the target rule is muted when every node it names
# is named by a condition of the source rule, because the source already says what is wrong there.
# None as target: every other rule. A silent node's data is stale, not its GPUs idle; nodes out of
# step in a job also stop exchanging, and the imbalance alert already names them.
INHIBITIONS: tuple[tuple[str, str | None], ...] = ((SILENT_RULE, None), ("imbalance", "network"))


def _nodes_of(c: Condition) -> set[str]:
    node = c.subject.get("node")
    return set(c.nodes) | ({str(node)} if node is not None else set())


def _per_node(c: Condition) -> bool:
    return c.subject.get("node") is not None


def inhibit(conditions: list[Condition]) -> list[Condition]:
    """The conditions, those that an alert already covering them mutes marked `muted_by`:
    an INHIBITIONS entry, or a wider alert of the same rule (one without a node in its subject,
    e.g. most of a cluster silent) over its per-node ones. A condition naming several nodes stays
    unmuted if any of them is not covered."""
    covered: dict[str, set[str]] = {}
    wide: dict[str, set[str]] = {}
    for c in conditions:
        covered.setdefault(c.rule, set()).update(_nodes_of(c))
        if not _per_node(c):
            wide.setdefault(c.rule, set()).update(_nodes_of(c))
    out = []
    for c in conditions:
        named = _nodes_of(c)
        sources = (s for s, target in INHIBITIONS if c.rule != s and target in (None, c.rule))
        by = next((s for s in sources if named and named <= covered.get(s, set())), None)
        if by is None and _per_node(c) and named <= wide.get(c.rule, set()):
            by = c.rule
        out.append(c if by is None else replace(c, muted_by=by))
    return out


def unseen(conditions: list[Condition], window: Window | None = None) -> frozenset[str]:
    """The nodes nothing is known of now: those a silent-node condition names, and the window's
    nodes with no sample in its last bin (a batch late past STALE_S, a retry arriving after its
    successor: their conditions vanish for lack of data, not because the fault ended)."""
    silent = {n for c in conditions if c.rule == SILENT_RULE for n in _nodes_of(c)}
    if window is not None:
        with np.errstate(invalid="ignore"):
            behind = ~(window.node_last_seen >= window.end - window.step)  # NaN: never seen, behind
        silent.update(n for n, b in zip(window.nodes, behind | ~reported_last_bin(window), strict=True) if b)
    return frozenset(silent)


def reported_last_bin(window: Window) -> np.ndarray:
    """(nodes,) whether any host or GPU series of the node has a sample in the window's last bin.
    A node can be past the window's end and still miss it: the batch that covers it is late while
    the next one is in (a retry after its successor)."""
    seen = np.zeros(len(window.nodes), dtype=bool)
    if window.bins == 0:
        return seen
    for m in window.host.values():
        if m.shape == (len(window.nodes), window.bins):
            seen |= np.isfinite(m[:, -1])
    for m in window.gpu.values():
        if m.shape[0] == window.gpu_node.shape[0] and m.shape[1] == window.bins:
            np.logical_or.at(seen, window.gpu_node, np.isfinite(m[:, -1]))
    return seen


def announced(conditions: list[Condition]) -> list[Condition]:
    """The conditions no inhibition mutes."""
    return [c for c in conditions if c.muted_by is None]
