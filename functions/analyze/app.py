"""Analyze's dispatcher Lambda: fired every minute by EventBridge; sends one task per cluster
(and per shard of a big cluster) to the analyze queue, once now and, with n ticks a minute, again
for each k/n of the minute later (6: every 10 s); the analyze worker (functions/analyze_worker)
runs the detectors.

An adapter only: gpulse.analyze.fanout plans and sends; this wires it from the environment,
settles the config's own alerts once per tick, pings the heartbeat once every task was enqueued
(the workers are watched by their errors and the queue's DLQ and age alarms), and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.errors import ConfigurationError
from gpulse.lazy import Lazy, attributes, deferred

if TYPE_CHECKING:
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.analyze import Analyzer
    from gpulse.analyze.fanout import AnalyzeQueue
    from gpulse.analyze.heartbeat import Heartbeat
    from gpulse.health.crash import CrashReporter

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()

# Read at import, so that a missing setting fails the cold start with its name.
FINDINGS_QUEUE_URL = env.require(env.FINDINGS_QUEUE_URL)
ANALYZE_QUEUE_URL = env.require(env.ANALYZE_QUEUE_URL)
SHARD_NODES = env.optional_int(env.ANALYZE_SHARD_NODES, 500)
# evenly spaced whole seconds apart (template AnalyzeTicksPerMinute); 6 is every 10 s, two bins
TICKS_ALLOWED = (1, 2, 3, 4, 6)
TICKS_PER_MINUTE = env.optional_int(env.ANALYZE_TICKS_PER_MINUTE, 6)
MINUTE_S = env.optional_int(env.ANALYZE_MINUTE_S, 60)
if TICKS_PER_MINUTE not in TICKS_ALLOWED:
    allowed = ", ".join(map(str, TICKS_ALLOWED))
    raise ConfigurationError(
        f"{env.ANALYZE_TICKS_PER_MINUTE} must be one of {allowed}, not {TICKS_PER_MINUTE}"
    )
if SHARD_NODES < 1 or MINUTE_S < 1:
    raise ConfigurationError(f"{env.ANALYZE_SHARD_NODES} and {env.ANALYZE_MINUTE_S} must be at least 1")
SERIES_TABLE = env.require(env.SERIES_TABLE)
STATE_TABLE = env.require(env.STATE_TABLE)
CONFIG_TABLE = env.require(env.CONFIG_TABLE)
CONFIG_CACHE_S = env.optional_int(env.CONFIG_CACHE_S, 30)
WINDOW_S = env.optional_int(env.ANALYZE_WINDOW_S, 600)
KEEP_NODES = SHARD_NODES  # the windows kept between runs: one shard's worth (ClusterWindows)
HEARTBEAT_URL = env.optional(env.HEARTBEAT_URL)


class Wiring(NamedTuple):
    """What a run uses: built by the first invocation, not by the cold start (boto3 clients,
    the detectors and numpy), then kept for the container's life."""

    findings: FindingsQueue
    analyzer: Analyzer
    tasks: AnalyzeQueue
    heartbeat: Heartbeat | None
    crash: CrashReporter


def _wire() -> Wiring:
    import boto3

    from gpulse.alerting.settle import FindingsQueue
    from gpulse.analyze.fanout import AnalyzeQueue
    from gpulse.analyze.heartbeat import Heartbeat
    from gpulse.analyze.run import wired_analyzer
    from gpulse.health.crash import CrashReporter
    from gpulse.store import DEFAULT_SHARDS

    dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")  # one each, shared
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
        findings=findings,
        analyzer=analyzer,
        tasks=AnalyzeQueue(ANALYZE_QUEUE_URL, client=sqs),
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
    from gpulse.analyze.fanout import dispatch  # loaded by wired() already; not by the cold start

    w = wired()
    tasks, config = dispatch(
        w.analyzer, w.tasks, max_nodes=SHARD_NODES, ticks_per_minute=TICKS_PER_MINUTE, minute_s=MINUTE_S
    )
    beat = w.heartbeat.ping() if w.heartbeat is not None else None
    telemetry.emit(metrics, "AnalyzeTasksSent", len(tasks))
    telemetry.emit(metrics, "FindingsPublished", len(config.published))
    telemetry.emit(metrics, "AnalysisFailures", config.failures)
    if beat is False:
        telemetry.emit(metrics, "HeartbeatsFailed", 1)
    logger.info(
        "analyze tasks sent",
        tasks=len(tasks),
        clusters=len({t.cluster for t in tasks}),
        ticks=TICKS_PER_MINUTE,
        config_error=config.error,
        published=[f"{f.rule}:{f.state}" for f in config.published],
    )
    return {
        "tasks": len(tasks),
        "clusters": len({t.cluster for t in tasks}),
        "published": len(config.published),
        "failures": config.failures,
        "heartbeat": beat,
    }
