"""Alert Lambda: findings from SQS → Slack and Jandi, partial batch failures reported.

An adapter only: Powertools' batch processor runs one record at a time through
gpulse.alerting.deliver; a record whose delivery may succeed later fails alone and comes back.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.alerting.deliver import DeadLetters, SentLog, deliver
from gpulse.errors import ConfigurationError, InvalidInput
from gpulse.finding import Finding
from gpulse.notify.base import Channel
from gpulse.notify.http import make_session
from gpulse.notify.jandi import JandiWebhook
from gpulse.notify.slack import SlackWebhook
from gpulse.secrets import SsmParameters

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)

sent = SentLog(env.require(env.STATE_TABLE))
dead = DeadLetters(env.require(env.FINDINGS_DLQ_URL))
session = make_session(total_retries=3, max_retry_after_s=10)  # worst case stays inside the 60 s timeout
parameters = SsmParameters()
SLACK_PARAM = env.require(env.SLACK_WEBHOOK_PARAM)
JANDI_PARAM = env.require(env.JANDI_WEBHOOK_PARAM)


def default_route() -> list[Channel]:
    """The channels whose webhook parameter exists (read through a cache; URLs never logged)."""
    channels: list[Channel] = []
    slack = parameters.get(SLACK_PARAM)
    if slack:
        channels.append(SlackWebhook("slack-default", slack, session))
    jandi = parameters.get(JANDI_PARAM)
    if jandi:
        channels.append(JandiWebhook("jandi-default", jandi, session))
    if not channels:
        raise ConfigurationError(
            f"neither {SLACK_PARAM} nor {JANDI_PARAM} is set in SSM: no channel to alert"
        )
    return channels


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    try:
        finding = Finding.from_json(record.body)
    except InvalidInput as e:
        # a message no code can render: retrying cannot help, park it with the reason
        logger.error("finding unreadable, dead-lettered", reason=str(e), message_id=record.message_id)
        dead.put(record.body, f"unreadable finding: {e}", None)
        telemetry.emit(metrics, "MessagesDeadLettered")
        return
    logger.append_keys(
        cluster=finding.cluster, rule=finding.rule, state=finding.state, fingerprint=finding.fingerprint
    )
    outcome = deliver(finding, default_route(), sent, dead)
    if outcome.delivered:
        telemetry.emit(metrics, "MessagesDelivered", len(outcome.delivered))
    if outcome.dead_lettered:
        telemetry.emit(metrics, "MessagesDeadLettered", len(outcome.dead_lettered))
    logger.info("finding delivered", channels=outcome.delivered, refused=outcome.dead_lettered)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
