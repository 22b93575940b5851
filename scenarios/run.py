"""Replay scenarios through the real analysis path and score every rule of the catalogue.

The path is analyze's, piece by piece: each batch is encoded as ingest stores it
(`gpulse.store.encode_parts`, the chunk codec) when it reaches the API; every `every_s` of
scenario time the chunks of the last `window_s` + STALE_S are read, the window is built exactly
as `gpulse.analyze` builds it (`window_end` over each node's latest sample, 5 s bins, the node
registry with silent nodes in it), every detector of `CATALOGUE` runs with its default
parameters (`detect_all`, silent-node inhibition included), and `gpulse.alerting.state.decide`
moves the alerts, applied to in-memory records as the state table applies them. A published
firing transition is an alarm; its resolve, when one comes, closes it.

Scoring, per rule (`score`):
- recall: the faults of that rule with at least one firing alarm of that rule whose subject
  matches the fault's (node, GPU, MIG instance: the labels both name must agree; a group-level
  alarm matches through the nodes it lists), published within [start, end + GRACE_S];
- precision: the firing alarms of that rule that match a fault of that rule, or that ride in the
  incident of a fault's alarm as a co-symptom (`same_incident`: another rule, the same job or a
  node in common, firing while it fires), over all its firing alarms; an alarm outside every
  fault's incident is a false alarm;
- delay: first matching publication − fault start, median and max, against the bound
  for_s + 2 × every_s (+ the fault's own `allow_s`, e.g. silent_s for a silent node);
- false alarms per node-day over the healthy scenarios;
- firing share: per fault, the share of its span with an alarm of its rule firing on it (a rule
  that resolves in each pause of a persistent fault scores low), averaged;
- messages per incident: per fault, the transitions published about it (fire, escalation, join
  and resolve of its own alarms and of the co-symptoms in their incidents), averaged. An
  escalation (the same alert told again, more severe) or a join (told again, nodes joined) is a
  message, not another alarm. Inhibited (muted) conditions ride under their root, are not
  published and do not count.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from gpulse import codec
from gpulse.alerting.state import AlertRecord, Decision, decide
from gpulse.analyze import REGISTRY_S, Analyzer, detect_all, unseen, window_for
from gpulse.detect.base import NodeSeen
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.finding import Finding, fingerprint
from gpulse.store import encode_parts
from gpulse.window import STALE_S
from scenarios.faults import GroundTruth
from scenarios.fleet import Delivery, deliveries, planned
from scenarios.suite import Scenario, suite

GRACE_S = 120.0  # an alarm published this long after a fault ended still belongs to it
EVERY_S = 60.0  # analyze's schedule
BOUND_RUNS = 2  # a detection is due within for_s + this many analyze periods (+ the fault's allow_s)
TRACE = Path("/work/shared/traces/vector-1gpu-15s.csv")


# -- replay ---------------------------------------------------------------------------------------


@dataclass
class Alarm:
    """One alert as published: its firing transition, and its resolve if one came."""

    scenario: str
    rule: str
    fingerprint: str
    subject: dict[str, Any]
    nodes: tuple[str, ...]
    gpus: tuple[str, ...]
    mig: str | None
    since: float
    at: float  # the window's end when it was decided
    published: float  # the analyze run that published it
    summary: str
    resolved: float | None = None
    escalations: int = 0  # told again, more severe (warning → critical): the same alarm
    joins: int = 0  # told again because nodes joined it: the same alarm, its `nodes` grown
    job: str | None = None  # the job of the condition that raised it (`Condition.job`), if one
    joined_at: dict[str, float] = field(default_factory=dict)  # node → the run that told it joined
    # the messages after its first, before its resolve: one per transition told again, however
    # many reasons it had (a transition that escalates and joins at once is one message)
    retold: int = 0


@dataclass
class Replay:
    """Analyze's view of one cluster: the chunks stored so far, the registry and the alert records."""

    scenario: str
    window_s: float = 600.0
    step_s: float = 5.0
    params: dict[str, dict[str, Any]] = field(default_factory=lambda: {n: params_for(n) for n in CATALOGUE})
    chunks: list[codec.Chunk] = field(default_factory=list)
    registry: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    records: dict[str, AlertRecord] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.rules = Analyzer.rules(self.params)  # analyze's own (a rule that raised) included
        self._open: dict[str, Alarm] = {}
        self._subjects: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, str | None] = {}

    def ingest(self, doc: dict[str, Any]) -> None:
        """Store one batch as ingest does: encoded (split if it must be), registry updated."""
        for _, data in encode_parts(doc):
            self.chunks.append(codec.decode(data))
        node, last = doc["node"], float(doc["timestamps"][-1])
        group, seen = self.registry.get(node, (None, -1.0))
        self.registry[node] = (doc.get("node_group") or group, max(seen, last))

    def analyze(self, cluster: str, now: float) -> None:
        """One analyze run at `now` over the chunks stored by then."""
        lo = now - self.window_s - STALE_S
        self.chunks = [c for c in self.chunks if float(c.timestamps[-1]) >= lo]  # older ones never return
        chunks = [c for c in self.chunks if float(c.timestamps[0]) <= now]
        nodes = [
            NodeSeen(n, g, seen) for n, (g, seen) in sorted(self.registry.items()) if now - seen <= REGISTRY_S
        ]
        if not nodes:  # as analyze: a cluster with no data left is still evaluated (its silence)
            return
        window = window_for(cluster, chunks, nodes, now, window_s=self.window_s, step_s=self.step_s)
        conditions = detect_all(window, self.params)
        for cond in conditions:
            fp = fingerprint(cond.rule, **cond.subject)
            self._subjects[fp] = dict(cond.subject)
            self._jobs[fp] = cond.job
        held = unseen(conditions, window)
        self.settle(
            cluster, decide(cluster, conditions, self.records, self.rules, window.end, unseen=held), now
        )
        self.runs += 1

    def settle(self, cluster: str, decisions: list[Decision], now: float) -> None:
        """Apply the decisions as the state table would (conditional on the version read), then
        publish every outbox and clear it, deleting what resolved."""
        for d in decisions:
            fp = d.record.fingerprint
            current = self.records.get(fp)
            if (current.version if current is not None else None) != d.expected_version:
                raise AssertionError(f"{fp}: a single writer cannot lose a conditional write")
            if d.delete:
                self.records.pop(fp, None)
            else:
                self.records[fp] = d.record
        for fp, rec in list(self.records.items()):
            if rec.outbox is None:
                continue
            self.publish(rec.outbox, now)
            if rec.state == "resolved":
                del self.records[fp]
            else:
                self.records[fp] = replace(rec, outbox=None, version=rec.version + 1)

    def publish(self, f: Finding, now: float) -> None:
        if f.state == "resolved":
            alarm = self._open.pop(f.fingerprint, None)
            if alarm is not None:
                alarm.resolved = now
            return
        open_alarm = self._open.get(f.fingerprint)
        if open_alarm is not None and (f.escalated_from is not None or f.newly_joined):  # told again
            open_alarm.escalations += f.escalated_from is not None
            open_alarm.joins += bool(f.newly_joined)
            open_alarm.retold += 1
            open_alarm.nodes = tuple(dict.fromkeys([*open_alarm.nodes, *f.newly_joined]))
            open_alarm.joined_at.update({n: now for n in f.newly_joined})
            return
        alarm = Alarm(
            scenario=self.scenario,
            rule=f.rule,
            fingerprint=f.fingerprint,
            subject=self._subjects.get(f.fingerprint, {}),
            nodes=tuple(f.nodes),
            gpus=tuple(f.gpus),
            mig=f.mig,
            since=f.since,
            at=f.at,
            published=now,
            summary=f.summary,
            job=self._jobs.get(f.fingerprint),
        )
        self.alarms.append(alarm)
        self._open[f.fingerprint] = alarm


