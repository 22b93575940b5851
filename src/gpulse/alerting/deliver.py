"""Deliver one finding to every channel of its route, at most once per channel.

A channel that already took this transition (recorded in the state table) is skipped, so an SQS
redelivery after a partial failure does not repeat the channels that succeeded. A 4xx from a
webhook is not retried: the finding goes to the dead-letter queue with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from gpulse.errors import StoreError
from gpulse.finding import Finding
from gpulse.notify.base import Channel
from gpulse.notify.errors import PermanentDeliveryError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)
SENT_TTL_S = 14 * 86400


class SentLog:
    """Which channel took which transition: `pk = "sent#{transition_id}"`, `sk = channel name`."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock = clock

    def _key(self, transition_id: str, channel: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"sent#{transition_id}"}, "sk": {"S": channel}}

    def sent(self, transition_id: str, channel: str) -> bool:
        try:
            resp = self.client.get_item(
                TableName=self.table, Key=self._key(transition_id, channel), ConsistentRead=True
            )
        except ClientError as e:
            raise StoreError(f"DynamoDB {e.response.get('Error', {}).get('Code')}") from e
        return "Item" in resp

    def record(self, transition_id: str, channel: str, outcome: str) -> None:
        now = self.clock()
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._key(transition_id, channel)
                | {
                    "outcome": {"S": outcome},
                    "at": {"N": repr(now)},
                    "expires_at": {"N": str(int(now) + SENT_TTL_S)},
                },
            )
        except ClientError as e:
            raise StoreError(f"DynamoDB {e.response.get('Error', {}).get('Code')}") from e


class DeadLetters:
    """The findings DLQ, written directly for failures that no retry can fix."""

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self.url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def put(self, body: str, reason: str, channel: str | None) -> None:
        attrs = {"reason": {"DataType": "String", "StringValue": reason[:256]}}
        if channel:
            attrs["channel"] = {"DataType": "String", "StringValue": channel}
        try:
            self.client.send_message(QueueUrl=self.url, MessageBody=body, MessageAttributes=attrs)  # type: ignore[arg-type]
        except ClientError as e:
            raise StoreError(f"SQS {e.response.get('Error', {}).get('Code')}") from e


@dataclass(frozen=True)
class Outcome:
    delivered: list[str]  # channels that took the finding now
    dead_lettered: list[str]  # channels that refused it (4xx): parked in the DLQ with the reason


def deliver(finding: Finding, channels: Sequence[Channel], sent: SentLog, dead: DeadLetters) -> Outcome:
    """Send `finding` to each channel not yet done.

    RetryableDeliveryError propagates (the SQS record fails and comes back later; after five
    receives SQS moves it to the DLQ). PermanentDeliveryError dead-letters at once."""
    delivered: list[str] = []
    refused: list[str] = []
    tid = finding.transition_id
    for ch in channels:
        if sent.sent(tid, ch.name):
            continue
        try:
            ch.send(finding)
        except PermanentDeliveryError as e:
            logger.error(
                "webhook refused the message, dead-lettered: channel=%s status=%s reason=%s",
                ch.name,
                e.status,
                e.reason,
            )
            dead.put(finding.to_json(), f"{ch.kind} answered {e.status}: {e.reason}", ch.name)
            sent.record(tid, ch.name, f"dead-lettered {e.status}")
            refused.append(ch.name)
            continue
        sent.record(tid, ch.name, "delivered")
        delivered.append(ch.name)
    return Outcome(delivered, refused)
