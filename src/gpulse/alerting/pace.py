"""One message per second per webhook, across every alert invocation: the next free slot of each
webhook is kept in the state table (`pk = "pace#{key}"`), reserved by a conditional write, and
the caller sleeps until its slot. (Slack allows about one message per second per webhook; Lambda
may run several alert invocations at once, so a per-process pacer is not enough.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3

from gpulse.aws import ConditionFailed, translated
from gpulse.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PACE_TTL_S = 86400
ATTEMPTS = 20  # concurrent reservations retry; each loser learns the newer slot


class TablePacer:
    def __init__(
        self,
        table_name: str,
        interval_s: float = 1.0,
        *,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = table_name
        self.interval_s = interval_s
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock, self.sleep = clock, sleep

    def wait(self, key: str) -> float:
        """Reserve the next slot for `key` and sleep until it; returns the seconds waited."""
        pk = {"pk": {"S": f"pace#{key}"}, "sk": {"S": "slot"}}
        for _ in range(ATTEMPTS):
            now = self.clock()
            try:
                with translated():
                    start = self._reserve(pk, now)
            except ConditionFailed:
                continue  # another sender took that slot: read the next one
            delay = start - now
            if delay > 0:
                self.sleep(delay)
            return max(delay, 0.0)
        raise StoreError(f"could not reserve a send slot for {key} in {ATTEMPTS} attempts")

    def _reserve(self, pk: dict[str, dict[str, str]], now: float) -> float:
        """Take the next free slot (conditional on nobody taking it first); when it starts."""
        item = self.client.get_item(TableName=self.table, Key=pk, ConsistentRead=True).get("Item")
        taken = float(item["next_at"]["N"]) if item else None
        start = max(now, taken) if taken is not None else now
        cond = (
            ("next_at = :taken", {":taken": {"N": repr(taken)}})
            if taken is not None
            else ("attribute_not_exists(pk)", {})
        )
        self.client.put_item(
            TableName=self.table,
            Item=pk
            | {
                "next_at": {"N": repr(start + self.interval_s)},
                "expires_at": {"N": str(int(now) + PACE_TTL_S)},
            },
            ConditionExpression=cond[0],
            **({"ExpressionAttributeValues": cond[1]} if cond[1] else {}),  # type: ignore[arg-type]
        )
        return start