def replay(
    name: str,
    cluster: str,
    batches: Iterable[Delivery],
    start: float,
    end: float,
    *,
    every_s: float = EVERY_S,
    phase_s: float = 20.0,
) -> tuple[list[Alarm], int, int]:
    """Feed the batches in order of arrival and run analyze every `every_s` from `start` + `phase_s`
    until `end`. Returns (alarms, analyze runs, batches)."""
    state = Replay(name)
    now, count = start + phase_s, 0
    for d in batches:
        while d.at > now and now <= end:
            state.analyze(cluster, now)
            now += every_s
        state.ingest(d.doc)
        count += 1
    while now <= end:
        state.analyze(cluster, now)
        now += every_s
    return state.alarms, state.runs, count


# -- scoring --------------------------------------------------------------------------------------


def subject_matches(alarm: Alarm, truth: GroundTruth) -> bool:
    """The labels both name agree: node (an alarm about a group names its nodes), GPU, MIG instance."""
    node = truth.subject.get("node")
    named = set(alarm.nodes) | (
        {str(alarm.subject["node"])} if alarm.subject.get("node") is not None else set()
    )
    if node is not None and node not in named:
        return False
    gpu = truth.subject.get("gpu")
    if gpu is not None:
        said = alarm.subject.get("gpu")
        if said is not None and said != gpu:
            return False
        if said is None and alarm.gpus and f"{node}/{gpu}" not in alarm.gpus:
            return False
    mig = truth.subject.get("mig")
    said_mig = alarm.subject.get("mig") or alarm.mig
    return mig is None or said_mig is None or said_mig == mig


