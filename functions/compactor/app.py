"""Compactor Lambda: fired every hour by EventBridge; merges closed hours of each node's
chunks into long-tier blocks and minute rollups, one S3 object per node-hour (gpulse.compact).

An adapter only: parse nothing (the schedule's event carries nothing the run needs), run the
compactor, report what it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.lazy import Lazy

if TYPE_CHECKING:
    from gpulse.compact import Compactor

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()

# Read at import, so that a missing setting fails the cold start with its name.
SERIES_TABLE = env.require(env.SERIES_TABLE)
SERIES_TTL_DAYS = env.optional_int(env.SERIES_TTL_DAYS, 14)
LONG_TIER_BUCKET = env.require(env.LONG_TIER_BUCKET)


def _wire() -> Compactor:
    import boto3

    from gpulse.compact import Compactor
    from gpulse.store import DEFAULT_HOT_TTL_S, DEFAULT_SHARDS, LongTier, SeriesStore

    store = SeriesStore(
        SERIES_TABLE,
        ttl_days=SERIES_TTL_DAYS,
        hot_ttl_s=env.optional_int(env.SERIES_HOT_TTL_S, DEFAULT_HOT_TTL_S),
        shards=env.optional_int(env.SERIES_SHARDS, DEFAULT_SHARDS),
        client=boto3.client("dynamodb"),
    )
    return Compactor(store, LongTier(LONG_TIER_BUCKET, client=boto3.client("s3")))


compactor = Lazy(_wire)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    report = compactor().run()
    telemetry.emit(metrics, "BlocksWritten", report.written)
    telemetry.emit(metrics, "BlocksFailed", len(report.failed))
    if report.corrupt or report.failed:
        logger.warning("chunks left out of blocks", corrupt=report.corrupt, failed=report.failed)
    logger.info(
        "compacted",
        hours=report.hours,
        nodes=report.nodes,
        chunks=report.chunks,
        written=report.written,
        unchanged=report.unchanged,
    )
    return {
        "hours": report.hours,
        "nodes": report.nodes,
        "chunks": report.chunks,
        "written": report.written,
        "unchanged": report.unchanged,
        "corrupt": len(report.corrupt),
        "failed": len(report.failed),
    }
