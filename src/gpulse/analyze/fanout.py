"""Analyze fanned out on AWS itself: a dispatcher on the schedule, one SQS message per cluster
(and per shard of a big cluster) to a worker function with its own concurrency.

A shard is a set of whole node groups (a cross-node group, and so a job, is never split) of at
most `max_nodes` nodes, or one group alone where that group is bigger. A sharded cluster's alerts
are split the same way: each shard settles only the alerts it owns (`owns`), so one shard's run
never resolves another's; the first shard also owns whatever no other shard claims (alerts about
the whole cluster, or about nodes that left it). A shard's own `analysis_failed` alerts (the shard
could not be analysed, or one rule raised on it) are keyed by the shard (`AnalyzeTask.tag`): the
shard that failed is the one whose next good run resolves them.

Each message carries its tick time (`now`): the worker judges at that instant, and drops a
message whose tick is older than `MAX_TICK_AGE_S` (a later tick reads the same window).

SQS delivers at least once, so two workers may get the same task: the first to claim its tick
(`TickClaims`, a conditional write) does it, the other drops it, as it drops a tick older than
one already claimed. Two different ticks of one cluster may still run at once (a tick that
overran the period between ticks, 10 s by default): every alert write is conditional on its
version, so the loser of a race leaves that alert alone (`gpulse.alerting.records`); an outbox
both saw may reach the findings queue twice, and the alert side tells each transition once per
channel (`transition_id`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import boto3

from gpulse.alerting.records import AlertRecords
from gpulse.alerting.state import AlertRecord, Decision
from gpulse.analyze.own_rules import ANALYSIS_FAILED
from gpulse.aws import ConditionFailed, translated
from gpulse.detect.base import Condition
from gpulse.detect.catalogue import CATALOGUE
from gpulse.errors import InvalidInput, StoreError
from gpulse.finding import fingerprint
from gpulse.store import NodeInfo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

    from gpulse.analyze.run import Analyzer, ClusterReport

logger = logging.getLogger(__name__)
DEFAULT_SHARD_NODES = 500  # nodes per shard: a warm tick of 500 nodes is a few seconds of one core
MAX_TICK_AGE_S = 120.0  # a tick older than this is worthless: a later one reads the same window
TASK_VERSION = 1
Skipped = Literal["stale", "taken"]
CLAIM_TTL_S = 86400  # a cluster gone for a day leaves no claim behind


@dataclass(frozen=True)
class AnalyzeTask:
    """One worker's job: analyse `nodes` of `cluster` (shard `shard` of `shards`) at `now`."""

    cluster: str
    now: float
    nodes: list[NodeInfo]
    shard: int = 0
    shards: int = 1
    # the first shard of a sharded cluster only: the node groups and nodes the other shards own
    other_groups: list[str] = field(default_factory=list)
    other_nodes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"version": TASK_VERSION, **asdict(self)}, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> AnalyzeTask:
        """Parse a task message; InvalidInput says what is wrong (a poison message, not a retry)."""
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.pop("version", None) != TASK_VERSION:
                raise InvalidInput(f"analyze task must be a JSON object with version {TASK_VERSION}")
            nodes = [NodeInfo(**n) for n in doc.pop("nodes")]
            task = cls(**doc, nodes=nodes)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
            raise InvalidInput(f"analyze task does not parse: {e}") from None
        if not isinstance(task.now, int | float) or not task.cluster or not 0 <= task.shard < task.shards:
            raise InvalidInput("analyze task needs a cluster, a numeric now and 0 <= shard < shards")
        return task

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def owns(self, node_group: str | None, nodes: list[str]) -> bool:
        """Whether this shard settles an alert about `node_group` and `nodes` (always, unsharded)."""
        if not self.sharded:
            return True
        if node_group is not None and node_group in {n.node_group for n in self.nodes}:
            return True
        names = {n.node for n in self.nodes}
        if any(n in names for n in nodes):
            return True
        if self.shard != 0:
            return False
        others = set(self.other_nodes)
        claimed = (node_group is not None and node_group in self.other_groups) or any(
            n in others for n in nodes
        )
        return not claimed

    def _failures(self, shard: int) -> frozenset[str]:
        """The fingerprints of shard `shard`'s own `analysis_failed` alerts: the shard's, and
        each catalogue rule's on it (the subjects `tag` makes)."""
        key = f"{shard + 1}/{self.shards}"
        return frozenset(
            fingerprint(ANALYSIS_FAILED.name, cluster=self.cluster, detector=d, shard=key)
            for d in [None, *CATALOGUE]
        )

    def settles(self, record: AlertRecord) -> bool:
        """Whether this shard settles a stored alert: one about what it `owns`, or its own analysis
        failure. The first shard also takes the failures no current shard claims (from before
        the cluster was cut this way, or of a rule gone from the catalogue): none is left firing."""
        if not self.sharded:
            return True
        if record.rule != ANALYSIS_FAILED.name:
            return self.owns(record.finding.node_group, record.finding.nodes)
        if record.fingerprint in self._failures(self.shard):
            return True
        return self.shard == 0 and not any(
            record.fingerprint in self._failures(j) for j in range(1, self.shards)
        )

    def tag(self, condition: Condition) -> Condition:
        """An `analysis_failed` condition found on this shard, keyed by the shard and saying
        which it is; any other condition, or any on an unsharded cluster, as it is."""
        if not self.sharded or condition.rule != ANALYSIS_FAILED.name:
            return condition
        names = sorted(n.node for n in self.nodes)
        which = f"{names[0]} … {names[-1]}" if len(names) > 1 else "".join(names)
        count = f"{len(names)} node{'s' if len(names) != 1 else ''}"
        return replace(
            condition,
            subject={**condition.subject, "shard": f"{self.shard + 1}/{self.shards}"},
            summary=f"{condition.summary} — shard {self.shard + 1} of {self.shards} ({count}: {which})",
        )