def told_at(alarm: Alarm, truth: GroundTruth) -> float:
    """When the alarm told of the fault's node: its publication, or the run that told the node
    joined it (an alert already firing that a second stalled rank joins)."""
    node = truth.subject.get("node")
    return alarm.joined_at.get(str(node), alarm.published) if node is not None else alarm.published


def in_time(alarm: Alarm, truth: GroundTruth, grace_s: float = GRACE_S) -> bool:
    return truth.start <= told_at(alarm, truth) <= truth.end + grace_s


def matches(alarm: Alarm, truth: GroundTruth) -> bool:
    """The alarm is this fault's: its rule, subject and time."""
    return (
        alarm.scenario == truth.scenario
        and alarm.rule == truth.rule
        and subject_matches(alarm, truth)
        and in_time(alarm, truth)
    )


def _named(alarm: Alarm) -> set[str]:
    node = alarm.subject.get("node")
    return set(alarm.nodes) | ({str(node)} if node is not None else set())


def same_incident(alarm: Alarm, root: Alarm, grace_s: float = GRACE_S) -> bool:
    """`alarm` rides in `root`'s incident: another rule's alarm with a node in common, firing at
    some point while `root` fires (give or take `grace_s`: a symptom may fire a run before its
    cause, or resolve a run after). Sharing only the job is not enough: the root may fire for
    hours, and any alarm anywhere in a big job would then pass as explained."""
    if alarm is root or alarm.rule == root.rule or alarm.scenario != root.scenario:
        return False
    if not _named(alarm) & _named(root):
        return False
    a_end = alarm.resolved if alarm.resolved is not None else math.inf
    r_end = root.resolved if root.resolved is not None else math.inf
    return alarm.published <= r_end + grace_s and root.published <= a_end + grace_s


def incidents(alarms: list[Alarm], truths: list[GroundTruth]) -> dict[int, list[Alarm]]:
    """Per fault (its index in `truths`): its co-symptoms, the alarms of other rules that ride in
    the incident of one of its own alarms, in order."""
    by_scenario: dict[str, list[Alarm]] = {}
    for a in alarms:
        by_scenario.setdefault(a.scenario, []).append(a)
    out: dict[int, list[Alarm]] = {}
    for i, t in enumerate(truths):
        near = by_scenario.get(t.scenario, [])
        own = [a for a in near if matches(a, t)]
        out[i] = [a for a in near if not matches(a, t) and any(same_incident(a, root) for root in own)]
    return out


