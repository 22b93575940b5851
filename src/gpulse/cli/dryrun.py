"""`gpulse dry-run`: what analyze would settle now, and where each alert would go — read only.

For each cluster: analyze's own `evaluate` over the stored window with the live config, compared
with the alert records (new, pending, firing, would fire at this run; firing alerts that would
resolve), then the silence that holds each one and the routes it would take. Nothing is written
and nothing is published: the findings queue is only a type here.
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.warnings import PowertoolsUserWarning

from gpulse.alerting.labels import of_finding
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.routes import Route, select
from gpulse.alerting.settle import FindingsQueue
from gpulse.alerting.silences import Silence, silenced_by
from gpulse.alerting.state import AlertRecord, Decision, Rule, decide, held_down, to_finding
from gpulse.analyze import Analyzer, unseen
from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.detect.base import Condition
from gpulse.finding import Finding, fingerprint
from gpulse.store import SeriesStore

DEFAULT_WINDOW = "10m"  # the template's AnalyzeWindowSeconds default


class NoPublish(FindingsQueue):
    """A FindingsQueue by type only: the dry run must never publish, so this one cannot."""

    def __init__(self) -> None:  # no SQS client, no URL
        self.url = ""

    def publish(self, findings: list[Finding]) -> None:
        raise RuntimeError("the dry run must not publish findings")


@dataclass(frozen=True)
class Outlook:
    """One alert as the dry run sees it."""

    finding: Finding
    fate: str  # "new: …", "pending: …", "firing since …", "would fire at this run …", "would resolve …"
    silence: Silence | None
    routes: list[Route]

    def as_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "rule": f.rule,
            "severity": f.severity,
            "cluster": f.cluster,
            "where": where(f),
            "summary": f.summary,
            "fate": self.fate,
            "fingerprint": f.fingerprint,
            "silenced_by": None
            if self.silence is None
            else {"id": self.silence.id, "by": self.silence.created_by, "until": self.silence.ends_at},
            "routes": [
                {"route": r.name, "channels": [f"{c.kind}:{c.secret}" for c in r.channels]}
                for r in self.routes
            ],
        }


def where(f: Finding) -> str:
    """`c1 group g1 nodes node-03,node-06 gpus node-05/3 mig …`: what the alert is about."""
    parts = [f.cluster]
    if f.node_group:
        parts.append(f"group {f.node_group}")
    if f.nodes:
        parts.append(f"nodes {','.join(f.nodes)}")
    if f.gpus:
        parts.append(f"gpus {','.join(f.gpus)}")
    if f.mig:
        parts.append(f"mig {f.mig}")
    return " ".join(parts)


def fate(cond: Condition, rule: Rule, record: AlertRecord | None, at: float) -> str:
    """What this run would do with a condition, and `record` its stored alert (None: none)."""
    fp = fingerprint(cond.rule, **cond.subject)
    decisions = decide("", [cond], {} if record is None else {fp: record}, {rule.name: rule}, at)
    decided = decisions[0] if cond.muted_by is None else None  # decide's first is the condition's
    return _fate(cond, rule, record, decided, at)


def _fate(
    cond: Condition, rule: Rule, record: AlertRecord | None, decided: Decision | None, at: float
) -> str:
    """`decided` (what alerting.state.decide made of the condition; None for a muted one, which
    it leaves as it is) in words."""
    firing = record is not None and record.state == "firing"
    if decided is None:
        if record is not None and record.state == "firing":
            return f"firing since {fmt.iso(record.since)}; muted by {cond.muted_by}: held, not told again"
        return f"muted by {cond.muted_by}: not announced while that alert holds"
    new = decided.record
    if new.state == "firing" and firing:
        return f"firing since {fmt.iso(new.since)}"
    held = at - new.since
    if new.state == "firing":
        return f"would fire at this run (held {fmt.duration(round(held))} of {fmt.duration(rule.for_s)})"
    fires_at = fmt.iso(new.since + rule.for_s)
    if record is not None and record.state == "pending":
        return f"pending: held {fmt.duration(round(held))} of {fmt.duration(rule.for_s)}, fires at {fires_at}"
    return f"new: would go pending; fires after {fmt.duration(rule.for_s)}, at {fires_at}"


def outlooks(
    cluster: str,
    conditions: list[Condition],
    records: dict[str, AlertRecord],
    rules: dict[str, Rule],
    at: float,
    now: float,
    config: LiveConfig,
    dark_nodes: frozenset[str] = frozenset(),
) -> list[Outlook]:
    """What the state machine (alerting.state.decide, at `at`) would make of each condition, then
    of each firing alert the conditions no longer hold: a resolve, or held when its nodes are
    `dark_nodes` (analyze.unseen). Each with the silence that holds it and its routes."""
    routes, silences = config.routes(), config.silences()

    def outlook(f: Finding, text: str) -> Outlook:
        labels = of_finding(f)  # what the alert function matches on (alerting.dispatch)
        return Outlook(
            f, text, silenced_by(labels, silences, now), select(labels, routes, config.rule_route(f.rule))
        )

    decided_for = {
        d.record.fingerprint: d for d in decide(cluster, conditions, records, rules, at, unseen=dark_nodes)
    }
    out, named = [], set()
    for cond in conditions:
        fp = fingerprint(cond.rule, **cond.subject)
        named.add(fp)
        rec, rule = records.get(fp), rules[cond.rule]
        decided = decided_for.get(fp) if cond.muted_by is None else None
        if decided is not None:
            finding = decided.record.finding
        elif rec is not None and rec.state == "firing":
            finding = rec.finding  # muted: decide holds it as announced
        else:
            finding = to_finding(cond, rule, cluster, cond.since, at)  # muted: decide writes nothing
        out.append(outlook(finding, _fate(cond, rule, rec, decided, at)))
    for fp, rec in records.items():
        if fp in named or rec.state != "firing":
            continue
        decided = decided_for.get(fp)
        if decided is None and held_down(rec, rules.get(rec.rule), at):  # a pause, not yet an end
            keep = rules[rec.rule].keep_firing_for_s
            held = (
                f"firing since {fmt.iso(rec.since)}; its condition is gone: held down "
                f"(keep_firing_for_s {keep:g}) until {fmt.iso(rec.finding.at + keep)}"
            )
            out.append(outlook(rec.finding, held))
        elif decided is None:  # decide leaves it firing: nothing is known of its nodes
            held = f"firing since {fmt.iso(rec.since)}; held: its nodes send nothing now"
            out.append(outlook(rec.finding, held))
        elif decided.record.outbox is not None and decided.record.state == "resolved":
            resolved = f"would resolve (firing since {fmt.iso(rec.since)})"
            out.append(outlook(decided.record.outbox, resolved))
        # else deleted without a word: an event (one-shot) ends without a resolve
    return out


def describe(o: Outlook) -> list[str]:
    f = o.finding
    if o.silence is None:
        silence = "not silenced"
    else:
        s = o.silence
        silence = f"silenced by {s.id} ({s.created_by}, until {fmt.iso(s.ends_at)})"
    if o.routes:
        routes = "; ".join(
            f"{r.name} → {', '.join(f'{c.kind}:{c.secret}' for c in r.channels)}"
            + (f" (mentions {' '.join(r.mentions(of_finding(f)))})" if r.mentions(of_finding(f)) else "")
            for r in o.routes
        )
    else:
        routes = "none in the config table: the alert function's default webhooks"
    return [
        f"  {f.rule} [{f.severity}] {where(f)}",
        f"    {f.summary}",
        f"    {o.fate}",
        f"    {silence}",
        f"    routes: {routes}",
    ]


def cmd_dry_run(ctx: Context) -> int:
    with warnings.catch_warnings():
        # FeatureFlags warns when no rule item exists yet: the defaults hold, nothing to tell
        warnings.simplefilter("ignore", PowertoolsUserWarning)
        return _dry_run(ctx)


def _dry_run(ctx: Context) -> int:
    conn = ctx.conn
    ddb = conn.client("dynamodb")
    # One read of the config for the whole run (a fresh store reads the table on first use; an
    # unbounded max_age keeps every question of this run on that same read).
    config = LiveConfig(
        DynamoDBStore(
            ConfigStore(conn.output("ConfigTableName"), client=ddb, clock=ctx.clock), max_age=math.inf
        )
    )
    records = AlertRecords(conn.output("StateTableName"), client=ddb)
    window_s = inputs.parse_duration(ctx.args.window)
    analyzer = Analyzer(
        SeriesStore(conn.output("SeriesTableName"), client=ddb),
        records,
        NoPublish(),
        config,
        window_s=window_s,
        clock=ctx.clock,
    )
    now = ctx.clock()
    params = config.params()
    rules = Analyzer.rules(params)
    clusters = analyzer.clusters(now)
    wanted = ctx.args.cluster or list(clusters)
    report: list[dict[str, Any]] = []
    lines = [f"dry run at {fmt.iso(now)}: nothing is written or published"]
    problems = config.problems()
    if problems:
        lines.append(f"config: {len(problems)} item(s) rejected (see `gpulse config problems`)")
    if not wanted:
        lines.append("no cluster has reported in the last week")
    for cluster in wanted:
        nodes = clusters.get(cluster)
        if not nodes:
            lines.append(f"cluster {cluster}: no node has reported in the last week")
            report.append({"cluster": cluster, "nodes": 0, "alerts": []})
            continue
        window, conditions = analyzer.evaluate(cluster, nodes, params, now)
        stored, dark = records.load(cluster), unseen(conditions, window)
        seen = outlooks(cluster, conditions, stored, rules, window.end, now, config, dark)
        lines.append(
            f"cluster {cluster}: {len(nodes)} nodes, window {fmt.iso(window.start)} to {fmt.iso(window.end)}"
        )
        lines.extend(line for o in seen for line in describe(o))
        if not seen:
            lines.append("  nothing would fire or resolve")
        report.append(
            {
                "cluster": cluster,
                "nodes": len(nodes),
                "window": [window.start, window.end],
                "alerts": [o.as_dict() for o in seen],
            }
        )
    if ctx.wants_json:
        ctx.json({"at": now, "clusters": report, "problems": len(problems)})
    else:
        ctx.print(*lines)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dry-run", parents=common, help="what would fire now, and where it would go")
    p.add_argument("--cluster", action="append", metavar="C", help="only this cluster (repeat for more)")
    p.add_argument(
        "--window", default=DEFAULT_WINDOW, metavar="DURATION", help="analyze's window (default 10m)"
    )
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_dry_run)
