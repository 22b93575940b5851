"""The config table: `pk` = kind ("rule", "route", "silence", "team"), `sk` = name, the item's
document as JSON in `doc`, and `version`, `updated_by`, `updated_at` on every item.

Every change is one transaction: the item, written only if its version is still the one the
writer read, and an audit entry (`pk = "audit"`) saying who changed what, when, from what.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3

from gpulse.aws import ConditionFailed, query_all, translated
from gpulse.config.documents import KINDS, parse
from gpulse.errors import InvalidInput

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

AUDIT_PK = "audit"
AUDIT_TTL_S = 400 * 86400  # a year and a bit of who-changed-what
SILENCE_TTL_S = 30 * 86400  # an expired silence stays listable this long


class ConfigConflict(InvalidInput):
    """The item changed since it was read (another operator, or the CLI run twice): read again."""

    status = 409


@dataclass(frozen=True)
class RawItem:
    kind: str
    name: str
    doc: Any  # parsed JSON (or the raw text when it is not JSON: a reader reports that)
    version: int
    updated_by: str
    updated_at: float


class ConfigStore:
    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock = clock

    # -- reading -----------------------------------------------------------------------------------

    def items(self, kind: str) -> list[RawItem]:
        return [_raw(i) for i in self._query(kind)]

    def all(self) -> dict[str, list[RawItem]]:
        """Every item of every kind: one query per kind (the audit trail is not read)."""
        return {kind: self.items(kind) for kind in KINDS}

    def get(self, kind: str, name: str) -> RawItem | None:
        with translated():
            resp = self.client.get_item(TableName=self.table, Key=_key(kind, name), ConsistentRead=True)
        return _raw(resp["Item"]) if "Item" in resp else None

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest changes, newest first."""
        with translated():
            resp = self.client.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": AUDIT_PK}},
                ScanIndexForward=False,
                Limit=limit,
            )
        return [
            {
                "at": i["sk"]["S"].split("#", 1)[0],
                "who": i["who"]["S"],
                "action": i["action"]["S"],
                "kind": i["kind"]["S"],
                "name": i["name"]["S"],
                "version": int(i["version"]["N"]),
                "doc": json.loads(i["doc"]["S"]) if "doc" in i else None,
                "previous": json.loads(i["previous"]["S"]) if "previous" in i else None,
            }
            for i in resp.get("Items", [])
        ]

    def _query(self, kind: str) -> list[dict[str, Any]]:
        return list(
            query_all(
                self.client,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": kind}},
                ConsistentRead=True,
            )
        )

    def put(
        self, kind: str, name: str, doc: dict[str, Any], *, who: str, expected_version: int | None
    ) -> int:
        """Validate and write `doc`; `expected_version` None means the item must not exist yet.
        Returns the new version. Raises InvalidInput (bad doc) or ConfigConflict (version moved)."""
        parse(kind, name, doc)
        previous = self.get(kind, name)
        version = (expected_version or 0) + 1
        now = self.clock()
        item = _key(kind, name) | {
            "doc": {"S": json.dumps(doc, sort_keys=True)},
            "version": {"N": str(version)},
            "updated_by": {"S": who},
            "updated_at": {"N": repr(now)},
        }
        if kind == "silence":
            item["expires_at"] = {"N": str(int(doc["ends_at"]) + SILENCE_TTL_S)}
        self._transact(
            kind,
            name,
            expected_version,
            {"Put": {"TableName": self.table, "Item": item}},
            who,
            now,
            "put",
            version,
            doc,
            previous,
        )
        return version

    def delete(self, kind: str, name: str, *, who: str, expected_version: int) -> None:
        previous = self.get(kind, name)
        now = self.clock()
        self._transact(
            kind,
            name,
            expected_version,
            {"Delete": {"TableName": self.table, "Key": _key(kind, name)}},
            who,
            now,
            "delete",
            expected_version + 1,
            None,
            previous,
        )

    def _transact(
        self,
        kind: str,
        name: str,
        expected_version: int | None,
        op: dict[str, Any],
        who: str,
        now: float,
        action: str,
        version: int,
        doc: dict[str, Any] | None,
        previous: RawItem | None,
    ) -> None:
        verb = next(iter(op))
        if expected_version is None:
            op[verb]["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            op[verb]["ConditionExpression"] = "version = :v"
            op[verb]["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        audit: dict[str, Any] = {
            "pk": {"S": AUDIT_PK},
            "sk": {"S": f"{stamp}#{kind}#{name}#{uuid.uuid4().hex[:8]}"},
            "who": {"S": who},
            "action": {"S": action},
            "kind": {"S": kind},
            "name": {"S": name},
            "version": {"N": str(version)},
            "expires_at": {"N": str(int(now) + AUDIT_TTL_S)},
        }
        if doc is not None:
            audit["doc"] = {"S": json.dumps(doc, sort_keys=True)}
        if previous is not None:
            audit["previous"] = {"S": json.dumps(previous.doc, sort_keys=True)}
        try:
            with translated():
                self.client.transact_write_items(
                    TransactItems=[op, {"Put": {"TableName": self.table, "Item": audit}}]  # type: ignore[list-item]
                )
        except ConditionFailed:
            now_at = self.get(kind, name)
            raise ConfigConflict(
                f"{kind} {name} changed since it was read (now version "
                f"{now_at.version if now_at else 'deleted'}, by {now_at.updated_by if now_at else '?'}): "
                "read it again and retry"
            ) from None


def _key(kind: str, name: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": kind}, "sk": {"S": name}}


def _raw(item: dict[str, Any]) -> RawItem:
    text = item.get("doc", {}).get("S", "")
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError:
        doc = text
    return RawItem(
        kind=item["pk"]["S"],
        name=item["sk"]["S"],
        doc=doc,
        version=int(item.get("version", {}).get("N", "0")),
        updated_by=item.get("updated_by", {}).get("S", "?"),
        updated_at=float(item.get("updated_at", {}).get("N", "0")),
    )