@dataclass(frozen=True)
class RuleScore:
    rule: str
    for_s: float
    faults: int
    detected: int
    alarms: int
    matched: int  # alarms of a fault of this rule
    explained: int  # alarms of no fault of this rule that ride in a fault's incident (co-symptoms)
    delays: tuple[float, ...]
    bound_s: float  # for_s + BOUND_RUNS × EVERY_S
    allow_s: float  # the most latency a fault of this rule imposes by itself (added to the bound)
    late: int  # detections past their fault's bound
    extra: int  # alarms beyond the first for one fault: it flapped, or was announced twice
    healthy_alarms: int
    node_days: float
    # per fault: the share of its time with an alarm of this rule on it firing (0 when missed)
    firing_shares: tuple[float, ...] = ()
    # per fault: the messages it caused, its own alarms' and its co-symptoms' (fire + resolve each)
    messages: tuple[int, ...] = ()

    @property
    def firing_share(self) -> float | None:
        return statistics.mean(self.firing_shares) if self.firing_shares else None

    @property
    def messages_per_incident(self) -> float | None:
        return statistics.mean(self.messages) if self.messages else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.faults if self.faults else None

    @property
    def precision(self) -> float | None:
        return (self.matched + self.explained) / self.alarms if self.alarms else None

    @property
    def delay_median(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    @property
    def delay_max(self) -> float | None:
        return max(self.delays) if self.delays else None

    @property
    def false_per_node_day(self) -> float | None:
        return self.healthy_alarms / self.node_days if self.node_days else None

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["delays"] = [round(d, 1) for d in self.delays]
        out["firing_shares"] = [round(x, 3) for x in self.firing_shares]
        for key in (
            "recall",
            "precision",
            "delay_median",
            "delay_max",
            "false_per_node_day",
            "firing_share",
            "messages_per_incident",
        ):
            value = getattr(self, key)
            out[key] = round(value, 3) if value is not None else None
        return out


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    healthy: bool
    nodes: int
    duration_s: float
    start: float
    truths: tuple[GroundTruth, ...]
    alarms: tuple[Alarm, ...]
    runs: int
    batches: int
    seconds: float

    @property
    def node_days(self) -> float:
        return self.nodes * self.duration_s / 86400.0


def score(results: list[ScenarioResult], rules: Iterable[str]) -> dict[str, RuleScore]:
    """Recall, precision, delays and false alarms per rule over every scenario's alarms."""
    truths = [t for r in results for t in r.truths]
    alarms = [a for r in results for a in r.alarms]
    healthy = {r.name for r in results if r.healthy}
    node_days = sum(r.node_days for r in results if r.healthy)
    every_incident = incidents(alarms, truths)
    out = {}
    for rule in rules:
        for_s = float(params_for(rule)["for_s"]) if rule in CATALOGUE else 0.0
        own = [t for t in truths if t.rule == rule]
        mine = [a for a in alarms if a.rule == rule]
        bound = for_s + BOUND_RUNS * EVERY_S
        delays, late, extra = [], 0, 0
        shares = tuple(firing_share(t, [a for a in mine if matches(a, t)]) for t in own)
        co = incidents(alarms, own)
        messages = tuple(
            sum(_told(a) for a in alarms if matches(a, t)) + sum(_told(a) for a in co[i])
            for i, t in enumerate(own)
        )
        for t in own:
            hits = [told_at(a, t) for a in mine if matches(a, t)]
            if hits:
                delay = min(hits) - t.start
                delays.append(delay)
                late += delay > bound + t.allow_s
                extra += len(hits) - 1
        matched = sum(any(matches(a, t) for t in own) for a in mine)
        riding = {id(a) for symptoms in every_incident.values() for a in symptoms}
        explained = sum(not any(matches(a, t) for t in own) and id(a) in riding for a in mine)
        out[rule] = RuleScore(
            rule=rule,
            for_s=for_s,
            faults=len(own),
            detected=len(delays),
            alarms=len(mine),
            matched=matched,
            explained=explained,
            delays=tuple(delays),
            bound_s=bound,
            allow_s=max((t.allow_s for t in own), default=0.0),
            late=late,
            extra=extra,
            healthy_alarms=sum(a.scenario in healthy for a in mine),
            node_days=node_days,
            firing_shares=shares,
            messages=messages,
        )
    return out


def _told(a: Alarm) -> int:
    """The messages one alarm published: its firing, each transition told again (an escalation,
    a join, or both at once: one message), and its resolve."""
    return 1 + a.retold + (a.resolved is not None)


def firing_share(truth: GroundTruth, alarms: list[Alarm]) -> float:
    """The share of the fault's span [start, end) during which one of `alarms` was firing (from its
    publication to its resolve, or the fault's end when it did not resolve before)."""
    span = truth.end - truth.start
    if span <= 0:
        return 0.0
    spans = sorted(
        (
            max(told_at(a, truth), truth.start),
            min(a.resolved if a.resolved is not None else truth.end, truth.end),
        )
        for a in alarms
    )
    covered, reach = 0.0, truth.start
    for lo, hi in spans:  # a few alarms per fault
        lo = max(lo, reach)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered / span


def unmatched(results: list[ScenarioResult]) -> list[Alarm]:
    """Alarms that match no fault and ride in no fault's incident: the false alarms."""
    truths = [t for r in results for t in r.truths]
    alarms = [a for r in results for a in r.alarms]
    riding = {id(a) for symptoms in incidents(alarms, truths).values() for a in symptoms}
    return [a for a in alarms if id(a) not in riding and not any(matches(a, t) for t in truths)]


def missed(results: list[ScenarioResult]) -> list[GroundTruth]:
    """Faults of a registered rule that no alarm matched."""
    alarms = [a for r in results for a in r.alarms]
    return [
        t for r in results for t in r.truths if t.rule in CATALOGUE and not any(matches(a, t) for a in alarms)
    ]


# -- running scenarios ----------------------------------------------------------------------------


def run_scenario(scenario: Scenario) -> ScenarioResult:
    """Generate, replay and collect one scenario's alarms (a pure function of the scenario)."""
    t0 = time.perf_counter()
    fleet = planned(scenario.fleet, scenario.faults)
    truths = tuple(t for f in scenario.faults for t in f.truth(fleet, scenario.name))
    end = fleet.start + fleet.duration_s
    alarms, runs, count = replay(
        scenario.name, fleet.cluster, deliveries(fleet, scenario.faults), fleet.start, end
    )
    return ScenarioResult(
        name=scenario.name,
        healthy=scenario.healthy,
        nodes=len(fleet.nodes),
        duration_s=fleet.duration_s,
        start=fleet.start,
        truths=truths,
        alarms=tuple(alarms),
        runs=runs,
        batches=count,
        seconds=time.perf_counter() - t0,
    )


def run_all(scenarios: list[Scenario], workers: int | None = None) -> list[ScenarioResult]:
    """Every scenario, longest first over `workers` processes (default: one per CPU)."""
    workers = workers or os.cpu_count() or 1
    order = sorted(scenarios, key=lambda s: -s.cost)
    if workers <= 1 or len(order) <= 1:
        results = [run_scenario(s) for s in order]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_scenario, order))
    by_name = {r.name: r for r in results}
    return [by_name[s.name] for s in scenarios]