def shard_nodes(nodes: list[NodeInfo], max_nodes: int) -> list[list[NodeInfo]]:
    """`nodes` cut into shards of whole node groups, at most `max_nodes` nodes each (a bigger
    group is a shard alone); nodes without a group form one group. Deterministic: groups by name."""
    by_group: dict[str, list[NodeInfo]] = defaultdict(list)
    for n in nodes:
        by_group[n.node_group or ""].append(n)
    shards: list[list[NodeInfo]] = []
    current: list[NodeInfo] = []
    for name in sorted(by_group):
        group = sorted(by_group[name], key=lambda n: n.node)
        if current and len(current) + len(group) > max_nodes:
            shards.append(current)
            current = []
        current = current + group
    if current:
        shards.append(current)
    return shards


def plan(clusters: dict[str, list[NodeInfo]], now: float, max_nodes: int) -> list[AnalyzeTask]:
    """One task per cluster, or per shard of a cluster bigger than `max_nodes`."""
    tasks = []
    for cluster, nodes in clusters.items():
        shards = shard_nodes(nodes, max_nodes) or [[]]
        for i, part in enumerate(shards):
            others = (
                [n for j, s in enumerate(shards) if j != i for n in s] if i == 0 and len(shards) > 1 else []
            )
            tasks.append(
                AnalyzeTask(
                    cluster,
                    now,
                    part,
                    shard=i,
                    shards=len(shards),
                    other_groups=sorted({n.node_group for n in others if n.node_group is not None}),
                    other_nodes=sorted(n.node for n in others),
                )
            )
    return tasks


class AnalyzeQueue:
    """Sends analyze tasks to SQS, ten to a call, each delayed `delay_s` (0–900)."""

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self.url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def send(self, tasks: list[AnalyzeTask], delay_s: int = 0) -> None:
        for i in range(0, len(tasks), 10):
            entries = [
                {"Id": str(j), "MessageBody": t.to_json(), "DelaySeconds": delay_s}
                for j, t in enumerate(tasks[i : i + 10])
            ]
            with translated("SQS"):
                resp = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)  # type: ignore[arg-type]
            if resp.get("Failed"):
                raise StoreError(f"SQS refused {len(resp['Failed'])} analyze tasks")


def dispatch(
    analyzer: Analyzer, queue: AnalyzeQueue, *, max_nodes: int, ticks_per_minute: int, minute_s: float = 60.0
) -> tuple[list[AnalyzeTask], ClusterReport]:
    """One scheduled tick: enqueue every cluster's tasks (and, with n ticks a minute, the same
    cluster list again for each k·`minute_s`/n later, judged at that time), then settle the
    config's own alerts here, once per tick. Returns the tasks sent and the config report."""
    now = analyzer.clock()
    clusters = analyzer.clusters(now)
    sent: list[AnalyzeTask] = []
    for k in range(ticks_per_minute):
        offset = k * minute_s / ticks_per_minute
        tasks = plan(clusters, now + offset, max_nodes)
        # SQS delays whole seconds: rounded up, a task is never judged before its tick (a
        # scaled local minute need not divide evenly)
        queue.send(tasks, delay_s=math.ceil(offset))
        sent += tasks
    return sent, analyzer.report_config(now)


class OwnedRecords(AlertRecords):
    """A shard's view of the cluster's alert records `records`: only those it settles
    (`AnalyzeTask.settles`); writes go through to `records` unchanged, conditional on their
    version as ever."""

    def __init__(self, records: AlertRecords, task: AnalyzeTask) -> None:  # wraps; builds no client
        self._records, self._task = records, task

    def load(self, cluster: str) -> dict[str, AlertRecord]:
        return {fp: r for fp, r in self._records.load(cluster).items() if self._task.settles(r)}

    def apply(self, decision: Decision, now: float) -> bool:
        return self._records.apply(decision, now)


class TickClaims:
    """The latest tick claimed per cluster shard, in the state table (`pk = "tick#{cluster}"`,
    `sk = "{shard}/{shards}"`): a worker analyses a task only if it claims a tick later than any
    claimed before."""

    def __init__(self, table_name: str, *, client: DynamoDBClient | None = None) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")

    def claim(self, task: AnalyzeTask) -> bool:
        """True if this worker now holds `task`'s tick; False if it, or a later one, was taken."""
        try:
            with translated():
                self.client.put_item(
                    TableName=self.table,
                    Item={
                        "pk": {"S": f"tick#{task.cluster}"},
                        "sk": {"S": f"{task.shard}/{task.shards}"},
                        "tick": {"N": repr(float(task.now))},
                        "expires_at": {"N": str(int(task.now) + CLAIM_TTL_S)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR tick < :t",
                    ExpressionAttributeValues={":t": {"N": repr(float(task.now))}},
                )
        except ConditionFailed:
            return False
        return True


def stale(task: AnalyzeTask, now: float) -> bool:
    """Whether the task's tick is too old to be worth judging (`MAX_TICK_AGE_S`)."""
    return now - task.now > MAX_TICK_AGE_S


def work(analyzer: Analyzer, claims: TickClaims, task: AnalyzeTask) -> ClusterReport | Skipped:
    """Analyse one task at its tick time and settle what it owns, or say why not: "stale" (its
    tick is too old), "taken" (another worker claimed it, or a later tick)."""
    if stale(task, analyzer.clock()):
        return "stale"
    if not claims.claim(task):
        return "taken"
    params = analyzer.config.params()
    return analyzer.run_cluster(
        task.cluster, task.nodes, params, task.now, part=task if task.sharded else None
    )
