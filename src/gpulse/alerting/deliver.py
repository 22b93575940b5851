"""What delivery records: the sent log (which channel took which notification, so a retry
repeats only the channels that failed) and the dead letters (what no retry can fix: a webhook's
4xx, an unreadable message), parked in the findings DLQ with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3

from gpulse.aws import translated

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)
SENT_TTL_S = 14 * 86400


class SentLog:
    """Which channel took which notification: `pk = "sent#{notification id}"`, `sk = channel name`."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock = clock

    def _key(self, transition_id: str, channel: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"sent#{transition_id}"}, "sk": {"S": channel}}

    def sent(self, transition_id: str, channel: str) -> bool:
        with translated():
            resp = self.client.get_item(
                TableName=self.table, Key=self._key(transition_id, channel), ConsistentRead=True
            )
        return "Item" in resp

    def record(self, transition_id: str, channel: str, outcome: str) -> None:
        now = self.clock()
        with translated():
            self.client.put_item(
                TableName=self.table,
                Item=self._key(transition_id, channel)
                | {
                    "outcome": {"S": outcome},
                    "at": {"N": repr(now)},
                    "expires_at": {"N": str(int(now) + SENT_TTL_S)},
                },
            )


class DeadLetters:
    """The findings DLQ, written directly for failures that no retry can fix."""

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self.url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def put(self, body: str, reason: str, channel: str | None) -> None:
        attrs = {"reason": {"DataType": "String", "StringValue": reason[:256]}}
        if channel:
            attrs["channel"] = {"DataType": "String", "StringValue": channel}
        with translated("SQS"):
            self.client.send_message(QueueUrl=self.url, MessageBody=body, MessageAttributes=attrs)  # type: ignore[arg-type]