# -- the real trace -------------------------------------------------------------------------------


def trace_batches(
    path: Path, *, hold: bool = False, per_batch: int = 2
) -> tuple[list[Delivery], float, float]:
    """The real nvidia-smi trace as Batch v1 documents of one node with one GPU.

    As recorded: one sample every 15 s, `per_batch` samples a batch. With `hold`, each reading
    is repeated every second until the next one, the 1 Hz a shipper would send of a signal only
    read every 15 s. Memory is in MiB, utilisation in %; nothing else was recorded: the host's
    required series are null, and no process is listed (the trace does not say whether one ran).
    Returns (deliveries, first sample, last sample)."""
    rows = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        next(reader)
        for stamp, mem, util in reader:
            when = dt.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
            rows.append((when, float(mem.split()[0]) * (1 << 20), float(util.split()[0])))
    if hold:
        rows = [
            (t + s, mem, util)
            for (t, mem, util), (t_next, _, _) in zip(
                rows, [*rows[1:], (rows[-1][0] + 15.0, 0, 0)], strict=True
            )
            for s in range(math.ceil(t_next - t - 0.5))  # every second up to the next reading
        ]
        per_batch = 30
    docs = []
    for seq, i in enumerate(range(0, len(rows), per_batch)):
        part = rows[i : i + per_batch]
        n = len(part)
        docs.append(
            Delivery(
                at=part[-1][0] + 1.0,
                node="trace-gpu",
                doc={
                    "version": 1,
                    "batch_id": f"trace{int(hold)}-{seq:08d}",
                    "cluster": "trace",
                    "node": "trace-gpu",
                    "seq": seq,
                    "shipper": {
                        "version": "trace",
                        "simulated": False,
                        "sample_interval_s": 1.0 if hold else 15.0,
                    },
                    "timestamps": [round(t, 3) for t, _, _ in part],
                    "host": {
                        "cpu_count": 1,
                        "mem_total": 0,
                        "metrics": {"cpu_util": [None] * n, "mem_used": [None] * n},
                    },
                    "gpus": [
                        {
                            "index": 0,
                            "uuid": "GPU-trace",
                            "mem_total": 81_559 << 20,
                            "metrics": {
                                "util_gpu": [u for _, _, u in part],
                                "mem_used": [m for _, m, _ in part],
                            },
                        }
                    ],
                },
            )
        )
    return docs, rows[0][0], rows[-1][0]


