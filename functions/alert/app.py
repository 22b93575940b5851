"""Alert Lambda: findings from SQS → groups → Slack and Jandi; a minute tick flushes due groups.

An adapter only: gpulse.alerting.dispatch does the work. SQS records are findings (and the
dispatcher's own delayed wake-ups), processed one at a time by Powertools' batch processor; a
record that fails alone comes back. The EventBridge tick flushes groups whose repeat interval
came or whose silence ended.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.alerting.deliver import DeadLetters, SentLog
from gpulse.alerting.dispatch import Dispatcher, Flushed, GroupStore, WakeQueue, channel_name
from gpulse.alerting.pace import TablePacer
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.errors import ConfigurationError, InvalidInput
from gpulse.finding import Finding
from gpulse.notify.base import Webhook
from gpulse.notify.http import make_session
from gpulse.notify.jandi import JandiWebhook
from gpulse.notify.slack import SlackWebhook
from gpulse.secrets import SsmParameters

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)

STATE_TABLE = env.require(env.STATE_TABLE)
session = make_session(total_retries=3, max_retry_after_s=10)  # worst case stays inside the 60 s timeout
parameters = SsmParameters()
pacer = TablePacer(STATE_TABLE)
FALLBACK = (
    ChannelRef("slack", env.require(env.SLACK_WEBHOOK_PARAM)),
    ChannelRef("jandi", env.require(env.JANDI_WEBHOOK_PARAM)),
)
KINDS: dict[str, type[Webhook]] = {"slack": SlackWebhook, "jandi": JandiWebhook}


def fallback_channels() -> tuple[ChannelRef, ...]:
    """The template's webhooks that are set in SSM (read through the cache; URLs never logged)."""
    return tuple(ref for ref in FALLBACK if parameters.get(ref.secret))


def make_channel(route: Route, ref: ChannelRef) -> Webhook:
    url = parameters.get(ref.secret)
    if not url:
        raise ConfigurationError(f"route {route.name}: webhook parameter {ref.secret} is not set in SSM")
    return KINDS[ref.kind](channel_name(route, ref), url, session, pacer=pacer, pace_key=ref.secret)


config = LiveConfig(
    DynamoDBStore(
        ConfigStore(env.require(env.CONFIG_TABLE)), max_age=env.optional_int(env.CONFIG_CACHE_S, 30)
    ),
    fallback_channels=fallback_channels,
)
dispatcher = Dispatcher(
    config,
    GroupStore(STATE_TABLE),
    SentLog(STATE_TABLE),
    DeadLetters(env.require(env.FINDINGS_DLQ_URL)),
    make_channel,
    wake=WakeQueue(env.require(env.FINDINGS_QUEUE_URL)),
)


def _report(results: list[Flushed]) -> None:
    for r in results:
        if r.delivered:
            telemetry.emit(metrics, "MessagesDelivered", len(r.delivered))
        if r.dead_lettered:
            telemetry.emit(metrics, "MessagesDeadLettered", len(r.dead_lettered))
        logger.info(
            "group flushed" if r.notification else "group waits",
            group=r.key,
            notification=r.notification,
            channels=r.delivered,
            refused=r.dead_lettered,
            skipped=r.skipped,
        )


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    try:
        doc = json.loads(record.body)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and set(doc) == {"wake"}:
        _report([dispatcher.flush(str(doc["wake"]))])
        return
    try:
        finding = Finding.from_json(record.body)
    except InvalidInput as e:
        # a message no code can render: retrying cannot help, park it with the reason
        logger.error("finding unreadable, dead-lettered", reason=str(e), message_id=record.message_id)
        dispatcher.dead.put(record.body, f"unreadable finding: {e}", None)
        telemetry.emit(metrics, "MessagesDeadLettered")
        return
    logger.append_keys(
        cluster=finding.cluster, rule=finding.rule, state=finding.state, fingerprint=finding.fingerprint
    )
    _report(dispatcher.accept(finding))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse | dict[str, Any]:
    if event.get("detail-type") == "Scheduled Event":
        results = dispatcher.tick()
        _report(results)
        return {"groups": len(results), "sent": sum(1 for r in results if r.notification)}
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
