"""Analyze Lambda: fired every minute by EventBridge; runs the detector catalogue per cluster.

An adapter only: gpulse.analyze does the work (one cluster or rule failing is its own alert
there, not an error here); this wires it from the environment, pings the heartbeat once the run
has completed, and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue
from gpulse.analyze import CONFIG_CLUSTER, Analyzer
from gpulse.analyze.heartbeat import Heartbeat
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.health.crash import CrashReporter
from gpulse.store import SeriesStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()

findings = FindingsQueue(env.require(env.FINDINGS_QUEUE_URL))
analyzer = Analyzer(
    SeriesStore(env.require(env.SERIES_TABLE)),
    AlertRecords(env.require(env.STATE_TABLE)),
    findings,
    LiveConfig(
        DynamoDBStore(
            ConfigStore(env.require(env.CONFIG_TABLE)), max_age=env.optional_int(env.CONFIG_CACHE_S, 30)
        )
    ),
    window_s=env.optional_int(env.ANALYZE_WINDOW_S, 600),
)
heartbeat_url = env.optional(env.HEARTBEAT_URL)
heartbeat = Heartbeat(heartbeat_url) if heartbeat_url else None
crash = CrashReporter(
    "analyze", env.require(env.STATE_TABLE), findings, code={Path(__file__).parent: "functions/analyze"}
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@crash
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    reports = analyzer.run()
    beat = heartbeat.ping() if heartbeat is not None else None
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
