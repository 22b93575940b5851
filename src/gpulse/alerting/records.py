"""Alert records in the state table: `pk = "alert#{cluster}"`, `sk = fingerprint`.

Every write is conditional on the version read, so two analyze runs racing on one cluster
cannot both announce a transition: the loser's write fails and it leaves that alert alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from gpulse.alerting.state import AlertRecord, Decision
from gpulse.aws import ConditionFailed, query_all, translated
from gpulse.finding import Finding

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

RECORD_TTL_S = 30 * 86400  # an alert nobody evaluates any more (cluster gone) cleans itself up


class AlertRecords:
    def __init__(self, table_name: str, *, client: DynamoDBClient | None = None) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")

    def load(self, cluster: str) -> dict[str, AlertRecord]:
        items = query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"alert#{cluster}"}},
            ConsistentRead=True,
        )
        return {rec.fingerprint: rec for rec in map(_from_item, items)}

    def apply(self, decision: Decision, now: float) -> bool:
        """Write one decision; False if another writer got there first (the version moved)."""
        rec = decision.record
        key = {"pk": {"S": f"alert#{rec.cluster}"}, "sk": {"S": rec.fingerprint}}
        if decision.expected_version is None:
            cond, values = "attribute_not_exists(pk)", {}
        else:
            cond, values = "version = :v", {":v": {"N": str(decision.expected_version)}}
        extra = _values(values)
        try:
            with translated():
                if decision.delete:
                    self.client.delete_item(TableName=self.table, Key=key, ConditionExpression=cond, **extra)
                else:
                    self.client.put_item(
                        TableName=self.table, Item=key | _to_item(rec, now), ConditionExpression=cond, **extra
                    )
        except ConditionFailed:
            return False
        return True


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {"ExpressionAttributeValues": values} if values else {}


def _to_item(rec: AlertRecord, now: float) -> dict[str, Any]:
    item: dict[str, Any] = {
        "rule": {"S": rec.rule},
        "state": {"S": rec.state},
        "since": {"N": repr(float(rec.since))},
        "finding": {"S": rec.finding.to_json()},
        "version": {"N": str(rec.version)},
        "updated_at": {"N": repr(float(now))},
        "expires_at": {"N": str(int(now) + RECORD_TTL_S)},
    }
    if rec.outbox is not None:
        item["outbox"] = {"S": rec.outbox.to_json()}
    if rec.told_at is not None:
        item["told_at"] = {"N": repr(float(rec.told_at))}
    return item


def _from_item(item: dict[str, Any]) -> AlertRecord:
    outbox = item.get("outbox")
    return AlertRecord(
        cluster=item["pk"]["S"].split("#", 1)[1],
        fingerprint=item["sk"]["S"],
        rule=item["rule"]["S"],
        state=item["state"]["S"],
        since=float(item["since"]["N"]),
        finding=Finding.from_json(item["finding"]["S"]),
        version=int(item["version"]["N"]),
        outbox=Finding.from_json(outbox["S"]) if outbox else None,
        told_at=float(item["told_at"]["N"]) if "told_at" in item else None,
    )


def finding_message(f: Finding) -> dict[str, Any]:
    """An SQS SendMessageBatch entry for one transition."""
    return {
        "Id": f.fingerprint[:40] + f.state[0],
        "MessageBody": f.to_json(),
        "MessageAttributes": {
            "rule": {"DataType": "String", "StringValue": f.rule},
            "state": {"DataType": "String", "StringValue": f.state},
            "cluster": {"DataType": "String", "StringValue": f.cluster},
        },
    }