def run_trace(path: Path = TRACE, *, hold: bool = False) -> tuple[list[Alarm], int]:
    """Every alarm the catalogue raises on the real trace (unlabelled: there is nothing to score)."""
    batches, first, last = trace_batches(path, hold=hold)
    name = "trace-1hz-hold" if hold else "trace-15s"
    alarms, runs, _ = replay(name, "trace", batches, first, last + 120.0)
    return alarms, runs


# -- report ---------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def report(
    results: list[ScenarioResult],
    scores: dict[str, RuleScore],
    traces: dict[str, list[Alarm]],
    out: TextIO,
    lines: Callable[[dict[str, Any]], None],
) -> None:
    """The table, the unmatched alarms and the missed faults for people; a JSON line for each
    rule, scenario, alarm (with the fault it matched), unmatched alarm, missed fault and trace
    alarm for machines."""
    starts = {r.name: r.start for r in results}
    print(
        f"{'rule':<16} {'faults':>6} {'recall':>6} {'alarms':>6} {'expl':>4} {'prec':>5} {'delay med':>9} "
        f"{'max':>5} "
        f"{'bound':>5} {'+allow':>6} {'late':>4} {'extra':>5} {'healthy':>7} {'per node-day':>12} "
        f"{'firing':>6} {'msgs':>5}",
        file=out,
    )
    for s in scores.values():
        print(
            f"{s.rule:<16} {s.faults:>6} {_fmt(s.recall):>6} {s.alarms:>6} {s.explained:>4} "
            f"{_fmt(s.precision):>5} "
            f"{_fmt(s.delay_median, '.0f'):>9} {_fmt(s.delay_max, '.0f'):>5} {s.bound_s:>5.0f} "
            f"{s.allow_s:>6.0f} {s.late:>4} {s.extra:>5} {s.healthy_alarms:>7} "
            f"{_fmt(s.false_per_node_day, '.3f'):>12} {_fmt(s.firing_share):>6} "
            f"{_fmt(s.messages_per_incident, '.1f'):>5}",
            file=out,
        )
        lines({"type": "rule", **s.row()})
    node_days = sum(r.node_days for r in results if r.healthy)
    print(f"healthy: {node_days:.2f} node-days over {sum(r.healthy for r in results)} scenarios", file=out)
    for r in results:
        lines(
            {
                "type": "scenario",
                "name": r.name,
                "healthy": r.healthy,
                "nodes": r.nodes,
                "duration_s": r.duration_s,
                "faults": len(r.truths),
                "alarms": len(r.alarms),
                "analyze_runs": r.runs,
                "batches": r.batches,
                "seconds": round(r.seconds, 1),
            }
        )
    truths = [t for r in results for t in r.truths]
    symptoms = incidents([a for r in results for a in r.alarms], truths)
    for r in results:
        for a in r.alarms:
            own = [t for t in truths if matches(a, t)]
            co = [t for i, t in enumerate(truths) if any(s is a for s in symptoms[i])]
            fault = (own or co)[:1]
            said = {"rule": fault[0].rule, **fault[0].subject, "what": fault[0].what} if fault else None
            lines(
                {
                    "type": "alarm",
                    **_alarm_row(a, r.start),
                    "fault": said,
                    "as": "fault" if own else "co-symptom" if co else None,
                }
            )
    extra = unmatched(results)
    if extra:
        print(f"\nunmatched alarms ({len(extra)}):", file=out)
    for a in extra:
        when = _clock(a.published - starts[a.scenario])
        print(f"  {a.scenario} {a.rule} at t+{when}: {a.summary}", file=out)
        lines({"type": "unmatched", **_alarm_row(a, starts[a.scenario])})
    lost = missed(results)
    if lost:
        print(f"\nmissed faults ({len(lost)}):", file=out)
    for t in lost:
        start = starts[t.scenario]
        print(
            f"  {t.scenario} {t.rule} {t.subject} "
            f"t+{_clock(t.start - start)}–{_clock(t.end - start)}: {t.what}",
            file=out,
        )
        lines({"type": "missed", **_truth_row(t, start)})
    for name, alarms in traces.items():
        print(f"\n{name}: {len(alarms)} alarms", file=out)
        for a in alarms:
            stamp = dt.datetime.fromtimestamp(a.published, dt.UTC).strftime("%H:%M:%S")
            since = dt.datetime.fromtimestamp(a.since, dt.UTC).strftime("%H:%M:%S")
            print(f"  {a.rule} published {stamp} (since {since}): {a.summary}", file=out)
            lines({"type": "trace_alarm", "trace": name, **_alarm_row(a, None)})


