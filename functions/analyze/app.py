"""Analyze Lambda: fired every minute by EventBridge; runs the detector catalogue per cluster.

An adapter only: gpulse.analyze does the work; this wires it from the environment and reports.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue
from gpulse.analyze import CONFIG_CLUSTER, Analyzer
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.store import SeriesStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()

analyzer = Analyzer(
    SeriesStore(env.require(env.SERIES_TABLE)),
    AlertRecords(env.require(env.STATE_TABLE)),
    FindingsQueue(env.require(env.FINDINGS_QUEUE_URL)),
    LiveConfig(
        DynamoDBStore(
            ConfigStore(env.require(env.CONFIG_TABLE)), max_age=env.optional_int(env.CONFIG_CACHE_S, 30)
        )
    ),
    window_s=env.optional_int(env.ANALYZE_WINDOW_S, 600),
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    reports = analyzer.run()
    clusters = [r for r in reports if r.cluster != CONFIG_CLUSTER]
    telemetry.emit(metrics, "ClustersAnalyzed", len(clusters))
    telemetry.emit(metrics, "ChunksRead", sum(r.chunks for r in reports))
    telemetry.emit(metrics, "FindingsPublished", sum(len(r.published) for r in reports))
    for r in reports:
        logger.info(
            "cluster analyzed",
            cluster=r.cluster,
            chunks=r.chunks,
            conditions=r.conditions,
            published=[f"{f.rule}:{f.state}" for f in r.published],
            read_s=round(r.read_s, 4),
            decode_s=round(r.decode_s, 4),
            detect_s=round(r.detect_s, 4),
            state_s=round(r.state_s, 4),
        )
    return {"clusters": len(clusters), "published": sum(len(r.published) for r in reports)}
