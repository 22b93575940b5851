"""Analyze Lambda: fired every minute by EventBridge; runs the detector catalogue per cluster.

An adapter only: gpulse.analyze does the work (one cluster or rule failing is its own alert
there, not an error here); this wires it from the environment, pings the heartbeat once the run
has completed, and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.lazy import Lazy, attributes, deferred

if TYPE_CHECKING:
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.analyze import Analyzer
    from gpulse.analyze.heartbeat import Heartbeat
    from gpulse.health.crash import CrashReporter

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()

# Read at import, so that a missing setting fails the cold start with its name.
FINDINGS_QUEUE_URL = env.require(env.FINDINGS_QUEUE_URL)
SERIES_TABLE = env.require(env.SERIES_TABLE)
STATE_TABLE = env.require(env.STATE_TABLE)
CONFIG_TABLE = env.require(env.CONFIG_TABLE)
CONFIG_CACHE_S = env.optional_int(env.CONFIG_CACHE_S, 30)
WINDOW_S = env.optional_int(env.ANALYZE_WINDOW_S, 600)
HEARTBEAT_URL = env.optional(env.HEARTBEAT_URL)


class Wiring(NamedTuple):
    """What a run uses: built by the first invocation, not by the cold start (boto3 clients,
    the detectors and numpy), then kept for the container's life."""

    findings: FindingsQueue
    analyzer: Analyzer
    heartbeat: Heartbeat | None
    crash: CrashReporter


def _wire() -> Wiring:
    import boto3

    from gpulse.alerting.records import AlertRecords
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.analyze import Analyzer
    from gpulse.analyze.heartbeat import Heartbeat
    from gpulse.config.flags import DynamoDBStore
    from gpulse.config.live import LiveConfig
    from gpulse.config.store import ConfigStore
    from gpulse.health.crash import CrashReporter
    from gpulse.store import SeriesStore

    dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")  # one each, shared
    findings = FindingsQueue(FINDINGS_QUEUE_URL, client=sqs)
    analyzer = Analyzer(
        SeriesStore(SERIES_TABLE, client=dynamodb),
        AlertRecords(STATE_TABLE, client=dynamodb),
        findings,
        LiveConfig(DynamoDBStore(ConfigStore(CONFIG_TABLE, client=dynamodb), max_age=CONFIG_CACHE_S)),
        window_s=WINDOW_S,
    )
    return Wiring(
        findings=findings,
        analyzer=analyzer,
        heartbeat=Heartbeat(HEARTBEAT_URL) if HEARTBEAT_URL else None,
        crash=CrashReporter(
            "analyze",
            STATE_TABLE,
            findings,
            code={Path(__file__).parent: "functions/analyze"},
            client=dynamodb,
        ),
    )


wired = Lazy(_wire)
# its parts as module attributes (`app.dispatcher`), built on first use
__getattr__ = attributes(wired, Wiring._fields, __name__)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@deferred(lambda: wired().crash)
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    from gpulse.analyze import CONFIG_CLUSTER  # loaded by wired() already; not by the cold start

    w = wired()
    reports = w.analyzer.run()
    beat = w.heartbeat.ping() if w.heartbeat is not None else None
    clusters = [r for r in reports if r.cluster != CONFIG_CLUSTER]
    telemetry.emit(metrics, "ClustersAnalyzed", len(clusters))
    telemetry.emit(metrics, "ChunksRead", sum(r.chunks for r in reports))
    telemetry.emit(metrics, "ChunksCorrupt", sum(r.corrupt_chunks for r in reports))
    telemetry.emit(metrics, "FindingsPublished", sum(len(r.published) for r in reports))
    telemetry.emit(metrics, "AnalysisFailures", sum(r.failures for r in reports))
    if beat is False:
        telemetry.emit(metrics, "HeartbeatsFailed", 1)
    for r in reports:
        logger.info(
            "cluster analyzed" if r.error is None else "cluster not analyzed",
            cluster=r.cluster,
            chunks=r.chunks,
            corrupt_chunks=r.corrupt_chunks,
            conditions=r.conditions,
            error=r.error,
            failed_rules=r.failed_rules,
            nodes_without_spool=r.no_spool,
            published=[f"{f.rule}:{f.state}" for f in r.published],
            read_s=round(r.read_s, 4),
            decode_s=round(r.decode_s, 4),
            detect_s=round(r.detect_s, 4),
            state_s=round(r.state_s, 4),
        )
    return {
        "clusters": len(clusters),
        "published": sum(len(r.published) for r in reports),
        "failures": sum(r.failures for r in reports),
        "heartbeat": beat,
    }