def _alarm_row(a: Alarm, start: float | None) -> dict[str, Any]:
    row = asdict(a)
    row["subject"] = {k: v for k, v in a.subject.items() if k != "cluster"}
    if start is not None:
        row["t_published"] = round(a.published - start, 1)
    return row


def _truth_row(t: GroundTruth, start: float) -> dict[str, Any]:
    row = asdict(t)
    row["t_start"], row["t_end"] = round(t.start - start, 1), round(t.end - start, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scenarios", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short subset (about a minute)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, help="write the JSON lines here instead of after the table")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    parser.add_argument("--no-trace", action="store_true", help="skip the real trace")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--batch-s", type=float, default=None, help="shippers batch this often (default: each fleet's own)"
    )
    args = parser.parse_args(argv)

    scenarios = suite(quick=args.quick)
    if args.batch_s is not None:  # item 6 of issue 14: delays are bounded at 10, 30 and 60 s batches
        if not 1.0 <= args.batch_s <= 60.0:
            parser.error("--batch-s must be between 1 and 60 seconds")
        scenarios = [replace(s, fleet=replace(s.fleet, batch_s=args.batch_s)) for s in scenarios]
    if args.list:
        for s in scenarios:
            kind = "healthy" if s.healthy else ", ".join(sorted({f.rule for f in s.faults}))
            print(f"{s.name:<24} {len(s.fleet.nodes):>3} nodes {s.fleet.duration_s / 3600:5.1f} h  {kind}")
        return 0
    if args.only:
        known = {s.name for s in scenarios}
        unknown = sorted(set(args.only) - known)
        if unknown:
            parser.error(f"unknown scenario {unknown[0]!r}; --list shows them")
        scenarios = [s for s in scenarios if s.name in args.only]
    t0 = time.perf_counter()
    results = run_all(scenarios, args.workers)
    rules = list(dict.fromkeys([*CATALOGUE, *(t.rule for r in results for t in r.truths)]))
    scores = score(results, rules)
    traces: dict[str, list[Alarm]] = {}
    if not args.no_trace and not args.only and TRACE.exists():
        for hold in (False, True):
            alarms, _ = run_trace(TRACE, hold=hold)
            traces["trace-1hz-hold" if hold else "trace-15s"] = alarms
    sink = args.out.open("w") if args.out else None
    collected: list[str] = []

    def emit(row: dict[str, Any]) -> None:
        text = json.dumps(row, separators=(",", ":"), default=str)
        if sink is not None:
            sink.write(text + "\n")
        else:
            collected.append(text)

    try:
        report(results, scores, traces, sys.stdout, emit)
        emit(
            {
                "type": "run",
                "quick": args.quick,
                "scenarios": len(results),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    finally:
        if sink is not None:
            sink.close()
    for text in collected:
        print(text)
    print(f"\n{len(results)} scenarios in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
