"""Alert Lambda: findings from SQS, gpulse's own alarms from SNS, and a minute tick → chat.

An adapter only: gpulse.alerting.inbox says what an event is and hands it to the dispatcher
(gpulse.alerting.dispatch); gpulse.notify.registry builds the channels. SQS records are
processed one at a time by Powertools' batch processor; a record that fails alone comes back.
An exception is reported to chat (gpulse.health.crash) and re-raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import SNSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.alerting.inbox import Kind, kind_of
from gpulse.lazy import Lazy, attributes, deferred

if TYPE_CHECKING:
    from gpulse.alerting.dispatch import Dispatcher
    from gpulse.alerting.inbox import Inbox, Received
    from gpulse.config.live import LiveConfig
    from gpulse.health.crash import CrashReporter
    from gpulse.notify.registry import ChannelRegistry

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)

# Read at import, so that a missing setting fails the cold start with its name.
STATE_TABLE = env.require(env.STATE_TABLE)
QUEUE_URL = env.require(env.FINDINGS_QUEUE_URL)
DLQ_URL = env.require(env.FINDINGS_DLQ_URL)
SLACK_WEBHOOK_PARAM = env.require(env.SLACK_WEBHOOK_PARAM)
JANDI_WEBHOOK_PARAM = env.require(env.JANDI_WEBHOOK_PARAM)
CONFIG_TABLE = env.require(env.CONFIG_TABLE)
CONFIG_CACHE_S = env.optional_int(env.CONFIG_CACHE_S, 30)
CHARTS_BUCKET = env.require(env.CHARTS_BUCKET)
CHART_LINK_S = env.optional_int(env.CHART_LINK_S, 604_800)
API_URL = env.require(env.API_URL)  # chart links point at the API's /v1/charts route
CHART_LINK_KEY_PARAM = env.require(env.CHART_LINK_KEY_PARAM)


class Wiring(NamedTuple):
    """What requests use: built by the first invocation, not by the cold start (boto3 clients,
    the HTTP session, the core), then kept for the container's life."""

    channels: ChannelRegistry
    config: LiveConfig
    dispatcher: Dispatcher
    inbox: Inbox
    crash: CrashReporter


def _wire() -> Wiring:
    import boto3
    from aws_lambda_powertools.utilities.parameters import SSMProvider
    from botocore.config import Config

    from gpulse.alerting.deliver import DeadLetters, SentLog
    from gpulse.alerting.dispatch import Dispatcher, GroupStore, WakeQueue
    from gpulse.alerting.inbox import Inbox
    from gpulse.alerting.pace import TablePacer
    from gpulse.alerting.routes import ChannelRef
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.config.flags import DynamoDBStore
    from gpulse.config.live import LiveConfig
    from gpulse.config.store import ConfigStore
    from gpulse.errors import ConfigurationError
    from gpulse.health.crash import CrashReporter
    from gpulse.notify.chart import ChartStore, Pictures
    from gpulse.notify.errors import RetryableDeliveryError
    from gpulse.notify.http import make_session
    from gpulse.notify.links import ChartLinks
    from gpulse.notify.registry import ChannelRegistry
    from gpulse.secrets import SsmParameters

    dynamodb, sqs, ssm = boto3.client("dynamodb"), boto3.client("sqs"), boto3.client("ssm")  # one each
    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))  # presigned links: SigV4 only
    parameters = SsmParameters(provider=SSMProvider(boto3_client=ssm))
    # signed API links; without the key in SSM, presigned URLs (logged once)
    links = ChartLinks(API_URL, lambda: parameters.get(CHART_LINK_KEY_PARAM), link_s=CHART_LINK_S)
    channels = ChannelRegistry(
        parameters,
        make_session(total_retries=3, max_retry_after_s=10),  # worst case stays inside the 60 s timeout
        pacer=TablePacer(STATE_TABLE, client=dynamodb),
        fallback=(ChannelRef("slack", SLACK_WEBHOOK_PARAM), ChannelRef("jandi", JANDI_WEBHOOK_PARAM)),
        pictures=Pictures(ChartStore(CHARTS_BUCKET, link_s=CHART_LINK_S, client=s3, links=links)),
    )
    config = LiveConfig(
        DynamoDBStore(ConfigStore(CONFIG_TABLE, client=dynamodb), max_age=CONFIG_CACHE_S),
        fallback_channels=channels.fallback_channels,
    )
    dispatcher = Dispatcher(
        config,
        GroupStore(STATE_TABLE, client=dynamodb),
        SentLog(STATE_TABLE, client=dynamodb),
        DeadLetters(DLQ_URL, client=sqs),
        channels.make_channel,
        wake=WakeQueue(QUEUE_URL, client=sqs),
    )
    crash = CrashReporter(
        "alert",
        STATE_TABLE,
        FindingsQueue(QUEUE_URL, client=sqs),
        code={Path(__file__).parent: "functions/alert"},
        # a whole failed batch was reported record by record; no route and a webhook still failing
        # are expected failures that SQS retries and then parks in the DLQ, not crashes
        ignore=(BatchProcessingError, ConfigurationError, RetryableDeliveryError),
        client=dynamodb,
    )
    return Wiring(
        channels=channels, config=config, dispatcher=dispatcher, inbox=Inbox(dispatcher), crash=crash
    )


wired = Lazy(_wire)
# its parts as module attributes (`app.dispatcher`), built on first use
__getattr__ = attributes(wired, Wiring._fields, __name__)


def _report(received: Received) -> dict[str, Any]:
    for r in received.flushed:
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
    if received.dead_lettered:
        telemetry.emit(metrics, "MessagesDeadLettered", received.dead_lettered)
    pictures = wired().channels.pictures
    stored, failed = pictures.take_counts() if pictures is not None else (0, 0)
    if stored:
        telemetry.emit(metrics, "ChartsStored", stored)
    if failed:
        telemetry.emit(metrics, "ChartsFailed", failed)
    for why in received.ignored:
        logger.info("notification announces nothing", reason=why)
    return {"groups": len(received.flushed), "sent": sum(1 for r in received.flushed if r.notification)}


@deferred(lambda: wired().crash)
@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    # [] not .get(): Powertools wraps the attribute on __getitem__ only (None when absent)
    channel = record.message_attributes["channel"]
    _report(wired().inbox.record(record.body, record.message_id, channel.string_value if channel else None))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@deferred(lambda: wired().crash)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse | dict[str, Any]:
    kind = kind_of(event)
    inbox = wired().inbox
    if kind is Kind.TICK:
        return _report(inbox.tick())
    if kind is Kind.SNS:
        return _report(inbox.alarms(r.sns.message for r in SNSEvent(event).records))
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
