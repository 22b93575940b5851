"""Analyze worker Lambda: fed one task at a time from the analyze queue (a cluster, or a shard of
one, at a tick time); runs the detector catalogue over it and publishes its transitions.

An adapter only: gpulse.analyze.fanout does the work (a cluster or rule failing is its own alert
there, not an error here). The analyzer, and so each cluster's window, lives at module level for
the container's life: the next tick of a cluster this container saw reads only what is new (a
task for a cluster it never saw rebuilds that window). Two workers given the same cluster at
once (SQS delivers at least once) are safe: every alert write is conditional on its version and
the loser leaves that alert alone (gpulse.alerting.records).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.lazy import Lazy, attributes, deferred

if TYPE_CHECKING:
    from gpulse.analyze import Analyzer, ClusterReport
    from gpulse.analyze.fanout import TickClaims
    from gpulse.health.crash import CrashReporter

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)

# Read at import, so that a missing setting fails the cold start with its name.
FINDINGS_QUEUE_URL = env.require(env.FINDINGS_QUEUE_URL)
SERIES_TABLE = env.require(env.SERIES_TABLE)
STATE_TABLE = env.require(env.STATE_TABLE)
CONFIG_TABLE = env.require(env.CONFIG_TABLE)
CONFIG_CACHE_S = env.optional_int(env.CONFIG_CACHE_S, 30)
WINDOW_S = env.optional_int(env.ANALYZE_WINDOW_S, 600)
# the windows a container keeps between tasks: one shard's worth of nodes (ClusterWindows)
KEEP_NODES = env.optional_int(env.ANALYZE_SHARD_NODES, 500)


class Wiring(NamedTuple):
    """Built by the first invocation (boto3 clients, the detectors, numpy), then kept."""

    analyzer: Analyzer
    claims: TickClaims
    crash: CrashReporter


def _wire() -> Wiring:
    import boto3

    from gpulse.alerting.settle import FindingsQueue
    from gpulse.analyze.fanout import TickClaims
    from gpulse.analyze.run import wired_analyzer
    from gpulse.health.crash import CrashReporter
    from gpulse.store import DEFAULT_SHARDS

    dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
    findings = FindingsQueue(FINDINGS_QUEUE_URL, client=sqs)
    analyzer = wired_analyzer(
        dynamodb,
        findings,
        series_table=SERIES_TABLE,
        state_table=STATE_TABLE,
        config_table=CONFIG_TABLE,
        shards=env.optional_int(env.SERIES_SHARDS, DEFAULT_SHARDS),
        config_cache_s=CONFIG_CACHE_S,
        window_s=WINDOW_S,
        keep_nodes=KEEP_NODES,
    )
    return Wiring(
        analyzer=analyzer,
        claims=TickClaims(STATE_TABLE, client=dynamodb),
        crash=CrashReporter(
            "analyze_worker",
            STATE_TABLE,
            findings,
            code={Path(__file__).parent: "functions/analyze_worker"},
            client=dynamodb,
        ),
    )


wired = Lazy(_wire)
__getattr__ = attributes(wired, Wiring._fields, __name__)


@tracer.capture_method
def record_handler(record: SQSRecord) -> ClusterReport | None:
    """Analyse the record's task; its report, or None when its tick was too old to judge."""
    from gpulse.analyze.fanout import AnalyzeTask, work

    task = AnalyzeTask.from_json(record.body)  # InvalidInput: the record fails, and the DLQ keeps it
    w = wired()
    report = work(w.analyzer, w.claims, task)
    if report == "stale":
        telemetry.emit(metrics, "AnalyzeTasksStale", 1)
        logger.warning("analyze task dropped: its tick is too old", cluster=task.cluster, tick=task.now)
        return None
    if report == "taken":
        telemetry.emit(metrics, "AnalyzeTasksTaken", 1)
        logger.info(
            "analyze task dropped: another worker took this tick", cluster=task.cluster, tick=task.now
        )
        return None
    telemetry.emit(metrics, "ClustersAnalyzed", 1)
    telemetry.emit(metrics, "ChunksRead", report.chunks)
    telemetry.emit(metrics, "ChunksCorrupt", report.corrupt_chunks)
    telemetry.emit(metrics, "FindingsPublished", len(report.published))
    telemetry.emit(metrics, "AnalysisFailures", report.failures)
    logger.info(
        "cluster analyzed" if report.error is None else "cluster not analyzed",
        cluster=report.cluster,
        shard=f"{task.shard + 1}/{task.shards}",
        nodes=len(task.nodes),
        tick=task.now,
        chunks=report.chunks,
        corrupt_chunks=report.corrupt_chunks,
        conditions=report.conditions,
        error=report.error,
        failed_rules=report.failed_rules,
        nodes_without_spool=report.no_spool,
        published=[f"{f.rule}:{f.state}" for f in report.published],
        cold=report.cold,  # the window was rebuilt from the store, not kept from the last task
        read_s=round(report.read_s, 4),
        decode_s=round(report.decode_s, 4),
        detect_s=round(report.detect_s, 4),
        state_s=round(report.state_s, 4),
    )
    return report


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@deferred(lambda: wired().crash)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
