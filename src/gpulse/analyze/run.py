"""Orchestration: one scheduled run over every cluster — read its window, run the rules, move
alerts through their states and publish each transition to the findings queue once.

Each cluster runs behind its own boundary (and each rule within it, `detection.detect_all`): an
exception in one is logged with its traceback, counted, and becomes an `analysis_failed` alert
for that cluster through the alert state machine; the other clusters carry on. Nothing else is
caught: a run that cannot list its clusters or read the config fails as a whole, and its missing
heartbeat says so.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue, settle
from gpulse.alerting.state import Rule
from gpulse.analyze.admission import RuleSource, admitter
from gpulse.analyze.detection import STEP_S, detect_all
from gpulse.analyze.fanout import AnalyzeTask, OwnedRecords
from gpulse.analyze.incremental import ClusterWindows, TickStats
from gpulse.analyze.inhibit import announced
from gpulse.analyze.own_rules import (
    ANALYSIS_FAILED,
    BAD_CONFIG,
    CONFIG_CLUSTER,
    OWN_RULES,
    config_condition,
    describe,
    failure_condition,
)
from gpulse.analyze.recovery import redrawer
from gpulse.analyze.staleness import unseen
from gpulse.detect.base import Condition, NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE, keep_firing_for_s, state_for_s
from gpulse.finding import Finding
from gpulse.store import NodeInfo, SeriesStore

logger = logging.getLogger(__name__)
REGISTRY_S = 7 * 86400.0  # nodes silent this long leave the registry given to detectors


@dataclass
class ClusterReport:
    cluster: str
    chunks: int = 0
    corrupt_chunks: int = 0  # stored chunks that did not decode: skipped, the rest used
    conditions: int = 0
    published: list[Finding] = field(default_factory=list)
    error: str | None = None  # why the cluster could not be analysed this run (`own_rules.describe`)
    failed_rules: list[str] = field(default_factory=list)  # rules that raised on it this run
    # nodes whose shipper said in its latest batch that it has no working disk spool (full,
    # unwritable, disabled): they ship live, but an ingest outage would cost them data
    no_spool: list[str] = field(default_factory=list)
    cold: bool = False  # the window was rebuilt from the store, not kept from the last run
    read_s: float = 0.0
    decode_s: float = 0.0  # decoding and binning what was read
    detect_s: float = 0.0
    state_s: float = 0.0

    @property
    def failures(self) -> int:
        """What this run could not analyse here: the whole cluster, or rules one by one."""
        return (self.error is not None) + len(self.failed_rules)


def _about(c: Condition) -> tuple[str | None, list[str]]:
    """The node group and nodes a condition is about, as its alert's finding will say them."""
    group, node = c.subject.get("node_group"), c.subject.get("node")
    return (str(group) if group else c.node_group), [*c.nodes, *([str(node)] if node else [])]


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
        incremental: bool = True,
        keep_nodes: int | None = None,
    ) -> None:
        self.store, self.records, self.queue, self.config = store, records, queue, config
        self.window_s, self.step_s, self.clock = window_s, step_s, clock
        # each cluster's window, kept between runs while this container lives (`incremental`),
        # the least recently used forgotten past `keep_nodes` nodes
        self.windows = ClusterWindows(
            store, window_s=window_s, step_s=step_s, incremental=incremental, keep_nodes=keep_nodes
        )

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
        try:
            conditions = [config_condition(p, now) for p in self.config.problems()]
            report.conditions = len(conditions)
            report.published = settle(
                self.records, self.queue, CONFIG_CLUSTER, conditions, {BAD_CONFIG.name: BAD_CONFIG}, now
            )
        except Exception as e:  # the boundary of the config's own alerts, as of a cluster's
            self._failed(report, e, now)
        return report

    def run_cluster(
        self,
        cluster: str,
        nodes: list[NodeInfo],
        params: dict[str, dict[str, Any]],
        now: float,
        *,
        part: AnalyzeTask | None = None,
    ) -> ClusterReport:
        """Analyse one cluster (or, with `part`, one shard of it: `nodes` are its nodes, and only
        the alerts it owns are settled) and settle its alerts. Never raises: what stops it is
        reported (`ClusterReport.error`) and raised as its `analysis_failed` alert (the shard's own)."""
        report = ClusterReport(cluster, no_spool=sorted(n.node for n in nodes if n.spool not in (None, "ok")))
        try:
            shard = frozenset(n.node for n in nodes) if part is not None else None
            window, conditions = self.evaluate(cluster, nodes, params, now, report, shard=shard)
            records = self.records
            if part is not None:
                records = OwnedRecords(self.records, part)
                conditions = [
                    part.tag(c) for c in conditions if c.rule == ANALYSIS_FAILED.name or part.owns(*_about(c))
                ]
            t3 = time.perf_counter()
            report.published = settle(
                records,
                self.queue,
                cluster,
                conditions,
                self.live_rules(params),
                window.end,
                unseen=unseen(conditions, window),
                redraw=redrawer(window),  # a resolve shows the recovery, drawn from this window
            )
            report.state_s = time.perf_counter() - t3
        except Exception as e:  # the boundary of one cluster: the others must still be analysed
            self._failed(report, e, now, part)
        return report

    def _failed(
        self, report: ClusterReport, error: Exception, now: float, part: AnalyzeTask | None = None
    ) -> None:
        """Log `error` with its traceback and settle the cluster's `analysis_failed` alert: only
        that alert (a failed run says nothing of the others, so none of them may resolve)."""
        logger.exception("cluster not analyzed", extra={"cluster": report.cluster})
        report.error = describe(error)
        failed = failure_condition(report.cluster, error, now)
        try:
            report.published = settle(
                self.records,
                self.queue,
                report.cluster,
                [part.tag(failed) if part is not None else failed],
                OWN_RULES,
                now,
                whole_cluster=False,
            )
        except Exception:  # the state table or the queue is what failed: the log and the metric remain
            logger.exception("analysis failure not recorded", extra={"cluster": report.cluster})

    def evaluate(
        self,
        cluster: str,
        nodes: list[NodeInfo],
        params: dict[str, dict[str, Any]],
        now: float,
        report: ClusterReport | None = None,
        *,
        shard: frozenset[str] | None = None,
    ) -> tuple[Window, list[Condition]]:
        """The cluster's window at `now` and the conditions the enabled rules find in it (what
        a run would settle; the CLI's dry run shows it without settling). A chunk that does not
        decode is skipped (logged, counted in `report`); a rule that raises is its own
        `analysis_failed` condition (`detect_all`). With `shard`, only those nodes' data is read
        into the window (a shard of the cluster, `gpulse.analyze.fanout`)."""
        report = report or ClusterReport(cluster)
        registry = [NodeSeen(n.node, n.node_group, n.last_seen) for n in nodes]
        tick = TickStats()
        window = self.windows.window(cluster, registry, now, tick, nodes=shard)
        t2 = time.perf_counter()
        report.chunks, report.corrupt_chunks = tick.decoded, tick.corrupt
        report.read_s, report.decode_s, report.cold = tick.read_s, tick.decode_s + tick.bin_s, tick.cold
        off = {name for name in CATALOGUE if self.config.switched_off(name)}
        conditions = detect_all(
            window,
            params,
            skip=off,
            admit=admitter(self.config, window),
            inhibitions=self.config.inhibitions(),
        )
        report.failed_rules = [
            str(c.subject["detector"]) for c in conditions if c.rule == ANALYSIS_FAILED.name
        ]
        report.detect_s, report.conditions = time.perf_counter() - t2, len(announced(conditions))
        return window, conditions

    @staticmethod
    def rules(params: dict[str, dict[str, Any]]) -> dict[str, Rule]:
        """What the state machine needs of each rule, with the `for` durations configured now,
        analyze's own rules included."""
        catalogue = {
            name: Rule(
                name,
                det.title,
                for_s=state_for_s(name, params[name]),
                one_shot=det.one_shot,
                keep_firing_for_s=keep_firing_for_s(params[name]),
            )
            for name, det in CATALOGUE.items()
        }
        return {**catalogue, **OWN_RULES}

    def live_rules(self, params: dict[str, dict[str, Any]]) -> dict[str, Rule]:
        """`rules`, less the hold-down of a rule switched off: an operator who turns a rule off
        ends its alerts now (its detector no longer runs; no pause is being waited out)."""
        return {
            name: replace(r, keep_firing_for_s=0.0) if self.config.switched_off(name) else r
            for name, r in self.rules(params).items()
        }

    def clusters(self, now: float) -> dict[str, list[NodeInfo]]:
        """Each cluster with a node that reported in the last week, and its nodes."""
        by_cluster: dict[str, list[NodeInfo]] = defaultdict(list)
        for info in self.store.nodes():
            if now - info.last_seen <= REGISTRY_S:
                by_cluster[info.cluster].append(info)
        return dict(sorted(by_cluster.items()))


def wired_analyzer(
    dynamodb: Any,
    findings: FindingsQueue,
    *,
    series_table: str,
    state_table: str,
    config_table: str,
    shards: int,
    config_cache_s: int,
    window_s: float,
    keep_nodes: int | None = None,
) -> Analyzer:
    """The Analyzer of analyze's dispatcher and worker alike (the template gives both the same
    tables, shards, window and config cache), on one shared DynamoDB client; `keep_nodes` bounds
    the windows a container keeps (ClusterWindows)."""
    from gpulse.config.flags import DynamoDBStore  # the config reader: imported where it is wired
    from gpulse.config.live import LiveConfig
    from gpulse.config.store import ConfigStore

    return Analyzer(
        SeriesStore(series_table, shards=shards, client=dynamodb),
        AlertRecords(state_table, client=dynamodb),
        findings,
        LiveConfig(DynamoDBStore(ConfigStore(config_table, client=dynamodb), max_age=config_cache_s)),
        window_s=window_s,
        keep_nodes=keep_nodes,
    )
